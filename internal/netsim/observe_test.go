package netsim

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// events collects what a proxy reports.
type events struct {
	mu   sync.Mutex
	list []Event
	ch   chan struct{} // signalled on every event
}

func observe(p *Proxy) *events {
	e := &events{ch: make(chan struct{}, 1)}
	p.Observe(func(ev Event) {
		e.mu.Lock()
		e.list = append(e.list, ev)
		e.mu.Unlock()
		select {
		case e.ch <- struct{}{}:
		default:
		}
	})
	return e
}

// waitKind waits (at most 5 s) until n events of kind have been seen.
func (e *events) waitKind(t *testing.T, kind EventKind, n int) []Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		e.mu.Lock()
		got := 0
		for _, ev := range e.list {
			if ev.Kind == kind {
				got++
			}
		}
		list := append([]Event(nil), e.list...)
		e.mu.Unlock()
		if got >= n {
			return list
		}
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("waited 5s for %d %v events; have %v", n, kind, list)
		}
	}
}

// TestCounting sends known traffic through the proxy over real loopback TCP
// and checks the counters and the events.
func TestCounting(t *testing.T) {
	bulk := bytes.Repeat([]byte("b"), 100<<10)
	cases := []struct {
		name string
		// server handles the target side of the one connection.
		server func(c net.Conn)
		// client drives the client side; it returns when its part is done.
		client func(t *testing.T, c net.Conn)
		// the connection's last event
		end               EventKind
		bytes             [2]int64
		minBursts         [2]int64
		minSeg, maxSeg    [2]int64
		wantEOF           [2]bool
		refusedAfterwards bool
	}{
		{
			name: "request and answer, then both sides close",
			server: func(c net.Conn) {
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write([]byte("pong!"))
				}
				io.Copy(io.Discard, c) // until the client's FIN
			},
			client: func(t *testing.T, c net.Conn) {
				roundTripN(t, c, "ping", 5)
				c.(*net.TCPConn).CloseWrite()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c) // until the proxy passes the server's FIN on
			},
			end: EventClose, bytes: [2]int64{4, 5}, minBursts: [2]int64{1, 1},
			minSeg: [2]int64{1, 1}, maxSeg: [2]int64{1, 1}, wantEOF: [2]bool{true, true},
		},
		{
			name:   "bulk download",
			server: func(c net.Conn) { c.Write(bulk) },
			client: func(t *testing.T, c net.Conn) {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := io.Copy(io.Discard, c); n != int64(len(bulk)) || err != nil {
					t.Fatalf("read %d bytes, err %v; want %d", n, err, len(bulk))
				}
				c.Close()
			},
			// The server's FIN arrives first; the client then closes, which
			// the proxy sees as an EOF too.
			end: EventClose, bytes: [2]int64{0, int64(len(bulk))}, minBursts: [2]int64{0, 4},
			// 102,400 bytes are at least 71 segments of 1,448; a burst
			// shorter than a full segment can add at most one per burst.
			minSeg: [2]int64{0, 71}, maxSeg: [2]int64{0, 71 + 100}, wantEOF: [2]bool{true, true},
		},
		{
			name: "upload",
			server: func(c net.Conn) {
				io.Copy(io.Discard, c)
			},
			client: func(t *testing.T, c net.Conn) {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(bulk[:50_000]); err != nil {
					t.Fatal(err)
				}
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			},
			end: EventClose, bytes: [2]int64{50_000, 0}, minBursts: [2]int64{1, 0},
			minSeg: [2]int64{35, 0}, maxSeg: [2]int64{35 + 50, 0}, wantEOF: [2]bool{true, true},
		},
		{
			name:   "cut in the middle",
			server: echo,
			client: func(t *testing.T, c net.Conn) {
				roundTripN(t, c, "hello", 5)
			},
			end: EventReset, bytes: [2]int64{5, 5}, minBursts: [2]int64{1, 1},
			minSeg: [2]int64{1, 1}, maxSeg: [2]int64{1, 1}, refusedAfterwards: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy(t, startServer(t, tc.server).addr())
			ev := observe(p)
			c := dial(t, p)
			tc.client(t, c)
			if tc.end == EventReset {
				ev.waitKind(t, EventData, 2)
				p.Cut()
			}
			list := ev.waitKind(t, tc.end, 1)

			got := p.Counters()
			if got.Bytes != tc.bytes {
				t.Errorf("bytes %v, want %v", got.Bytes, tc.bytes)
			}
			for d := range 2 {
				if got.Bursts[d] < tc.minBursts[d] || got.Bursts[d] > got.Bytes[d] {
					t.Errorf("%v: %d bursts for %d bytes, want at least %d", Direction(d), got.Bursts[d], got.Bytes[d], tc.minBursts[d])
				}
				if got.Segments[d] < tc.minSeg[d] || got.Segments[d] > tc.maxSeg[d] {
					t.Errorf("%v: %d segments, want %d..%d", Direction(d), got.Segments[d], tc.minSeg[d], tc.maxSeg[d])
				}
			}
			if got.Conns != 1 {
				t.Errorf("conns %d, want 1", got.Conns)
			}
			if want := int64(0); tc.end == EventReset && got.Resets != 1 || tc.end != EventReset && got.Resets != want {
				t.Errorf("resets %d with end %v", got.Resets, tc.end)
			}

			// The events agree with the counters, come in order, and all
			// belong to the one connection.
			var sum [2]int64
			var eof [2]bool
			if list[0].Kind != EventOpen {
				t.Errorf("first event %v, want open", list[0].Kind)
			}
			for i, e := range list {
				if e.Conn != 1 {
					t.Errorf("event %d of conn %d, want 1", i, e.Conn)
				}
				// In order within a direction; the two directions' goroutines
				// stamp their events before they take the observer's lock,
				// so across directions a loaded machine may swap two.
				for j := i - 1; j >= 0; j-- {
					if list[j].Dir == e.Dir {
						if e.Time.Before(list[j].Time) {
							t.Errorf("event %d (%v) is earlier than the one before it in its direction", i, e.Kind)
						}
						break
					}
				}
				switch e.Kind {
				case EventData:
					sum[e.Dir] += int64(e.Bytes)
				case EventEOF:
					eof[e.Dir] = true
				}
			}
			if sum != tc.bytes {
				t.Errorf("events carry %v bytes, counters say %v", sum, tc.bytes)
			}
			if eof != tc.wantEOF {
				t.Errorf("EOFs %v, want %v", eof, tc.wantEOF)
			}
			if last := list[len(list)-1]; last.Kind != tc.end {
				t.Errorf("last event %v, want %v (events %v)", last.Kind, tc.end, list)
			}

			if tc.refusedAfterwards {
				if c2, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
					defer c2.Close()
				}
				ev.waitKind(t, EventRefused, 1)
				if got := p.Counters(); got.Refused != 1 || got.Conns != 1 {
					t.Errorf("after a dial while cut: refused %d conns %d, want 1 and 1", got.Refused, got.Conns)
				}
			}
		})
	}
}

// TestObserveOff checks that a nil observer stops the reports but not the
// counting.
func TestObserveOff(t *testing.T) {
	p := newProxy(t, startServer(t, echo).addr())
	ev := observe(p)
	c := dial(t, p)
	roundTrip(t, c, "one")
	ev.waitKind(t, EventData, 2)
	p.Observe(nil)
	roundTrip(t, c, "two")
	ev.mu.Lock()
	n := len(ev.list)
	ev.mu.Unlock()
	if n != 3 { // open and the two bursts of "one"
		t.Errorf("%d events after Observe(nil), want 3", n)
	}
	// The proxy counts a burst after passing it on, so the echo may be
	// read a moment before it is counted.
	deadline := time.Now().Add(5 * time.Second)
	for p.Counters().Bytes != [2]int64{6, 6} && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := p.Counters().Bytes; got != [2]int64{6, 6} {
		t.Errorf("bytes %v, want [6 6]", got)
	}
}

// roundTripN writes msg and reads an answer of n bytes.
func roundTripN(t *testing.T, c net.Conn, msg string, n int) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatalf("read: %v", err)
	}
	c.SetDeadline(time.Time{})
}
