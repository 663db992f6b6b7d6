package bench

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

func TestRunHTTPAgainstFloor(t *testing.T) {
	srv := httptest.NewServer(FloorHandler())
	t.Cleanup(srv.Close)
	res, err := RunHTTP(context.Background(), Request{URL: srv.URL + "/invocations", ContentType: "text/csv", Body: []byte("1,2,3\n")},
		LoadConfig{Concurrency: 4, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Errors != 0 || res.Non2xx != 0 {
		t.Fatalf("requests %d, errors %d, non-2xx %d", res.Requests, res.Errors, res.Non2xx)
	}
	if int64(len(res.Latencies)) != res.Requests {
		t.Fatalf("%d latencies for %d requests", len(res.Latencies), res.Requests)
	}
	if p50, p99 := res.Latencies.Quantile(0.5), res.Latencies.Quantile(0.99); p50 <= 0 || p99 < p50 {
		t.Fatalf("p50 %s, p99 %s", p50, p99)
	}
}

func TestRunHTTPCountsFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	res, err := RunHTTP(context.Background(), Request{URL: srv.URL, Body: []byte("x")},
		LoadConfig{Concurrency: 2, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Non2xx != res.Requests {
		t.Fatalf("requests %d, non-2xx %d: every answer was a 429", res.Requests, res.Non2xx)
	}
}

func TestRunHTTPOpenLoopKeepsToItsSchedule(t *testing.T) {
	srv := httptest.NewServer(FloorHandler())
	t.Cleanup(srv.Close)
	const rate, conc = 200.0, 4
	d := 500 * time.Millisecond
	res, err := RunHTTP(context.Background(), Request{URL: srv.URL, Body: []byte("x")},
		LoadConfig{Concurrency: conc, Duration: d, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	// An open loop never sends ahead of its schedule, however fast the
	// server answers: at most one request per slot of the run, counting
	// both ends (each connection's first slot is at its start).
	if most := int64(rate*d.Seconds()) + conc; res.Requests == 0 || res.Requests > most {
		t.Fatalf("%d requests, want 1..%d", res.Requests, most)
	}
}

func TestRunHTTPMalformedAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					// No Content-Length: the generator cannot frame it.
					c.Write([]byte("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"))
				}
			}()
		}
	}()
	res, err := RunHTTP(context.Background(), Request{URL: "http://" + ln.Addr().String(), Body: []byte("x")},
		LoadConfig{Concurrency: 1, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Requests != 0 {
		t.Fatalf("errors %d, requests %d: an answer without a length is an error", res.Errors, res.Requests)
	}
}

func TestRequestWire(t *testing.T) {
	if _, _, err := (Request{URL: "https://x/"}).wire(); err == nil {
		t.Fatal("https accepted; the generator speaks plain HTTP only")
	}
	addr, raw, err := Request{URL: "http://127.0.0.1:9/invocations?a=1", ContentType: "text/csv", Body: []byte("1,2")}.wire()
	if err != nil {
		t.Fatal(err)
	}
	want := "POST /invocations?a=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Type: text/csv\r\nContent-Length: 3\r\n\r\n1,2"
	if addr != "127.0.0.1:9" || string(raw) != want {
		t.Fatalf("addr %q raw %q", addr, raw)
	}
}

func TestCPUTime(t *testing.T) {
	// Burn a little CPU so that at least one tick is counted.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	d, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 {
		t.Fatalf("cpu time %s", d)
	}
	if _, err := CPUTime(-1); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
