package netsim

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// server is a loopback TCP server running handle for each connection. It
// is stopped (listener and connections closed, goroutines waited for) by
// t.Cleanup.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startServer(t *testing.T, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

// assertDead checks that c was dropped: a read fails (EOF or reset), and
// not merely by timing out.
func assertDead(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read on a cut connection: err = %v, want EOF or reset", err)
	}
}

func TestBytesFlowBothWays(t *testing.T) {
	p := newProxy(t, startServer(t, echo).addr())
	c := dial(t, p)
	roundTrip(t, c, "hello truck")
	roundTrip(t, c, string(bytes.Repeat([]byte("x"), 100<<10)))

	// A half-close reaches the target, and its close comes back.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after half-close: n=%d err=%v, want EOF", n, err)
	}
}

func TestCutDropsLiveAndRefusesNew(t *testing.T) {
	p := newProxy(t, startServer(t, echo).addr())
	a, b := dial(t, p), dial(t, p)
	roundTrip(t, a, "a")
	roundTrip(t, b, "b")
	if !p.Online() {
		t.Fatal("Online() = false before Cut")
	}

	p.Cut()
	if p.Online() {
		t.Fatal("Online() = true after Cut")
	}
	assertDead(t, a)
	assertDead(t, b)

	// New connections are accepted, then reset (the reset may even beat
	// the end of the client's connect).
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		assertDead(t, c)
	}
}

func TestRestore(t *testing.T) {
	p := newProxy(t, startServer(t, echo).addr())
	p.Cut()
	p.Restore()
	if !p.Online() {
		t.Fatal("Online() = false after Restore")
	}
	roundTrip(t, dial(t, p), "back online")
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()
	p := newProxy(t, target)
	// The reset may even beat the end of the client's connect.
	if c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
		defer c.Close()
		assertDead(t, c)
	}
}

// The rate assertions are lower bounds only (a loaded machine can only make
// the transfer slower), so they cannot flake.
func TestRateLimit(t *testing.T) {
	const total = 200 << 10 // 200 KiB at 100 KB/s: just over 2s
	const rate = 100_000
	payload := bytes.Repeat([]byte("m"), total)

	t.Run("download", func(t *testing.T) {
		p := newProxy(t, startServer(t, func(c net.Conn) { c.Write(payload) }).addr())
		p.SetRate(rate)
		c := dial(t, p)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		got, err := io.ReadAll(c)
		if err != nil || len(got) != total {
			t.Fatalf("read %d bytes, err %v; want %d", len(got), err, total)
		}
		if d := time.Since(start); d < time.Second {
			t.Fatalf("%d bytes at %d B/s took %v, want > 1s", total, rate, d)
		}
	})

	t.Run("upload", func(t *testing.T) {
		received := make(chan int, 1)
		p := newProxy(t, startServer(t, func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			received <- int(n)
		}).addr())
		p.SetRate(rate)
		c := dial(t, p)
		start := time.Now()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		select {
		case n := <-received:
			if n != total {
				t.Fatalf("target received %d bytes, want %d", n, total)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("upload did not finish")
		}
		if d := time.Since(start); d < time.Second {
			t.Fatalf("%d bytes at %d B/s took %v, want > 1s", total, rate, d)
		}
	})

	t.Run("unlimited again", func(t *testing.T) {
		p := newProxy(t, startServer(t, func(c net.Conn) { c.Write(payload) }).addr())
		p.SetRate(1000)
		p.SetRate(0)
		c := dial(t, p)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if got, err := io.ReadAll(c); err != nil || len(got) != total {
			t.Fatalf("read %d bytes, err %v; want %d", len(got), err, total)
		}
	})
}

func TestCloseStopsEverything(t *testing.T) {
	srv := startServer(t, echo)
	before := runtime.NumGoroutine()

	p, err := New(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	p.SetRate(10) // leaves a transfer waiting for its turn
	c := dial(t, p)
	c.Write(bytes.Repeat([]byte("z"), 1000))
	time.Sleep(50 * time.Millisecond)

	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if p.Online() {
		t.Fatal("Online() = true after Close")
	}
	p.Restore()
	if p.Online() {
		t.Fatal("Restore revived a closed proxy")
	}
	assertDead(t, c)
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatal("dial after Close succeeded")
	}

	// The proxy's goroutines are gone (the echo server's may take a moment
	// to notice their connections closed).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRatePerConnection: with PerConnection, every connection gets the
// whole rate to itself, and is still held to it.
func TestRatePerConnection(t *testing.T) {
	const total = 100 << 10
	const rate = 100_000
	payload := bytes.Repeat([]byte("m"), total)
	p, err := New(startServer(t, func(c net.Conn) { c.Write(payload) }).addr(), PerConnection())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.SetRate(rate)
	type result struct {
		n   int
		d   time.Duration
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		c := dial(t, p)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			start := time.Now()
			got, err := io.ReadAll(c)
			results <- result{len(got), time.Since(start), err}
		}()
	}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil || r.n != total {
				t.Fatalf("read %d bytes, err %v; want %d", r.n, r.err, total)
			}
			// Held to the rate: 100 KiB at 100 KB/s is about a second.
			if r.d < 800*time.Millisecond {
				t.Errorf("%d bytes at %d B/s took %v, want about 1s", total, rate, r.d)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("downloads did not finish")
		}
	}
}
