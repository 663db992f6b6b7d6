package publisher

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// waitFor bounds every wait; generous because the machine is small and
// shared.
const waitFor = 20 * time.Second

// testLogger is quiet unless -v is given.
func testLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// env is a registry folder, a signing key and a source folder for bundles.
type env struct {
	t       *testing.T
	dir     string
	reg     *localreg.Registry
	keyFile string
	pub     ed25519.PublicKey
	src     string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	reg, err := localreg.Open(filepath.Join(dir, "registry"))
	if err != nil {
		t.Fatal(err)
	}
	pub, priv := release.GenerateKey()
	keyFile := filepath.Join(dir, "publisher.key")
	if err := release.WritePrivateKeyFile(keyFile, priv); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, reg: reg, keyFile: keyFile, pub: pub, src: src}
}

// config returns a publisher config for this env and a broker address,
// with fast polling and an ephemeral artifact port.
func (e *env) config(brokerAddr string) Config {
	return Config{
		Broker:         "tcp://" + brokerAddr,
		ClientID:       fmt.Sprintf("test-publisher-%d", seq.Add(1)),
		RegistryDir:    e.reg.Dir(),
		KeyFile:        e.keyFile,
		PollInterval:   50 * time.Millisecond,
		PublishTimeout: 3 * time.Second,
		ArtifactListen: "127.0.0.1:0",
		Logger:         testLogger(),
	}
}

// add adds a bundle for model/version (approved if approve) and returns
// its bytes. The ONNX bytes are not a real model: the publisher only
// hashes and serves them. Versions get distinct, non-trivial sizes so
// Range tests cross gzip block boundaries.
func (e *env) add(model string, version int64, approve bool) []byte {
	e.t.Helper()
	meta := &bundle.Metadata{
		Schema: bundle.Schema, Name: model, Version: version, Input: "features", Output: "probability",
		Features: []string{"aa_000", "ab_000"}, Labels: [2]string{"neg", "pos"}, Threshold: 0.5,
	}
	onnx := bytes.Repeat([]byte(fmt.Sprintf("model %s version %d;", model, version)), 4000)
	var buf bytes.Buffer
	if err := bundle.Write(&buf, meta, onnx); err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(e.src, fmt.Sprintf("%s-v%d.tar.gz", model, version))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.reg.Add(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
	if approve {
		e.approve(model, version)
	}
	return buf.Bytes()
}

func (e *env) approve(model string, version int64) {
	e.t.Helper()
	if _, err := e.reg.Approve(model, version, "tester"); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) reject(model string, version int64) {
	e.t.Helper()
	if _, err := e.reg.Reject(model, version, "tester"); err != nil {
		e.t.Fatal(err)
	}
}

// verify checks a received document the way a truck does.
func (e *env) verify(payload []byte) *release.Release {
	e.t.Helper()
	v := release.Verifier{Keys: []ed25519.PublicKey{e.pub}}
	r, err := v.Verify(payload)
	if err != nil {
		e.t.Fatalf("received release does not verify: %v\n%s", err, payload)
	}
	return r
}

// state loads the publisher's state file in e's registry.
func (e *env) state() *State {
	e.t.Helper()
	s, err := NewStateFile(filepath.Join(e.reg.Dir(), DefaultStateFileName)).Load()
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

var seq atomic.Int64

// startBroker starts a real broker on addr ("127.0.0.1:0" for a free port).
// The broker is closed when the test ends (a second Close is harmless).
func startBroker(t *testing.T, addr string) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Config{Listen: addr, HTTPListen: "", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// sub is a paho subscriber collecting the release documents of one model.
type sub struct {
	t      *testing.T
	client paho.Client
	msgs   chan []byte
}

func subscribe(t *testing.T, brokerAddr, model string) *sub {
	t.Helper()
	s := &sub{t: t, msgs: make(chan []byte, 100)}
	opts := paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).
		SetClientID(fmt.Sprintf("test-sub-%d", seq.Add(1))).SetAutoReconnect(false).
		SetConnectTimeout(waitFor)
	s.client = paho.NewClient(opts)
	if tok := s.client.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := s.client.Subscribe(topics.ModelRelease(model), 1, func(_ paho.Client, m paho.Message) {
		s.msgs <- bytes.Clone(m.Payload())
	})
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(0) })
	return s
}

// next waits for the next document.
func (s *sub) next() []byte {
	s.t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(waitFor):
		s.t.Fatal("no release document arrived")
		return nil
	}
}

// none asserts that no document arrives within d.
func (s *sub) none(d time.Duration) {
	s.t.Helper()
	select {
	case m := <-s.msgs:
		s.t.Fatalf("unexpected release document: %s", m)
	case <-time.After(d):
	}
}

// running is a publisher whose Run goroutine the test owns.
type running struct {
	*Publisher
	stop func()
}

// start creates a publisher and runs it until the returned stop (also
// called at cleanup) cancels it and waits for Run to return nil.
func start(t *testing.T, cfg Config) running {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(waitFor):
				t.Error("Run did not return after cancel")
			}
			if err := p.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return running{p, stop}
}

// value reads a counter's or gauge's current value. (The prometheus
// testutil package needs a module this one does not require.)
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
