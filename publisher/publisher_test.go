package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// The whole policy against a real broker: announce, upgrade, withdraw,
// restart without re-announcing.
func TestPublisherLifecycle(t *testing.T) {
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	s := subscribe(t, b.Addr(), "aps")
	v1 := e.add("aps", 1, true)
	e.add("other", 1, false) // pending only: never announced

	var mu sync.Mutex
	var calls []string
	cfg := e.config(b.Addr())
	cfg.OnAnnounce = func(model string, version, serial int64) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, fmt.Sprintf("%s/%d", model, version))
	}
	p := start(t, cfg)

	// 1. The approved version is announced, signed, and downloadable.
	r1 := e.verify(s.next())
	if r1.Model != "aps" || r1.Stable.Version != 1 || r1.Stable.Source.ApprovedBy != "tester" {
		t.Fatalf("first release = %+v", r1)
	}
	sum := sha256.Sum256(v1)
	if r1.Stable.Artifact.SHA256 != hex.EncodeToString(sum[:]) || r1.Stable.Artifact.Size != int64(len(v1)) {
		t.Fatalf("artifact digest/size %s/%d, want %x/%d", r1.Stable.Artifact.SHA256, r1.Stable.Artifact.Size, sum, len(v1))
	}
	wantURL := "http://" + p.ArtifactAddr() + "/artifacts/aps/1/model.tar.gz"
	if r1.Stable.Artifact.URL != wantURL {
		t.Fatalf("url %s, want %s", r1.Stable.Artifact.URL, wantURL)
	}
	got := resumeDownload(t, r1.Stable.Artifact.URL, r1.Stable.Artifact.SHA256, len(v1)/3)
	if got256 := sha256.Sum256(got); got256 != sum {
		t.Fatal("resumed download differs from the artifact")
	}

	// 2. A newer approved version replaces it.
	e.add("aps", 2, true)
	r2 := e.verify(s.next())
	if r2.Stable.Version != 2 || r2.Serial <= r1.Serial {
		t.Fatalf("after approving v2: version %d serial %d (previous serial %d)", r2.Stable.Version, r2.Serial, r1.Serial)
	}

	// 3. Rejecting it withdraws it: v1 again, under a newer serial.
	e.reject("aps", 2)
	r3 := e.verify(s.next())
	if r3.Stable.Version != 1 || r3.Serial <= r2.Serial {
		t.Fatalf("after rejecting v2: version %d serial %d (previous serial %d)", r3.Stable.Version, r3.Serial, r2.Serial)
	}
	s.none(300 * time.Millisecond) // and nothing else

	if n := value(p.metrics.announcements.WithLabelValues("aps")); n != 3 {
		t.Errorf("announcements_total{aps} = %v, want 3", n)
	}
	if v := value(p.metrics.version.WithLabelValues("aps")); v != 1 {
		t.Errorf("announced_version{aps} = %v, want 1", v)
	}
	mu.Lock()
	if strings.Join(calls, " ") != "aps/1 aps/2 aps/1" {
		t.Errorf("OnAnnounce calls %v", calls)
	}
	mu.Unlock()
	st := e.state()
	if a := st.Models["aps"].Announced; a == nil || a.Serial != r3.Serial || a.Version != 1 {
		t.Fatalf("state after withdrawal: %+v", st.Models["aps"])
	}
	if _, ok := st.Models["other"]; ok {
		t.Error("a model with no approved version got a state entry")
	}

	// 4. A restarted publisher announces nothing it already announced.
	p.stop()
	cfg.OnAnnounce = nil
	p2 := start(t, cfg)
	s.none(20 * cfg.PollInterval)
	if n := value(p2.metrics.announcements.WithLabelValues("aps")); n != 0 {
		t.Errorf("restarted publisher announced %v times", n)
	}
	// The retained document is still the last one.
	late := subscribe(t, b.Addr(), "aps")
	if r := e.verify(late.next()); r.Serial != r3.Serial {
		t.Errorf("retained serial %d, want %d", r.Serial, r3.Serial)
	}
}

// resumeDownload fetches url in two parts, as a truck whose connection
// dropped after cut bytes would, and checks the If-Range contract.
func resumeDownload(t *testing.T, url, sha string, cut int) []byte {
	t.Helper()
	first := get(t, url, map[string]string{"Range": fmt.Sprintf("bytes=0-%d", cut-1)}, http.StatusPartialContent)
	rest := get(t, url, map[string]string{"Range": fmt.Sprintf("bytes=%d-", cut), "If-Range": `"` + sha + `"`}, http.StatusPartialContent)
	if len(first) != cut {
		t.Fatalf("first part is %d bytes, want %d", len(first), cut)
	}
	return append(first, rest...)
}

func get(t *testing.T, url string, headers map[string]string, wantCode int) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s %v: status %d, want %d: %s", url, headers, resp.StatusCode, wantCode, body)
	}
	return body
}

// While the broker is down an approval is neither recorded nor lost: it is
// announced once the broker is back.
func TestBrokerOutage(t *testing.T) {
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	addr := b.Addr()
	e.add("aps", 1, true)
	s := subscribe(t, addr, "aps")
	p := start(t, e.config(addr))
	r1 := e.verify(s.next())

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	e.add("aps", 2, true)
	deadline := time.Now().Add(waitFor)
	for value(p.metrics.errors.WithLabelValues(stagePublish)) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("publisher did not try (and fail) to announce while the broker was down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a := e.state().Models["aps"].Announced; a.Version != 1 || a.Serial != r1.Serial {
		t.Fatalf("an unacknowledged announcement was recorded: %+v", a)
	}

	// Same address, fresh in-memory broker: nothing retained.
	b2 := startBroker(t, addr)
	s2 := subscribe(t, b2.Addr(), "aps")
	r2 := e.verify(s2.next())
	if r2.Stable.Version != 2 || r2.Serial <= r1.Serial {
		t.Fatalf("after the outage: version %d serial %d (before: %d)", r2.Stable.Version, r2.Serial, r1.Serial)
	}
	s2.none(300 * time.Millisecond)
	if a := e.state().Models["aps"].Announced; a.Version != 2 || a.Serial != r2.Serial {
		t.Fatalf("state after the outage: %+v", a)
	}
}

// With a short TTL the same target is re-signed with a new serial once
// less than a third of the validity remains.
func TestResignBeforeExpiry(t *testing.T) {
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	e.add("aps", 1, true)
	s := subscribe(t, b.Addr(), "aps")
	cfg := e.config(b.Addr())
	cfg.ReleaseTTL = 3 * time.Second
	start(t, cfg)

	r1 := e.verify(s.next())
	if got := r1.ExpiresAt.Sub(r1.IssuedAt); got != cfg.ReleaseTTL {
		t.Fatalf("validity %s, want %s", got, cfg.ReleaseTTL)
	}
	r2 := e.verify(s.next())
	age := r2.IssuedAt.Sub(r1.IssuedAt)
	if r2.Stable.Version != 1 || r2.Serial <= r1.Serial || age < 1900*time.Millisecond || !r2.IssuedAt.Before(r1.ExpiresAt) {
		t.Fatalf("re-signed document: version %d serial %d (was %d), issued %s after the first (want ~2s, before expiry)",
			r2.Stable.Version, r2.Serial, r1.Serial, age)
	}
}

// Rejecting the only approved version announces nothing and warns once.
func TestNoApprovedVersionLeft(t *testing.T) {
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	e.add("aps", 1, true)
	s := subscribe(t, b.Addr(), "aps")
	var logs syncBuffer
	cfg := e.config(b.Addr())
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	start(t, cfg)
	e.verify(s.next())

	e.reject("aps", 1)
	s.none(20 * cfg.PollInterval)
	if n := strings.Count(logs.String(), "no approved version remains"); n != 1 {
		t.Fatalf("warning logged %d times, want once:\n%s", n, logs.String())
	}
	e.approve("aps", 1) // approved again: the same content was announced, so nothing new
	s.none(10 * cfg.PollInterval)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunAndCloseLifecycle(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("127.0.0.1:1") // never reached
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Close without Run frees the artifact port.
	addr := p.ArtifactAddr()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := p.Run(t.Context()); err != ErrClosed {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
	cfg.ArtifactListen = addr
	p2, err := New(cfg)
	if err != nil {
		t.Fatalf("artifact port not released by Close: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p2.Run(t.Context()) }()
	time.Sleep(100 * time.Millisecond)
	if err := p2.Run(t.Context()); err != ErrAlreadyRunning {
		t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
	}
	p2.Close() // stops Run
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after Close", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not stop Run")
	}
}

// TestReannouncesWhenBrokerLosesRetained restarts an in-memory broker on
// the same port: the retained release is gone, and the publisher notices
// and announces it again, so trucks connecting later still get it.
func TestReannouncesWhenBrokerLosesRetained(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b1, err := broker.New(broker.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := b1.Addr()
	dir := t.TempDir()
	reg, err := localreg.Open(filepath.Join(dir, "registry"))
	if err != nil {
		t.Fatal(err)
	}
	_, priv := release.GenerateKey()
	keyFile := filepath.Join(dir, "publisher.key")
	if err := release.WritePrivateKeyFile(keyFile, priv); err != nil {
		t.Fatal(err)
	}
	bundlePath := filepath.Join(dir, "v1.tar.gz")
	if err := os.WriteFile(bundlePath, apsmodels.V1(), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := reg.Add(ctx, bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Approve(e.Model, e.Version, "test"); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Broker: "tcp://" + addr, RegistryDir: reg.Dir(), KeyFile: keyFile, PollInterval: 100 * time.Millisecond,
		ArtifactListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { p.Close(); <-done }()

	readRetained := func() []byte {
		got := make(chan []byte, 1)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("reader-%d", time.Now().UnixNano())))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return nil
		}
		defer c.Disconnect(50)
		c.Subscribe(topics.ModelRelease(e.Model), 1, func(_ paho.Client, m paho.Message) {
			select {
			case got <- m.Payload():
			default:
			}
		})
		select {
		case b := <-got:
			return b
		case <-time.After(500 * time.Millisecond):
			return nil
		}
	}
	waitRetained := func(what string) {
		for ctx.Err() == nil {
			if readRetained() != nil {
				return
			}
		}
		t.Fatalf("no retained release %s", what)
	}
	waitRetained("after approval")

	b1.Close()
	b2, err := broker.New(broker.Config{Listen: addr}) // same port, no persistence
	if err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		if err = b2.Start(ctx); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // the port may take a moment to free
	}
	defer b2.Close()
	waitRetained("after the broker restarted empty")
}
