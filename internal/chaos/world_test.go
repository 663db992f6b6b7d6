//go:build linux

package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/netsim"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/testbin"
)

const (
	model = "aps-failure"
	truck = "truck-1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// linkedgeBin is the linkedge command. Every part runs as a child process
// of it, so that the test can SIGKILL any of them.
func linkedgeBin(t *testing.T) string { return testbin.Linkedge(t) }

// bundleInfo is what the test knows of a committed demo bundle.
type bundleInfo struct {
	version int64
	path    string
	sha     string // sha256 of the file: what a release signs
	size    int64
	onnx    string // sha256 of its model.onnx: what the agent's HTTP API reports
	golden  bundle.Golden
}

func loadBundle(t *testing.T, version int64) bundleInfo {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "inference", "apsmodels", fmt.Sprintf("aps-failure-v%d.tar.gz", version)))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if b.Meta.Version != version {
		t.Fatalf("%s holds version %d", p, b.Meta.Version)
	}
	if len(b.Meta.Golden) == 0 {
		t.Fatalf("%s has no golden sample", p)
	}
	return bundleInfo{version: version, path: p, sha: hexSHA(data), size: int64(len(data)), onnx: hexSHA(b.ONNX), golden: b.Meta.Golden[0]}
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func fileSHA(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// freePort returns a loopback port that was free a moment ago. Parts that
// restart must come back on the same port (the broker's clients and the
// agent's local clients know only that address), so the test picks the
// ports instead of letting each start take port 0. A port is never handed
// out twice in one test process: the kernel may give a just-closed port
// again, and two parts of one seed on one port is a set-up failure (seed 64
// of the first 100-seed run met it).
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port
		}
	}
	t.Fatal("no loopback port that was not handed out already")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// world is one seed's fleet: the broker, the publisher with its registry,
// one truck agent, and the faulty links between them, all on 127.0.0.1.
type world struct {
	t     *testing.T
	bin   string
	dir   string
	logs  string
	start time.Time

	brokerAddr, artAddr, agentHTTP, agentLocal string

	mu        sync.Mutex // guards the Procs, which restarts replace
	broker    *Proc
	publisher *Proc
	agent     *Proc

	mqtt     *netsim.Proxy
	art      *HTTPFaultProxy
	obs      *observer
	pub      []byte // publisher public key file content
	dataDir  string
	agentCfg string

	journal []string
}

func (w *world) logf(format string, args ...any) {
	line := fmt.Sprintf("%7.2fs ", time.Since(w.start).Seconds()) + fmt.Sprintf(format, args...)
	w.mu.Lock()
	w.journal = append(w.journal, line)
	w.mu.Unlock()
	w.t.Log(line)
}

// cli runs one short linkedge command and fails the test if it fails.
func (w *world) cli(args ...string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("linkedge %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newWorld(t *testing.T, bin string, seed uint64, artRate int) *world {
	dir := t.TempDir()
	w := &world{t: t, bin: bin, dir: dir, logs: filepath.Join(dir, "logs"), start: time.Now()}
	for _, d := range []string{w.logs, filepath.Join(dir, "keys")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Cleanups run last-in first-out: registered first, this runs last,
	// after every part is down.
	t.Cleanup(func() {
		if t.Failed() {
			w.keepLogs(seed)
		}
	})

	w.cli("keys", "generate", "--out", filepath.Join(dir, "keys"))
	pubPEM, err := os.ReadFile(filepath.Join(dir, "keys", "publisher.pub"))
	if err != nil {
		t.Fatal(err)
	}
	w.pub = pubPEM
	reg := filepath.Join(dir, "registry")
	w.cli("registry", "add", "--registry", reg, loadBundle(t, 1).path, loadBundle(t, 2).path)

	w.brokerAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w.startBroker()
	t.Cleanup(func() { w.proc("broker").Kill() })

	artListen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if w.art, err = NewHTTPFaultProxy(artListen, seed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.art.Close() })
	w.art.SetRate(artRate)
	p, err := StartProc("publisher", bin, filepath.Join(w.logs, "publisher.log"), nil,
		"publisher", "--broker", "tcp://"+w.brokerAddr, "--registry", reg,
		"--key", filepath.Join(dir, "keys", "publisher.key"), "--poll", "200ms",
		"--artifacts-listen", artListen, "--artifacts-url", "http://"+w.art.Addr())
	if err != nil {
		t.Fatal(err)
	}
	w.publisher = p
	t.Cleanup(func() { p.Kill() })
	w.artAddr = artListen
	if err := waitHTTP("http://"+artListen+"/healthz", 30*time.Second); err != nil {
		t.Fatalf("publisher's artifact server: %v", err)
	}

	if w.mqtt, err = netsim.New(w.brokerAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.mqtt.Close() })

	pub, err := release.ParsePublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if w.obs, err = newObserver(w.brokerAddr, fmt.Sprintf("chaos-observer-%d", seed), pub); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.obs.close)

	w.dataDir = filepath.Join(dir, truck)
	w.agentHTTP = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w.agentLocal = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	w.agentCfg = filepath.Join(dir, "truck.yaml")
	cfg := fmt.Sprintf(`truck: %s
model: %s
data_dir: %s
trusted_keys: [%s]
fleet:
  broker: tcp://%s
  keep_alive: 5s
  max_reconnect_interval: 1s
http: %s
local_broker:
  listen: %s
probation: 1s
status_interval: 2s
`, truck, model, w.dataDir, filepath.Join(dir, "keys", "publisher.pub"), w.mqtt.Addr(), w.agentHTTP, w.agentLocal)
	if err := os.WriteFile(w.agentCfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	w.startAgent()
	t.Cleanup(func() { w.proc("agent").Kill() })
	if err := waitHTTP("http://"+w.agentHTTP+"/ping", 60*time.Second); err != nil {
		t.Fatalf("agent: %v", err)
	}
	return w
}

func (w *world) proc(name string) *Proc {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch name {
	case "broker":
		return w.broker
	case "agent":
		return w.agent
	}
	return w.publisher
}

func (w *world) startBroker() {
	w.t.Helper()
	p, err := StartProc("broker", w.bin, filepath.Join(w.logs, "broker.log"), nil,
		"broker", "--listen", w.brokerAddr, "--data", filepath.Join(w.dir, "broker"), "--http", "")
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.broker = p
	w.mu.Unlock()
	if err := waitTCP(w.brokerAddr, 30*time.Second); err != nil {
		w.t.Fatalf("broker: %v", err)
	}
}

func (w *world) startAgent() {
	w.t.Helper()
	p, err := StartProc("agent", w.bin, filepath.Join(w.logs, "agent.log"), nil, "agent", "--config", w.agentCfg)
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.agent = p
	w.mu.Unlock()
}

// approve approves a version in the registry; the running publisher
// announces it within one poll.
func (w *world) approve(version int64) {
	w.cli("registry", "approve", "--registry", filepath.Join(w.dir, "registry"),
		"--model", model, "--version", strconv.FormatInt(version, 10), "--by", "chaos")
}

// keepLogs copies the seed's logs out of the test's temporary folder, which
// is deleted after the test, so a failure can be read afterwards.
func (w *world) keepLogs(seed uint64) {
	dst := filepath.Join(os.TempDir(), "linkedge-chaos", fmt.Sprintf("seed-%d", seed))
	_ = os.RemoveAll(dst)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return
	}
	ents, _ := os.ReadDir(w.logs)
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(w.logs, e.Name())); err == nil {
			_ = os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
		}
	}
	w.mu.Lock()
	j := strings.Join(w.journal, "\n") + "\n"
	w.mu.Unlock()
	_ = os.WriteFile(filepath.Join(dst, "journal.txt"), []byte(j), 0o644)
	var ds []string
	for _, d := range w.art.Decisions() {
		ds = append(ds, d.String())
	}
	_ = os.WriteFile(filepath.Join(dst, "artifact-proxy.txt"), []byte(strings.Join(ds, "\n")+"\n"), 0o644)
	w.t.Logf("logs of seed %d kept in %s", seed, dst)
}

func waitTCP(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitHTTP waits for any HTTP answer from url: the server is up.
func waitHTTP(url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %s: %w", url, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serving is what the agent's HTTP API says it serves.
type serving struct {
	Version int64
	ONNX    string // sha256 of the serving model.onnx
}

var agentClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}

// servingNow asks the agent's OIP v2 model metadata, which reports the
// serving version and the sha256 of the serving ONNX graph.
func (w *world) servingNow() (serving, error) {
	resp, err := agentClient.Get("http://" + w.agentHTTP + "/v2/models/" + model)
	if err != nil {
		return serving{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return serving{}, fmt.Errorf("model metadata: HTTP %d", resp.StatusCode)
	}
	var m struct {
		Versions   []string `json:"versions"`
		Parameters struct {
			SHA256 string `json:"sha256"`
		} `json:"parameters"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return serving{}, fmt.Errorf("model metadata: %w", err)
	}
	if len(m.Versions) != 1 {
		return serving{}, fmt.Errorf("model metadata names %d versions", len(m.Versions))
	}
	v, err := strconv.ParseInt(m.Versions[0], 10, 64)
	if err != nil {
		return serving{}, fmt.Errorf("model metadata version %q: %w", m.Versions[0], err)
	}
	if h := resp.Header.Get("X-Linkedge-Model-Version"); h != "" && h != m.Versions[0] {
		return serving{}, fmt.Errorf("header says version %s, body %s", h, m.Versions[0])
	}
	return serving{Version: v, ONNX: m.Parameters.SHA256}, nil
}

// spec is the part of an installed version the checks need.
type spec struct {
	Version int64  `json:"version"`
	SHA256  string `json:"sha256"`
	Bundle  string `json:"bundle"`
}

// installed is the agent's installed.json.
type installed struct {
	Current  *spec `json:"current"`
	Previous *spec `json:"previous"`
}

func (w *world) installed() (installed, error) {
	var in installed
	b, err := os.ReadFile(filepath.Join(w.dataDir, "installed.json"))
	if err != nil {
		return in, err
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return in, fmt.Errorf("installed.json: %w", err)
	}
	return in, nil
}

// sampler polls what the agent serves during the whole run, so that a
// wrong model served for a moment is caught, not only at the end.
type sampler struct {
	mu         sync.Mutex
	samples    int
	errors     int
	seen       map[serving]int
	gapStart   time.Time     // first unanswered sample of the current gap
	longestGap time.Duration // longest time the agent answered nothing
	violations []string
	stop       chan struct{}
	done       chan struct{}
}

func (w *world) startSampler(bundles map[int64]bundleInfo) *sampler {
	s := &sampler{seen: map[serving]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	body, versions := goldenCSV(bundles)
	go func() {
		defer close(s.done)
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			var bad []string
			sv, err := w.servingNow()
			if err == nil {
				if b, ok := bundles[sv.Version]; !ok || b.onnx != sv.ONNX {
					bad = append(bad, fmt.Sprintf("metadata: version %d with ONNX sha256 %s", sv.Version, short(sv.ONNX)))
				}
				// The answers themselves: the golden row of each version
				// must score as that version's bundle says it does.
				v, scores, ierr := w.invoke(body)
				if ierr == nil {
					if i := slices.Index(versions, v); i < 0 {
						bad = append(bad, fmt.Sprintf("/invocations answers as version %d", v))
					} else if want := bundles[v].golden.Score; len(scores) != len(versions) || math.Abs(scores[i]-want) > 1e-4 {
						bad = append(bad, fmt.Sprintf("/invocations as v%d scores the golden row %v, the bundle says %v", v, scores, want))
					}
				}
			}
			s.mu.Lock()
			s.samples++
			if err != nil {
				// Down, booting, or nothing to serve yet: serving nothing
				// is allowed, serving wrong bytes is not.
				s.errors++
				if s.gapStart.IsZero() {
					s.gapStart = time.Now()
				}
				s.longestGap = max(s.longestGap, time.Since(s.gapStart))
			} else {
				s.seen[sv]++
				s.gapStart = time.Time{}
			}
			for _, b := range bad {
				if len(s.violations) < 10 {
					s.violations = append(s.violations, fmt.Sprintf("%.2fs: %s", time.Since(w.start).Seconds(), b))
				}
			}
			s.mu.Unlock()
		}
	}()
	w.t.Cleanup(s.halt)
	return s
}

// goldenCSV is one CSV request holding the first golden row of each
// version, in version order.
func goldenCSV(bundles map[int64]bundleInfo) ([]byte, []int64) {
	var versions []int64
	for v := range bundles {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	var b strings.Builder
	for _, v := range versions {
		for i, f := range bundles[v].golden.Features {
			if i > 0 {
				b.WriteByte(',')
			}
			if math.IsNaN(float64(f)) {
				b.WriteString("nan")
			} else {
				b.WriteString(strconv.FormatFloat(float64(f), 'g', -1, 32))
			}
		}
		b.WriteByte('\n')
	}
	return []byte(b.String()), versions
}

// invoke posts rows to /invocations and returns the answer's version and
// scores.
func (w *world) invoke(body []byte) (int64, []float64, error) {
	resp, err := agentClient.Post("http://"+w.agentHTTP+"/invocations", "text/csv", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("invocations: HTTP %d", resp.StatusCode)
	}
	var a struct {
		Version     int64 `json:"model_version"`
		Predictions []struct {
			Score float64 `json:"score"`
		} `json:"predictions"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a); err != nil {
		return 0, nil, fmt.Errorf("invocations: %w", err)
	}
	var scores []float64
	for _, p := range a.Predictions {
		scores = append(scores, p.Score)
	}
	return a.Version, scores, nil
}

func (s *sampler) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// dirStats counts the files of the agent's data folder.
type dirStats struct {
	Files int
	Bytes int64
	Names []string // relative paths
}

func scanDir(root string) (dirStats, error) {
	var st dirStats
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed while walking
		}
		rel, _ := filepath.Rel(root, p)
		st.Files++
		st.Bytes += info.Size()
		st.Names = append(st.Names, rel)
		return nil
	})
	return st, err
}
