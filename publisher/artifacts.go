package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// ArtifactPath is the URL path of a version's artifact on the artifact
// server, relative to its base URL.
func ArtifactPath(model string, version int64) string {
	return "/artifacts/" + model + "/" + strconv.FormatInt(version, 10) + "/" + localreg.ArtifactFile
}

// BaseURLDistributor is the [Distributor] of artifacts served under a fixed
// base URL with the artifact server's layout: the artifact server itself,
// or a reverse proxy or mirror in front of it. Its URLs never expire.
type BaseURLDistributor struct {
	// Base is an http(s) URL, possibly with a path prefix; a trailing slash
	// is ignored.
	Base string
}

// URL implements [Distributor].
func (d BaseURLDistributor) URL(_ context.Context, v Version) (string, time.Time, error) {
	return strings.TrimRight(d.Base, "/") + ArtifactPath(v.Model, v.Version), time.Time{}, nil
}

// ArtifactServer serves the approved artifacts of a local registry over
// HTTP, for trucks to download:
//
//	GET|HEAD /artifacts/{model}/{version}/model.tar.gz
//	GET      /healthz    200 {"status":"ok"}
//	GET      /metrics    Prometheus metrics (when a gatherer is given)
//
// Downloads resume: Range and If-Range are honoured, with the artifact's
// sha256 as a strong ETag, so a truck whose connection drops continues
// where it stopped and never splices two different files. Only approved
// versions are served; everything else is a 404 with a JSON error.
type ArtifactServer struct {
	reg  *localreg.Registry
	base string
	ln   net.Listener
	srv  *http.Server
	log  *slog.Logger
	// health, if set, is asked by /healthz: an error makes it 503.
	health atomic.Pointer[func() error]
	// sent counts artifact bytes served (linkedge_publisher_artifact_bytes_total).
	sent atomic.Int64
}

// SetHealth makes /healthz answer 503 with fn's error while fn returns one
// (a registry whose view is stale, say).
func (s *ArtifactServer) SetHealth(fn func() error) { s.health.Store(&fn) }

// NewArtifactServer binds listen (host:port; port 0 picks one) without
// serving yet; call Serve. An empty baseURL means http://{bound address}.
// reg may be nil (no artifacts, only /healthz and /metrics), and so may
// gatherer (no /metrics).
func NewArtifactServer(reg *localreg.Registry, listen, baseURL string, gatherer prometheus.Gatherer, log *slog.Logger) (*ArtifactServer, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("artifact server: %w", err)
	}
	s := &ArtifactServer{reg: reg, base: strings.TrimRight(baseURL, "/"), ln: ln, log: log}
	if s.base == "" {
		s.base = "http://" + ln.Addr().String()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/artifacts/{model}/{version}/"+localreg.ArtifactFile, s.serveArtifact)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			return
		}
		if fn := s.health.Load(); fn != nil {
			if err := (*fn)(); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "stale", "error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if gatherer != nil {
		own := prometheus.NewRegistry()
		own.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "linkedge_publisher_artifact_bytes_total",
			Help: "Bytes of artifacts the artifact server sent (bodies only).",
		}, func() float64 { return float64(s.sent.Load()) }))
		mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{gatherer, own}, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		jsonError(w, http.StatusNotFound, "no such path; artifacts are at /artifacts/{model}/{version}/model.tar.gz")
	})
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second, // GET and HEAD only: no body to wait for
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: a large artifact over a slow cellular link may
		// take long, and Range requests let a truck resume anyway.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr returns the bound address (host:port).
func (s *ArtifactServer) Addr() string { return s.ln.Addr().String() }

// BaseURL returns the base URL put into release documents.
func (s *ArtifactServer) BaseURL() string { return s.base }

// URL implements [Distributor].
func (s *ArtifactServer) URL(ctx context.Context, v Version) (string, time.Time, error) {
	return BaseURLDistributor{Base: s.base}.URL(ctx, v)
}

// Handler returns the server's HTTP handler (for tests and embedding).
func (s *ArtifactServer) Handler() http.Handler { return s.srv.Handler }

// Serve serves until Shutdown; it then returns nil.
func (s *ArtifactServer) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("artifact server: %w", err)
	}
	return nil
}

// Shutdown stops accepting, lets downloads in flight finish until ctx is
// done, then closes them. It also closes a listener never served.
func (s *ArtifactServer) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	_ = s.ln.Close() // Shutdown closes it only if Serve ran
	return err
}

func (s *ArtifactServer) serveArtifact(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	if s.reg == nil {
		jsonError(w, http.StatusNotFound, "this publisher serves no artifacts: its registry is not a local one")
		return
	}
	model, vs := r.PathValue("model"), r.PathValue("version")
	version, err := strconv.ParseInt(vs, 10, 64)
	if topics.ValidID(model) != nil || err != nil || version < 1 || strconv.FormatInt(version, 10) != vs {
		jsonError(w, http.StatusNotFound, "no such artifact")
		return
	}
	e, err := s.reg.Get(model, version)
	switch {
	case errors.Is(err, localreg.ErrNotFound):
		jsonError(w, http.StatusNotFound, fmt.Sprintf("no artifact for %s version %d", model, version))
		return
	case err != nil:
		s.log.Error("artifact lookup failed", "model", model, "version", version, "err", err)
		jsonError(w, http.StatusInternalServerError, "registry error")
		return
	case e.Status != localreg.StatusApproved:
		jsonError(w, http.StatusNotFound, fmt.Sprintf("%s version %d is not approved", model, version))
		return
	}
	f, err := os.Open(e.Path)
	if err != nil {
		s.log.Error("artifact open failed", "path", e.Path, "err", err)
		jsonError(w, http.StatusInternalServerError, "artifact unavailable")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() != e.Size {
		// Serving it would only make every truck fail its digest check.
		s.log.Error("artifact does not match its registry record", "path", e.Path, "want_size", e.Size, "err", err)
		jsonError(w, http.StatusInternalServerError, "artifact does not match its registry record")
		return
	}
	h := w.Header()
	h.Set("ETag", `"`+e.SHA256+`"`)
	h.Set("Content-Type", "application/gzip")
	// The bytes behind a version never change (the registry refuses to
	// replace a version), so caches may keep them.
	h.Set("Cache-Control", "public, max-age=86400, immutable")
	if rg := r.Header.Get("Range"); strings.Count(rg, ",") >= maxRanges {
		// A truck resumes with one range. Thousands of tiny ones would
		// make the answer many times the file (multipart headers for
		// each); a server may ignore Range, so the whole file it is.
		r.Header.Del("Range")
	}
	http.ServeContent(&countingWriter{ResponseWriter: w, n: &s.sent}, r, localreg.ArtifactFile, st.ModTime(), f)
}

// countingWriter adds the body bytes written to n.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// ReadFrom keeps net/http's sendfile path, which ServeContent takes through
// io.Copy, for the thundering herd of a fleet downloading at once.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	var k int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		k, err = rf.ReadFrom(r)
	} else {
		k, err = io.Copy(c.ResponseWriter, r)
	}
	c.n.Add(k)
	return k, err
}

// maxRanges is the most byte ranges one request may ask for.
const maxRanges = 4

// allowGet answers 405 unless r is a GET or HEAD.
func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	jsonError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use GET or HEAD")
	return false
}

func jsonError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
