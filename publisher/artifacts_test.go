package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/publisher/localreg"
)

func TestArtifactServer(t *testing.T) {
	e := newEnv(t)
	data := e.add("aps", 1, true)
	e.add("aps", 2, false)
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	etag := `"` + sha + `"`

	srv := serveArtifacts(t, e.reg, prometheus.NewRegistry())
	base := "http://" + srv.Addr()
	url := base + "/artifacts/aps/1/model.tar.gz"
	if got, _, _ := srv.URL(t.Context(), Version{Model: "aps", Version: 1}); got != url {
		t.Fatalf("URL = %s, want %s", got, url)
	}
	n := len(data)

	tests := []struct {
		name     string
		method   string
		path     string
		headers  map[string]string
		code     int
		body     []byte // nil: not checked
		length   int    // Content-Length; -1: not checked
		errorMsg string // for JSON errors
	}{
		{name: "full GET", path: "/artifacts/aps/1/model.tar.gz", code: 200, body: data, length: n},
		{name: "HEAD", method: http.MethodHead, path: "/artifacts/aps/1/model.tar.gz", code: 200, body: []byte{}, length: n},
		{name: "range start", path: "/artifacts/aps/1/model.tar.gz", headers: map[string]string{"Range": "bytes=0-99"},
			code: 206, body: data[:100], length: 100},
		{name: "range resume with matching If-Range", path: "/artifacts/aps/1/model.tar.gz",
			headers: map[string]string{"Range": "bytes=100-", "If-Range": etag}, code: 206, body: data[100:], length: n - 100},
		{name: "If-Range with another ETag sends the whole file", path: "/artifacts/aps/1/model.tar.gz",
			headers: map[string]string{"Range": "bytes=100-", "If-Range": `"` + strings.Repeat("0", 64) + `"`}, code: 200, body: data, length: n},
		{name: "If-None-Match", path: "/artifacts/aps/1/model.tar.gz", headers: map[string]string{"If-None-Match": etag}, code: 304, length: -1},
		// A10: thousands of one-byte ranges would cost many times the file;
		// more than a few get the file once instead.
		{name: "too many ranges send the whole file", path: "/artifacts/aps/1/model.tar.gz",
			headers: map[string]string{"Range": "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", 2000), ",")}, code: 200, body: data, length: n},
		{name: "unsatisfiable range", path: "/artifacts/aps/1/model.tar.gz", headers: map[string]string{"Range": fmt.Sprintf("bytes=%d-", n)}, code: 416, length: -1},
		{name: "pending version", path: "/artifacts/aps/2/model.tar.gz", code: 404, length: -1, errorMsg: "not approved"},
		{name: "unknown version", path: "/artifacts/aps/3/model.tar.gz", code: 404, length: -1, errorMsg: "no artifact"},
		{name: "non-canonical version", path: "/artifacts/aps/01/model.tar.gz", code: 404, length: -1, errorMsg: "no such artifact"},
		{name: "unknown path", path: "/nope", code: 404, length: -1, errorMsg: "no such path"},
		{name: "POST", method: http.MethodPost, path: "/artifacts/aps/1/model.tar.gz", code: 405, length: -1, errorMsg: "not allowed"},
		{name: "healthz", path: "/healthz", code: 200, body: []byte(`{"status":"ok"}` + "\n"), length: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, base+tt.path, nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.code, body)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Errorf("body is %d bytes, want %d", len(body), len(tt.body))
			}
			if tt.length >= 0 && resp.Header.Get("Content-Length") != strconv.Itoa(tt.length) {
				t.Errorf("Content-Length %q, want %d", resp.Header.Get("Content-Length"), tt.length)
			}
			if strings.HasPrefix(tt.path, "/artifacts/aps/1/") && tt.code < 300 && resp.Header.Get("ETag") != etag {
				t.Errorf("ETag %q, want %q", resp.Header.Get("ETag"), etag)
			}
			if tt.errorMsg != "" {
				var je struct{ Error string }
				if resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &je) != nil || !strings.Contains(je.Error, tt.errorMsg) {
					t.Errorf("want a JSON error mentioning %q, got %s %s", tt.errorMsg, resp.Header.Get("Content-Type"), body)
				}
			}
		})
	}

	// A rejected version stops being served.
	e.reject("aps", 1)
	get(t, url, nil, http.StatusNotFound)
}

func TestBaseURLDistributor(t *testing.T) {
	for _, base := range []string{"https://cdn.example.com/linkedge", "https://cdn.example.com/linkedge/"} {
		got, exp, err := BaseURLDistributor{Base: base}.URL(t.Context(), Version{Model: "m", Version: 12})
		if err != nil || !exp.IsZero() || got != "https://cdn.example.com/linkedge/artifacts/m/12/model.tar.gz" {
			t.Errorf("URL(%q) = %s, %v, %v", base, got, exp, err)
		}
	}
}

func TestArtifactServerMetricsEndpoint(t *testing.T) {
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	e.add("aps", 1, true)
	s := subscribe(t, b.Addr(), "aps")
	p := start(t, e.config(b.Addr()))
	s.next()
	art := get(t, "http://"+p.ArtifactAddr()+"/artifacts/aps/1/model.tar.gz", nil, 200)
	sent := fmt.Sprintf("linkedge_publisher_artifact_bytes_total %d\n", len(art))
	deadline := time.Now().Add(waitFor)
	for {
		body := get(t, "http://"+p.ArtifactAddr()+"/metrics", nil, 200)
		if bytes.Contains(body, []byte(sent)) &&
			bytes.Contains(body, []byte(`linkedge_publisher_announcements_total{model="aps"} 1`)) &&
			bytes.Contains(body, []byte(`linkedge_publisher_broker_connected 1`)) &&
			bytes.Contains(body, []byte(`linkedge_publisher_last_announce_timestamp_seconds{model="aps"}`)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics missing:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// /healthz answers 503 with the registry's reason while its view is stale
// (issue 12 #2), and 200 again once it is not.
func TestHealthzReportsStaleRegistry(t *testing.T) {
	srv := serveArtifacts(t, nil, nil)
	url := "http://" + srv.Addr() + "/healthz"
	get(t, url, nil, 200)
	var stale atomic.Pointer[error]
	srv.SetHealth(func() error {
		if e := stale.Load(); e != nil {
			return *e
		}
		return nil
	})
	get(t, url, nil, 200)
	err := fmt.Errorf("the SageMaker view is stale: aps-failure (last read 4h0m0s ago)")
	stale.Store(&err)
	if body := get(t, url, nil, 503); !bytes.Contains(body, []byte(`"status":"stale"`)) || !bytes.Contains(body, []byte("aps-failure")) {
		t.Fatalf("stale healthz: %s", body)
	}
	stale.Store(nil)
	get(t, url, nil, 200)
}

// serveArtifacts runs an artifact server on a free port until the test
// ends; its stop is bounded by waitFor.
func serveArtifacts(t *testing.T, reg *localreg.Registry, gatherer prometheus.Gatherer) *ArtifactServer {
	t.Helper()
	srv, err := NewArtifactServer(reg, "127.0.0.1:0", "", gatherer, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		// Not t.Context(): it is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(waitFor):
			t.Error("the artifact server did not stop")
		}
	})
	return srv
}
