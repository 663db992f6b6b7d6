//go:build linux

package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup() // the linkedge binary TestA5FloodMemory builds
	os.Exit(code)
}

// The A5 attack as it was first run against the broker, with one truck
// login: a 50 MB retained message, then 3,000 retained topics in 2 s, about
// 50 KB each (the 157 MB broker.db it left behind). It took the broker from
// 32 to 303 MB of RSS.
const (
	floodBigPublish = 50 << 20
	floodTopics     = 3000
	floodPayload    = 48 << 10
	floodSpread     = 2 * time.Second
	// floodMaxRSS is the security issue's bound on the broker's peak RSS.
	floodMaxRSS = 100 << 20
)

// TestA5FloodMemory floods the real `linkedge broker` process (users file,
// data dir, default settings) with the A5 attack from two truck logins at
// once and checks that its peak RSS stays under 100 MB, that the flood
// left nothing but the trucks' statuses retained and that the broker still
// serves a fresh client. The numbers are logged (go test -v) for
// docs/security.md.
func TestA5FloodMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds linkedge and floods its broker as a child process")
	}
	users := writeUsersFile(t, map[string]string{
		"t1":  "truck:t1-pw",
		"t2":  "truck:t2-pw",
		"ops": "operator:ops-pw",
	})
	data := filepath.Join(t.TempDir(), "data")
	p := startBrokerProcess(t, testbin.Linkedge(t),
		"broker", "--listen", "127.0.0.1:0", "--http", "", "--data", data, "--users", users)
	idle, err := procMemory(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	stopSampling := p.sampleRSS(10 * time.Millisecond)

	start := time.Now()
	trucks := []string{"t1", "t2"}
	errs := make([]error, len(trucks))
	var wg sync.WaitGroup
	for i, truck := range trucks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = floodAsTruck(p.addr, truck)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	sampled := stopSampling()
	after, err := procMemory(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	dataBytes := dirSize(t, data)
	t.Logf("A5 flood, 2 trucks (each: a %d MB retained publish, then %d retained publishes of %d KB in %s): took %s",
		floodBigPublish>>20, floodTopics, floodPayload>>10, floodSpread, took.Round(10*time.Millisecond))
	t.Logf("broker RSS: idle %.1f MB, after %.1f MB, peak sampled %.1f MB, VmHWM %.1f MB; data dir %.2f MB",
		mb(idle.rss), mb(after.rss), mb(sampled), mb(after.hwm), mb(dataBytes))
	// The kernel updates VmHWM lazily; a sample can be a little higher.
	if peak := max(after.hwm, sampled); peak >= floodMaxRSS {
		t.Errorf("broker peak RSS %.1f MB, want under %.0f MB", mb(peak), mb(floodMaxRSS))
	}

	// A fresh client is served, and finds the trucks' statuses retained
	// and nothing else the flood sent.
	var mu sync.Mutex
	got := map[string]int{}
	var other atomic.Int64
	ops := connect(t, clientOpts(p.addr).SetUsername("ops").SetPassword("ops-pw"))
	await(t, "subscribe", ops.Subscribe("linkedge/v1/#", 1, func(_ paho.Client, m paho.Message) {
		if !m.Retained() || !strings.HasSuffix(m.Topic(), "/status") {
			other.Add(1)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		got[m.Topic()] = len(m.Payload())
	}))
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == len(trucks) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // anything else retained arrives with them
	mu.Lock()
	defer mu.Unlock()
	for _, truck := range trucks {
		if n, ok := got["linkedge/v1/trucks/"+truck+"/status"]; !ok || n != len("online") {
			t.Errorf("retained status of %s: %d bytes (present %v), want %q", truck, n, ok, "online")
		}
	}
	if n := other.Load(); n > 0 {
		t.Errorf("a fresh subscriber got %d retained messages besides the statuses", n)
	}
	// Nothing of the flood was stored: the file holds two statuses and a
	// session or two.
	if dataBytes > 8<<20 {
		t.Errorf("data dir holds %.1f MB after the flood", mb(dataBytes))
	}
}

// floodAsTruck runs the A5 attack as one truck: the oversized retained
// status (which must cost it the connection), then floodTopics retained
// publishes on distinct topics of its own tree spread over floodSpread,
// then its real status.
func floodAsTruck(addr, truck string) error {
	opts := func() *paho.ClientOptions {
		return clientOpts(addr).SetClientID(truckClientPrefix + truck).SetUsername(truck).SetPassword(truck + "-pw")
	}
	status := topicTrucks + truck + "/status"

	lost := make(chan struct{})
	var once sync.Once
	c := paho.NewClient(opts().SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(lost) }) }))
	if err := waitToken("connect", c.Connect()); err != nil {
		return err
	}
	c.Publish(status, 1, true, make([]byte, floodBigPublish))
	select {
	case <-lost:
	case <-time.After(waitFor):
		c.Disconnect(0)
		return fmt.Errorf("still connected %s after a %d MB publish", waitFor, floodBigPublish>>20)
	}

	c = paho.NewClient(opts())
	if err := waitToken("reconnect", c.Connect()); err != nil {
		return err
	}
	defer c.Disconnect(250)
	payload := bytes.Repeat([]byte{'x'}, floodPayload)
	toks := make([]paho.Token, 0, floodTopics)
	begin := time.Now()
	for i := range floodTopics {
		toks = append(toks, c.Publish(fmt.Sprintf("%s%s/predictions/m%d", topicTrucks, truck, i), 1, true, payload))
		if i%100 == 99 {
			time.Sleep(time.Until(begin.Add(floodSpread * time.Duration(i+1) / floodTopics)))
		}
	}
	for i, tok := range toks {
		if err := waitToken(fmt.Sprintf("flood publish %d", i), tok); err != nil {
			return err
		}
	}
	return waitToken("status", c.Publish(status, 1, true, "online"))
}

// waitToken waits for a paho token, at most waitFor.
func waitToken(what string, tok paho.Token) error {
	if !tok.WaitTimeout(waitFor) {
		return fmt.Errorf("%s: timed out after %s", what, waitFor)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// brokerProc is `linkedge broker` running as a child process.
type brokerProc struct {
	cmd  *exec.Cmd
	addr string // the MQTT address it logged
	done chan struct{}

	mu  sync.Mutex
	log bytes.Buffer // its stderr
}

var mqttAddrRE = regexp.MustCompile(`mqtt_addr=(\S+)`)

// startBrokerProcess runs bin with args, waits for it to log its MQTT
// address, and stops it (SIGTERM, then SIGKILL) when the test ends. Its
// log is shown if the test fails.
func startBrokerProcess(t *testing.T, bin string, args ...string) *brokerProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	// Dies with the test process, should a test timeout kill that.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &brokerProc{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := mqttAddrRE.FindStringSubmatch(line); m != nil && strings.Contains(line, "mqtt broker started") {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(waitFor):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("broker log:\n%s", p.log.String())
			p.mu.Unlock()
		}
	})
	select {
	case p.addr = <-addr:
	case <-p.done:
		t.Fatal("the broker exited before it started")
	case <-time.After(waitFor):
		t.Fatalf("the broker did not log its address within %s", waitFor)
	}
	return p
}

func (p *brokerProc) pid() int { return p.cmd.Process.Pid }

// sampleRSS polls the process's VmRSS every interval until the returned
// function is called, which returns the highest value seen.
func (p *brokerProc) sampleRSS(interval time.Duration) func() int64 {
	stop, done := make(chan struct{}), make(chan struct{})
	var peak int64
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if m, err := procMemory(p.pid()); err == nil {
				peak = max(peak, m.rss)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return peak
	}
}

// memory is what /proc/{pid}/status says, in bytes: the resident set
// now (VmRSS) and its peak over the process's life (VmHWM).
type memory struct{ rss, hwm int64 }

func procMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("read memory of process %d: %w", pid, err)
	}
	var m memory
	for line := range strings.Lines(string(data)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("process %d: %s: %w", pid, strings.TrimSpace(line), err)
		}
		*dst = kb << 10
	}
	return m, nil
}

// dirSize sums the sizes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }
