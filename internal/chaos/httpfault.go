package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Fault is what the HTTP fault proxy does to one request.
type Fault string

// The faults an artifact link suffers in the field. Each is something a
// cellular link, a CDN or a hotel Wi-Fi really does to a download.
const (
	// Pass forwards the request and its answer untouched (but paced).
	Pass Fault = "pass"
	// CutMidBody forwards the headers and part of the body, then resets the
	// connection, as when coverage drops in the middle of a transfer.
	CutMidBody Fault = "cut"
	// Stall forwards part of the body, then sends nothing for a while (until
	// the stall ends or the proxy heals), then the rest.
	Stall Fault = "stall"
	// NotFound answers 404 without asking the origin: a mirror or CDN edge
	// that does not have the object yet.
	NotFound Fault = "404"
	// Unavailable answers 503 with Retry-After: 1.
	Unavailable Fault = "503"
	// CaptivePortal answers 200 with a small HTML login page, whatever was
	// asked for (Range included).
	CaptivePortal Fault = "captive"
	// FlipByte forwards the answer with one bit of the body inverted.
	FlipByte Fault = "flip"
)

// AllFaults are the faults other than Pass, in a fixed order so a seeded
// choice among them is reproducible.
var AllFaults = []Fault{CutMidBody, Stall, NotFound, Unavailable, CaptivePortal, FlipByte}

// captivePage is what a captive portal answers instead of the artifact.
const captivePage = `<!DOCTYPE html><html><head><title>Login</title></head>` +
	`<body><h1>Welcome to Truckstop Wi-Fi</h1><form method="post"><input name="room"><button>Connect</button></form></body></html>`

// Decision records what the proxy did to one request, for the run's report.
type Decision struct {
	N      int    // request number, from 1
	Path   string // URL path
	Range  string // the Range header asked for, if any
	Fault  Fault
	Status int   // status sent to the client
	Offset int64 // body offset of the cut, stall or flipped byte; -1 when none
	Sent   int64 // body bytes written to the client
}

func (d Decision) String() string {
	s := fmt.Sprintf("#%d %s %s status=%d sent=%d", d.N, d.Fault, d.Path, d.Status, d.Sent)
	if d.Range != "" {
		s += " range=" + d.Range
	}
	if d.Offset >= 0 {
		s += fmt.Sprintf(" at=%d", d.Offset)
	}
	return s
}

// HTTPFaultProxy is a reverse proxy to one origin that, while faults are
// on, hurts each request with a fault drawn from a seeded generator. The
// draws happen in request order, so the same seed and the same sequence of
// requests give the same faults; the proxy cannot make the requests
// themselves come in the same order. It listens on 127.0.0.1 only.
type HTTPFaultProxy struct {
	origin string // host:port
	ln     net.Listener
	srv    *http.Server
	client *http.Client

	mu        sync.Mutex
	rng       *rand.Rand
	faultRate float64       // probability that a request gets a fault
	rate      int           // body bytes per second per response; 0: unpaced
	maxStall  time.Duration // upper bound of a stall
	heal      chan struct{} // closed by SetFaultRate(0): ends running stalls
	forced    Fault         // the next request's fault, set by Force
	decisions []Decision
}

// NewHTTPFaultProxy starts a proxy to origin (host:port) on a free loopback
// port. Faults are off until [HTTPFaultProxy.SetFaultRate].
func NewHTTPFaultProxy(origin string, seed uint64) (*HTTPFaultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: listen: %w", err)
	}
	p := &HTTPFaultProxy{
		origin: origin,
		ln:     ln,
		// No proxy from the environment: the origin is on loopback, and a
		// developer's HTTP_PROXY must not end up in the path.
		client:   &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}},
		rng:      rand.New(rand.NewPCG(seed, 0x68747470)), // "http": a stream apart from the scenario's
		maxStall: 8 * time.Second,
		heal:     make(chan struct{}),
	}
	close(p.heal) // healed: nothing stalls
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// Addr is the proxy's address (127.0.0.1:port).
func (p *HTTPFaultProxy) Addr() string { return p.ln.Addr().String() }

// SetRate paces every response body to bytesPerSecond (0: as fast as the
// origin), so that a small artifact takes long enough to be hit mid-body.
func (p *HTTPFaultProxy) SetRate(bytesPerSecond int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate = max(bytesPerSecond, 0)
}

// SetFaultRate sets the probability that a request gets a fault. 0 heals
// the link: new requests pass, and stalls in progress end now.
func (p *HTTPFaultProxy) SetFaultRate(prob float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	wasHealed := p.faultRate == 0
	p.faultRate = prob
	switch {
	case prob == 0 && !wasHealed:
		close(p.heal)
	case prob > 0 && wasHealed:
		p.heal = make(chan struct{})
	}
}

// Force makes the next request get fault f, whatever the generator draws
// (the draws are still made, so the seeded stream stays in step): for a
// scenario that wants one fault at a known point, and for the proxy's own
// tests.
func (p *HTTPFaultProxy) Force(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forced = f
}

// Decisions returns what the proxy did so far, in request order.
func (p *HTTPFaultProxy) Decisions() []Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Decision(nil), p.decisions...)
}

// Close stops the proxy and aborts every request in flight.
func (p *HTTPFaultProxy) Close() error {
	p.SetFaultRate(0)
	return p.srv.Close()
}

// plan is the decision for one request, drawn up front under the lock.
type plan struct {
	idx   int // index into decisions
	fault Fault
	frac  float64 // where in the body the fault lands, 0..1
	bit   uint    // which bit a flip inverts
	stall time.Duration
	rate  int
	heal  <-chan struct{}
}

func (p *HTTPFaultProxy) draw(r *http.Request) plan {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := plan{fault: Pass, rate: p.rate, heal: p.heal}
	// Every draw is made whether or not it is used, so the stream stays in
	// step with the request count and a replay draws the same numbers.
	hit := p.rng.Float64()
	kind := AllFaults[p.rng.IntN(len(AllFaults))]
	pl.frac = p.rng.Float64()
	pl.bit = uint(p.rng.IntN(8))
	pl.stall = time.Duration(1+p.rng.Int64N(int64(p.maxStall/time.Millisecond))) * time.Millisecond
	if hit < p.faultRate {
		pl.fault = kind
	}
	if p.forced != "" {
		pl.fault, p.forced = p.forced, ""
	}
	pl.idx = len(p.decisions)
	p.decisions = append(p.decisions, Decision{N: pl.idx + 1, Path: r.URL.Path, Range: r.Header.Get("Range"), Fault: pl.fault, Offset: -1})
	return pl
}

func (p *HTTPFaultProxy) record(pl plan, f func(d *Decision)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.decisions[pl.idx])
}

// ServeHTTP applies the request's fault.
func (p *HTTPFaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pl := p.draw(r)
	switch pl.fault {
	case NotFound:
		p.answer(w, pl, http.StatusNotFound, "application/json", `{"error":"not found"}`)
		return
	case Unavailable:
		w.Header().Set("Retry-After", "1")
		p.answer(w, pl, http.StatusServiceUnavailable, "application/json", `{"error":"service unavailable"}`)
		return
	case CaptivePortal:
		p.answer(w, pl, http.StatusOK, "text/html; charset=utf-8", captivePage)
		return
	}

	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.origin+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for _, h := range []string{"Range", "If-Range", "Accept-Encoding", "If-None-Match", "If-Modified-Since"} {
		if v := r.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	resp, err := p.client.Do(out)
	if err != nil {
		p.record(pl, func(d *Decision) { d.Status = http.StatusBadGateway })
		http.Error(w, "origin unreachable", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	p.record(pl, func(d *Decision) { d.Status = resp.StatusCode })

	// The fault's offset is a fraction of the announced body; without a
	// length the fault lands at the start.
	at := int64(-1)
	if pl.fault != Pass {
		at = 0
		if resp.ContentLength > 0 {
			at = min(int64(pl.frac*float64(resp.ContentLength)), resp.ContentLength-1)
		}
		p.record(pl, func(d *Decision) { d.Offset = at })
	}
	err = p.copyBody(r.Context(), w, resp.Body, pl, at)
	if errors.Is(err, errCut) {
		// Abort: net/http resets the connection without finishing the
		// response, so the client sees a short body, as on a lost link.
		panic(http.ErrAbortHandler)
	}
}

var errCut = errors.New("cut by the fault proxy")

// copyBody paces body into w and applies a body fault at offset at.
func (p *HTTPFaultProxy) copyBody(ctx context.Context, w http.ResponseWriter, body io.Reader, pl plan, at int64) error {
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 1024)
	var off int64
	start := time.Now()
	var paused time.Duration
	for {
		n, rerr := body.Read(buf)
		chunk := buf[:n]
		for len(chunk) > 0 {
			// Split the chunk at the fault's offset so the fault lands on
			// exactly that byte.
			m := len(chunk)
			if at >= off && at < off+int64(m) && at > off {
				m = int(at - off)
			}
			part := chunk[:m]
			if at == off {
				switch pl.fault {
				case CutMidBody:
					if fl != nil {
						fl.Flush()
					}
					return errCut
				case Stall:
					if fl != nil {
						fl.Flush()
					}
					t0 := time.Now()
					t := time.NewTimer(pl.stall)
					select {
					case <-t.C:
					case <-pl.heal:
					case <-ctx.Done():
					}
					t.Stop()
					paused += time.Since(t0)
				case FlipByte:
					part[0] ^= 1 << pl.bit
				}
			}
			if _, err := w.Write(part); err != nil {
				return err
			}
			off += int64(m)
			p.record(pl, func(d *Decision) { d.Sent = off })
			chunk = chunk[m:]
			if pl.rate > 0 {
				// Pace against the start, so the average rate holds whatever
				// the chunk sizes.
				due := start.Add(paused + time.Duration(off*int64(time.Second)/int64(pl.rate)))
				if d := time.Until(due); d > 0 {
					if fl != nil {
						fl.Flush()
					}
					t := time.NewTimer(d)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						return ctx.Err()
					}
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// answer writes a short answer that never reached the origin.
func (p *HTTPFaultProxy) answer(w http.ResponseWriter, pl plan, code int, ctype, body string) {
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(code)
	n, _ := io.WriteString(w, body)
	p.record(pl, func(d *Decision) { d.Status, d.Sent = code, int64(n) })
}

// Traffic sums what the proxy sent for paths with the given prefix.
type Traffic struct {
	Requests int
	// Body bytes of the origin's file sent to the client, by fault: Pass,
	// CutMidBody, Stall and FlipByte carry the file's bytes; the answers
	// the proxy made up (404, 503, captive page) are not counted here.
	FileBytes map[Fault]int64
	// MadeUpBytes are the bodies of the answers the proxy made up.
	MadeUpBytes int64
	// Flips counts answers with a flipped bit that reached the client
	// beyond the flipped byte's offset, i.e. that delivered a wrong byte.
	Flips int
}

// TrafficFor sums the decisions from index from on (see Decisions) whose
// path starts with prefix.
func (p *HTTPFaultProxy) TrafficFor(prefix string, from int) Traffic {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := Traffic{FileBytes: map[Fault]int64{}}
	for _, d := range p.decisions[min(from, len(p.decisions)):] {
		if !strings.HasPrefix(d.Path, prefix) {
			continue
		}
		t.Requests++
		switch d.Fault {
		case NotFound, Unavailable, CaptivePortal:
			t.MadeUpBytes += d.Sent
			continue
		}
		if d.Status != http.StatusOK && d.Status != http.StatusPartialContent {
			continue
		}
		t.FileBytes[d.Fault] += d.Sent
		if d.Fault == FlipByte && d.Sent > d.Offset {
			t.Flips++
		}
	}
	return t
}

// Total is the file bytes sent, whatever the fault.
func (t Traffic) Total() int64 {
	var n int64
	for _, b := range t.FileBytes {
		n += b
	}
	return n
}
