package download

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// artifact returns n pseudo-random bytes (a fixed sequence per seed) and
// their SHA-256.
func artifact(n int, seed uint64) ([]byte, string) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// testServer is an httptest server that records each request's headers
// and time, and counts the body bytes its handlers write.
type testServer struct {
	*httptest.Server
	requests atomic.Int32
	sent     atomic.Int64
	// stop is closed at cleanup, before the server is, so that handlers
	// that block (stalls) return.
	stop chan struct{}

	mu      sync.Mutex
	headers []http.Header
	times   []time.Time
}

// handlerFunc serves request number n (1-based).
type handlerFunc func(w http.ResponseWriter, r *http.Request, n int)

func newServer(t *testing.T, h handlerFunc) *testServer {
	t.Helper()
	s := &testServer{stop: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.requests.Add(1))
		s.mu.Lock()
		s.headers = append(s.headers, r.Header.Clone())
		s.times = append(s.times, time.Now())
		s.mu.Unlock()
		h(&countingWriter{ResponseWriter: w, n: &s.sent}, r, n)
	}))
	t.Cleanup(func() {
		close(s.stop)
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

// header returns the headers of request number n (1-based).
func (s *testServer) header(t *testing.T, n int) http.Header {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > len(s.headers) {
		t.Fatalf("request %d was never made (%d requests)", n, len(s.headers))
	}
	return s.headers[n-1]
}

func (s *testServer) url(path string) string { return s.URL + path }

// countingWriter counts body bytes. Unwrap lets http.ResponseController
// reach the real writer for Flush and Hijack.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// serveFile serves data with Range and If-Range support (http.ServeContent),
// under the given ETag (none if "") and modification time (none if zero).
func serveFile(w http.ResponseWriter, r *http.Request, data []byte, etag string, mod time.Time) {
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", mod, bytes.NewReader(data))
}

// dropAfter returns a writer that lets limit body bytes through, then
// flushes them and kills the connection (hijack and close): the server
// going away mid-body.
func dropAfter(w http.ResponseWriter, limit int64) http.ResponseWriter {
	return &dropWriter{ResponseWriter: w, left: limit}
}

type dropWriter struct {
	http.ResponseWriter
	left int64
}

var errDropped = errors.New("connection dropped by test")

func (d *dropWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= d.left {
		d.left -= int64(len(p))
		return d.ResponseWriter.Write(p)
	}
	n, _ := d.ResponseWriter.Write(p[:d.left])
	d.left = 0
	rc := http.NewResponseController(d.ResponseWriter)
	_ = rc.Flush()
	if conn, _, err := rc.Hijack(); err == nil {
		conn.Close()
	}
	return n, errDropped
}

func (d *dropWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// stallAfter writes the headers (Content-Length: len(data)) and the first
// k bytes, then sends nothing until the client goes away or the test ends.
func stallAfter(s *testServer, w http.ResponseWriter, r *http.Request, data []byte, k int) {
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("ETag", `"stall"`)
	w.WriteHeader(http.StatusOK)
	w.Write(data[:k])
	http.NewResponseController(w).Flush()
	select {
	case <-r.Context().Done():
	case <-s.stop:
	}
}

// opts are fast options for tests: short backoffs, the server's client,
// logs into the test's output.
func opts(t *testing.T, s *testServer) Options {
	o := Options{
		MinBackoff:   5 * time.Millisecond,
		MaxBackoff:   50 * time.Millisecond,
		StallTimeout: 10 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if s != nil {
		o.Client = s.Client()
	}
	return o
}

func dstPath(t *testing.T) string { return filepath.Join(t.TempDir(), "model.tar.gz") }

// assertFile checks that dst holds want and that no download leftovers
// remain next to it.
func assertFile(t *testing.T, dst string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatalf("read result: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("result has %d bytes and differs from the artifact (%d bytes)", len(got), len(want))
	}
	assertAbsent(t, dst+".partial", dst+".partial.json")
}

func assertAbsent(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: want absent, stat err = %v", filepath.Base(p), err)
		}
	}
}

// plantPartial leaves what an interrupted earlier process would have: the
// first k bytes of data and a sidecar for url.
func plantPartial(t *testing.T, dst string, data []byte, k int, url, sha, etag string) {
	t.Helper()
	if err := os.WriteFile(dst+".partial", data[:k], 0o644); err != nil {
		t.Fatal(err)
	}
	u, _, err := checkArgs(url, int64(len(data)), sha)
	if err != nil {
		t.Fatal(err)
	}
	meta := sidecar{Version: sidecarVersion, URL: redact(u), Size: int64(len(data)), SHA256: sha, ETag: etag}
	if err := writeSidecar(dst+".partial.json", meta); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
