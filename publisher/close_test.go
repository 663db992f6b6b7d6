package publisher

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/bundle"
)

// closeSlack is what a loaded machine may add to CloseTimeout.
const closeSlack = 2 * time.Second

// runPublisher starts Run on a new publisher and returns it with Run's
// result channel. The test stops it (Close) itself.
func runPublisher(t *testing.T, cfg Config) (*Publisher, <-chan error) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	return p, done
}

// closeWithin calls p.Close and fails the test at once if it does not
// return within d. It returns Close's error and how long it took.
func closeWithin(t *testing.T, p *Publisher, d time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(d):
		t.Fatalf("Close did not return within %s", d)
		return nil, 0
	}
}

// runResult waits (bounded) for Run's result.
func runResult(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitFor):
		t.Fatal("Run did not return after Close")
		return nil
	}
}

// deafBroker accepts TCP connections and never reads from them or writes
// to them: a broker that stopped answering (or a proxy whose upstream is
// gone). It returns its address and a channel that gets each accepted
// connection.
func deafBroker(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 100)
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case accepted <- c:
			default:
			}
		}
	}()
	return ln.Addr().String(), accepted
}

// freezer is a TCP proxy to a broker that can be frozen: from then on it
// forwards nothing either way and keeps the connections open, like a broker
// that stopped answering mid-way.
type freezer struct {
	ln     net.Listener
	frozen chan struct{}
	once   sync.Once
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, frozen: make(chan struct{})}
	done := make(chan struct{})
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			select {
			case <-f.frozen:
				<-done // swallow it, and read no more
				return
			default:
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				dst.Close()
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, waitFor)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

func (f *freezer) freeze() { f.once.Do(func() { close(f.frozen) }) }

// TestCloseWhileConnectingToADeafBroker: a broker that accepts the TCP
// connection and never answers CONNECT held Close for paho's whole connect
// timeout before; now Close returns at once, without an error (the attempt
// ends by itself, and is then disconnected).
func TestCloseWhileConnectingToADeafBroker(t *testing.T) {
	const timeout = time.Second
	addr, accepted := deafBroker(t)
	e := newEnv(t)
	e.add("aps", 1, true)
	cfg := e.config(addr)
	cfg.CloseTimeout = timeout
	p, done := runPublisher(t, cfg)
	select {
	case <-accepted:
	case <-time.After(waitFor):
		t.Fatal("the publisher never dialled the broker")
	}
	err, took := closeWithin(t, p, timeout+closeSlack+waitFor)
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took > timeout+closeSlack {
		t.Errorf("Close took %s, CloseTimeout is %s", took, timeout)
	}
	if err := runResult(t, done); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestCloseWhenTheBrokerStopsAnswering: connected, then the broker stops
// answering (frozen) while an announcement waits for its PUBACK, or goes
// away altogether. Close returns in time either way.
func TestCloseWhenTheBrokerStopsAnswering(t *testing.T) {
	for _, how := range []string{"frozen", "killed"} {
		t.Run(how, func(t *testing.T) {
			const timeout = 2 * time.Second
			b := startBroker(t, "127.0.0.1:0")
			f := newFreezer(t, b.Addr())
			e := newEnv(t)
			cfg := e.config(f.addr())
			cfg.CloseTimeout = timeout
			cfg.PublishTimeout = time.Minute // the wait is still on at Close
			p, done := runPublisher(t, cfg)
			waitConnected(t, p)

			switch how {
			case "frozen":
				f.freeze()
			case "killed":
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
			e.add("aps", 1, true)
			if how == "frozen" {
				waitDoing(t, p, "announcing aps version 1")
			} else {
				time.Sleep(200 * time.Millisecond) // a few polls against no broker
			}

			err, took := closeWithin(t, p, timeout+closeSlack+waitFor)
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
			if took > timeout+closeSlack {
				t.Errorf("Close took %s, CloseTimeout is %s", took, timeout)
			}
			if err := runResult(t, done); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// waitConnected waits (bounded) for p's first broker connection.
func waitConnected(t *testing.T, p *Publisher) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); p.sess.waitingForFirstConnect(); {
		if time.Now().After(deadline) {
			t.Fatal("the publisher never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDoing waits (bounded) until the poll loop is busy with what.
func waitDoing(t *testing.T, p *Publisher, what string) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); p.getDoing() != what; {
		if time.Now().After(deadline) {
			t.Fatalf("the poll loop is %q, never %q", p.getDoing(), what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stuckRegistry never answers, whatever its context says.
type stuckRegistry struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (r *stuckRegistry) Name() string { return "stuck" }

func (r *stuckRegistry) Versions(context.Context) ([]Version, error) {
	r.once.Do(func() { close(r.entered) })
	<-r.release
	return nil, errors.New("released")
}

// TestCloseGivesUpOnAStuckPollLoop: something the publisher cannot
// interrupt (here a registry call that ignores cancellation) does not hold
// Close: it returns in time, and its error, like Run's, names what it left.
func TestCloseGivesUpOnAStuckPollLoop(t *testing.T) {
	const timeout = time.Second
	b := startBroker(t, "127.0.0.1:0")
	e := newEnv(t)
	reg := &stuckRegistry{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { close(reg.release) })
	cfg := e.config(b.Addr())
	cfg.RegistryDir, cfg.StateFile = "", filepath.Join(t.TempDir(), "state.json")
	cfg.Registry, cfg.Distributor = reg, BaseURLDistributor{Base: "http://127.0.0.1:1"}
	cfg.CloseTimeout = timeout
	p, done := runPublisher(t, cfg)
	select {
	case <-reg.entered:
	case <-time.After(waitFor):
		t.Fatal("the registry was never asked")
	}

	err, took := closeWithin(t, p, timeout+closeSlack+waitFor)
	if took > timeout+closeSlack {
		t.Errorf("Close took %s, CloseTimeout is %s", took, timeout)
	}
	if !errors.Is(err, ErrCloseTimeout) || !strings.Contains(err.Error(), "the poll loop, reading the registry stuck") {
		t.Fatalf("Close = %v, want ErrCloseTimeout naming the poll loop", err)
	}
	if runErr := runResult(t, done); !errors.Is(runErr, ErrCloseTimeout) {
		t.Errorf("Run = %v, want ErrCloseTimeout", runErr)
	}
	// The rest did stop: the artifact port is free.
	ln, lerr := net.Listen("tcp", p.ArtifactAddr())
	if lerr != nil {
		t.Errorf("artifact port still taken: %v", lerr)
	} else {
		ln.Close()
	}
}

// TestCloseCutsOffDownloads: a download in flight (a truck reading slowly)
// is let run for most of CloseTimeout, then cut off; Close returns in time
// and without error (the truck resumes the download elsewhere).
func TestCloseCutsOffDownloads(t *testing.T) {
	const timeout = time.Second
	b := startBroker(t, "127.0.0.1:0")
	e := newEnv(t)
	size := e.addLarge("aps", 1, 16<<20) // well past what socket buffers hold
	cfg := e.config(b.Addr())
	cfg.CloseTimeout = timeout
	p, done := runPublisher(t, cfg)
	s := subscribe(t, b.Addr(), "aps")
	r := e.verify(s.next())

	// Ask for the artifact and read one byte: the handler is then busy
	// writing to a connection nobody reads.
	c, err := net.DialTimeout("tcp", p.ArtifactAddr(), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	path := strings.TrimPrefix(r.Stable.Artifact.URL, "http://"+p.ArtifactAddr())
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	err, took := closeWithin(t, p, timeout+closeSlack+waitFor)
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took > timeout+closeSlack {
		t.Errorf("Close took %s, CloseTimeout is %s", took, timeout)
	}
	if err := runResult(t, done); err != nil {
		t.Errorf("Run: %v", err)
	}
	// The download was cut off, not finished.
	got, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the download is still open after Close")
	}
	if got >= int64(size) {
		t.Errorf("read %d bytes of a %d-byte artifact: not cut off", got, size)
	}
}

// addLarge adds an approved version whose bundle holds size random
// (incompressible) bytes, and returns the bundle's size.
func (e *env) addLarge(model string, version int64, size int) int {
	e.t.Helper()
	meta := &bundle.Metadata{
		Schema: bundle.Schema, Name: model, Version: version, Input: "features", Output: "probability",
		Features: []string{"aa_000"}, Labels: [2]string{"neg", "pos"}, Threshold: 0.5,
	}
	onnx := make([]byte, size)
	_, _ = rand.Read(onnx)
	var buf bytes.Buffer
	if err := bundle.Write(&buf, meta, onnx); err != nil {
		e.t.Fatal(err)
	}
	p := filepath.Join(e.src, fmt.Sprintf("%s-v%d-large.tar.gz", model, version))
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.reg.Add(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
	e.approve(model, version)
	return buf.Len()
}

func TestCloseTimeoutConfig(t *testing.T) {
	c, err := ParseConfig([]byte("broker: tcp://127.0.0.1:1883\nregistry_dir: /r\nkey_file: k\nclose_timeout: 3s\n"))
	if err != nil || c.CloseTimeout != 3*time.Second {
		t.Fatalf("close_timeout: %v, %v", c.CloseTimeout, err)
	}
	c.CloseTimeout = 0
	c.setDefaults()
	if c.CloseTimeout != DefaultCloseTimeout {
		t.Errorf("default %s, want %s", c.CloseTimeout, DefaultCloseTimeout)
	}
	c.CloseTimeout = -time.Second
	if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "close_timeout") {
		t.Errorf("negative close_timeout: %v", err)
	}
}
