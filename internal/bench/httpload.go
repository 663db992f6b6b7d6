// Package bench generates load and summarises latencies for `linkedge bench`.
//
// The HTTP load generator speaks HTTP/1.1 over raw keep-alive TCP connections
// with a request prepared once, so that on a small machine shared with the
// server under test it spends as little CPU as it can: what it measures is
// the server, not net/http's client.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one prepared HTTP request.
type Request struct {
	URL         string
	Method      string
	ContentType string
	Body        []byte
}

func (r Request) wire() (addr string, raw []byte, err error) {
	u, err := url.Parse(r.URL)
	if err != nil {
		return "", nil, err
	}
	if u.Scheme != "http" {
		return "", nil, fmt.Errorf("bench: only http:// URLs, got %q", r.URL)
	}
	m := r.Method
	if m == "" {
		m = "POST"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", m, u.RequestURI(), u.Host, r.ContentType, len(r.Body))
	b.Write(r.Body)
	return u.Host, b.Bytes(), nil
}

// LoadConfig is one load run.
type LoadConfig struct {
	// Concurrency is the number of connections, each with one request in
	// flight (closed loop). Default 32.
	Concurrency int
	// Duration of the measured part; Warmup runs before it unmeasured.
	Duration time.Duration
	Warmup   time.Duration
	// Rate, when above zero, makes the run open-loop: requests are sent on a
	// fixed schedule of Rate per second across the connections, and latency
	// counts from the scheduled time, so a stalled server shows up in the
	// tail instead of hiding it (no coordinated omission).
	Rate float64
}

// Result summarises a load run.
type Result struct {
	Requests  int64
	Errors    int64
	Non2xx    int64
	Elapsed   time.Duration
	Latencies Latencies
}

// RPS is the completed requests per second.
func (r Result) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// RunHTTP drives req at the server as cfg says.
func RunHTTP(ctx context.Context, req Request, cfg LoadConfig) (Result, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Second
	}
	addr, raw, err := req.wire()
	if err != nil {
		return Result{}, err
	}
	conns := make([]*conn, cfg.Concurrency)
	for i := range conns {
		c, err := dial(addr)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return Result{}, err
		}
		conns[i] = c
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var measuring atomic.Bool
	var requests, errs, non2xx atomic.Int64
	lats := make([][]time.Duration, cfg.Concurrency)
	runCtx, cancel := context.WithTimeout(ctx, cfg.Warmup+cfg.Duration)
	defer cancel()
	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.Concurrency) / cfg.Rate)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<16)
			next := start.Add(time.Duration(i) * interval / time.Duration(cfg.Concurrency))
			for runCtx.Err() == nil {
				sent := time.Now()
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						select {
						case <-runCtx.Done():
							// The run ended during the wait: a request sent
							// now would fall outside it.
							continue
						case <-time.After(d):
						}
					}
					sent = next
					next = next.Add(interval)
				}
				code, err := c.do(raw)
				done := time.Now()
				if !measuring.Load() {
					if done.After(measureFrom) {
						measuring.Store(true)
					} else {
						continue
					}
				}
				if err != nil {
					errs.Add(1)
					if c, err = dial(addr); err != nil {
						return
					}
					conns[i] = c
					continue
				}
				if code < 200 || code > 299 {
					non2xx.Add(1)
				}
				requests.Add(1)
				local = append(local, done.Sub(sent))
			}
			lats[i] = local
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	var all Latencies
	for _, l := range lats {
		all = append(all, l...)
	}
	all.sort()
	return Result{Requests: requests.Load(), Errors: errs.Load(), Non2xx: non2xx.Load(), Elapsed: elapsed, Latencies: all}, nil
}

type conn struct {
	net.Conn
	r *bufio.Reader
}

func dial(addr string) (*conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	return &conn{Conn: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

var errProto = errors.New("bench: malformed http response")

// do writes one request and reads one response, returning its status.
func (c *conn) do(raw []byte) (int, error) {
	if _, err := c.Write(raw); err != nil {
		return 0, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 {
		return 0, errProto
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, errProto
	}
	length := -1
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(h) <= 2 {
			break
		}
		if len(h) > 16 && (h[0] == 'C' || h[0] == 'c') && bytes.EqualFold(h[:15], []byte("Content-Length:")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(h[15:])))
			if err != nil {
				return 0, errProto
			}
		}
	}
	if length < 0 {
		return 0, fmt.Errorf("%w: no content-length", errProto)
	}
	if _, err := c.r.Discard(length); err != nil {
		return 0, err
	}
	return code, nil
}

// Latencies is a sorted list of durations.
type Latencies []time.Duration

func (l Latencies) sort() { sort.Slice(l, func(i, j int) bool { return l[i] < l[j] }) }

// Quantile returns the q-quantile (0..1) of a sorted list.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(q * float64(len(l)-1))
	return l[i]
}

// CPUTime returns the user+system CPU time a process has used so far, from
// /proc (Linux only).
func CPUTime(pid int) (time.Duration, error) {
	f, err := openProcStat(pid)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start past ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bench: unreadable /proc stat")
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 13 {
		return 0, errors.New("bench: short /proc stat")
	}
	ut, _ := strconv.ParseInt(string(fields[11]), 10, 64)
	st, _ := strconv.ParseInt(string(fields[12]), 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond, nil
}

func openProcStat(pid int) (io.ReadCloser, error) {
	return os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
}
