package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/client"
)

var meta = &bundle.Metadata{Name: "m", Version: 1, Features: []string{"a"}}

// fakeServer answers /ping and /invocations as `linkedge serve` would for
// meta, on addr ("127.0.0.1:0" for any port), until the test ends.
func fakeServer(t *testing.T, addr string) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/invocations", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"model":"m","model_version":1,"predictions":[{"label":"neg","score":0.25}]}`))
	})
	ts := httptest.NewUnstartedServer(mux)
	ts.Listener.Close()
	ts.Listener = ln
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

// TestHealthyFollowsTheServer: a client stays healthy through fewer than
// UnhealthyAfter failed calls, turns unhealthy at that many, and is healthy
// again once its server answers at the same address, found by its own
// background ping with nobody sending a request.
func TestHealthyFollowsTheServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ts := fakeServer(t, "127.0.0.1:0")
	addr := ts.Listener.Addr().String()
	c := client.New(ts.URL, meta, "d")
	defer c.Close()
	if _, err := c.PredictOne(ctx, []float32{1}); err != nil || !c.Healthy() {
		t.Fatalf("serving: err %v, healthy %v", err, c.Healthy())
	}

	ts.Close() // the container died: nothing listens any more
	for i := 1; i <= client.UnhealthyAfter; i++ {
		_, err := c.PredictOne(ctx, []float32{1})
		if !errors.Is(err, client.ErrUnreachable) {
			t.Fatalf("call %d to a closed server: %v, want ErrUnreachable", i, err)
		}
		if want := i < client.UnhealthyAfter; c.Healthy() != want {
			t.Fatalf("after %d failed calls: healthy %v, want %v", i, !want, want)
		}
	}
	if err := c.Ping(ctx); !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("ping of a closed server: %v", err)
	}

	fakeServer(t, addr) // restarted on the same address
	deadline := time.Now().Add(5 * client.ProbeInterval)
	for !c.Healthy() {
		if time.Now().After(deadline) {
			t.Fatalf("still unhealthy %s after the server came back", 5*client.ProbeInterval)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.PredictOne(ctx, []float32{1}); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if c.Close(); c.Healthy() {
		t.Fatal("a closed client says it is healthy")
	}
}

// TestHealthyNoTraffic: with nobody calling, Healthy alone finds a
// dead server within a few probe intervals, and a caller that gives up does
// not count against the server.
func TestHealthyNoTraffic(t *testing.T) {
	ts := fakeServer(t, "127.0.0.1:0")
	c := client.New(ts.URL, meta, "d")
	defer c.Close()

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for range 2 * client.UnhealthyAfter {
		if _, err := c.PredictOne(gone, []float32{1}); err == nil || errors.Is(err, client.ErrUnreachable) {
			t.Fatalf("call with a cancelled context: %v, want a context error", err)
		}
	}
	if !c.Healthy() {
		t.Fatal("cancelled calls made the client unhealthy")
	}

	ts.Close()
	limit := time.Duration(client.UnhealthyAfter+3) * client.ProbeInterval
	deadline := time.Now().Add(limit)
	for c.Healthy() {
		if time.Now().After(deadline) {
			t.Fatalf("still healthy %s after the server went away", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
