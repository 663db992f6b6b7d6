// Package server is the inference HTTP front end, the same on `linkedge serve`
// (the process an inference container runs) and on the truck agent's stable
// port. It speaks two conventions at once, so that containers built for
// SageMaker and clients written for KServe/Triton both work unchanged:
//
//   - the SageMaker hosting contract: GET /ping (200 with an empty body once a
//     model is loaded, 503 before) and POST /invocations (text/csv or JSON);
//   - the Open Inference Protocol v2: /v2, /v2/health/{live,ready},
//     /v2/models/{name}[/versions/{v}][/ready|/infer];
//
// plus GET /metrics for Prometheus. Every prediction names the model and the
// version that made it, in the body and in the X-Linkedge-Model and
// X-Linkedge-Model-Version headers.
//
// The server reads its model from an inference.Slot, so the truck agent can
// swap models underneath it without failing a request.
package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkedge/linkedge/inference"
)

// Config tunes the HTTP server. The zero value takes the defaults.
type Config struct {
	// Addr is the listen address. Default "127.0.0.1:8080", the SageMaker
	// port; a container sets "0.0.0.0:8080".
	Addr string `json:"addr" yaml:"addr"`
	// MaxBodyBytes bounds a request body. Default 1 MiB (about 2,000 APS rows
	// as CSV); a larger body gets 413.
	MaxBodyBytes int64 `json:"max_body_bytes" yaml:"max_body_bytes"`
	// MaxRows bounds the rows of one request. Default 10,000.
	MaxRows int `json:"max_rows" yaml:"max_rows"`
	// ReadTimeout bounds reading one request, body included. Default 30 s:
	// a body (at most MaxBodyBytes) from an application on the truck
	// arrives in well under that, and a client trickling a byte a second
	// would otherwise hold a connection for as long as it liked.
	ReadTimeout time.Duration `json:"read_timeout" yaml:"read_timeout"`
	// ShutdownTimeout bounds how long Shutdown waits for requests in flight.
	// Default 30 s (SageMaker sends SIGKILL 30 s after SIGTERM).
	ShutdownTimeout time.Duration `json:"shutdown_timeout" yaml:"shutdown_timeout"`
	// Logger receives request errors; default slog.Default().
	Logger *slog.Logger `json:"-" yaml:"-"`
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxRows <= 0 {
		c.MaxRows = 10000
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server serves predictions from the engine in a Slot.
type Server struct {
	cfg     Config
	slot    *inference.Slot
	reg     *prometheus.Registry
	metrics *metrics
	mux     *http.ServeMux

	mu   sync.Mutex
	hs   *http.Server
	ln   net.Listener
	done chan struct{}
}

// New makes a server over slot. reg receives the server's metrics and is
// served on /metrics; nil makes a private registry.
func New(cfg Config, slot *inference.Slot, reg *prometheus.Registry) *Server {
	cfg.setDefaults()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, slot: slot, reg: reg, metrics: newMetrics(reg, slot)}
	s.mux = http.NewServeMux()
	s.routes()
	return s
}

// Handle adds a handler for pattern beside the inference API (the agent's
// hold API). Call it before Start.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the HTTP handler, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.mux }

// ObserveBatch is an inference.BatchObserver feeding the batch metrics; pass
// it to inference.NewEngine for engines this server serves.
func (s *Server) ObserveBatch(rows int, took time.Duration) {
	s.metrics.batchRows.Observe(float64(rows))
	s.metrics.batchSeconds.Observe(took.Seconds())
	s.metrics.rows.Add(float64(rows))
}

// Start binds the listen address and serves in the background until
// Shutdown. It returns once the socket accepts connections.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hs != nil {
		return errors.New("server already started")
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.hs = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: s.cfg.ReadTimeout, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn)}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("inference http server stopped", "err", err)
		}
	}()
	return nil
}

// Addr is the bound address once started, else the configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Addr
}

// Shutdown stops accepting, lets requests in flight finish (bounded by ctx
// and ShutdownTimeout) and returns. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	hs, done := s.hs, s.done
	s.mu.Unlock()
	if hs == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(ctx)
	<-done
	if err != nil {
		return fmt.Errorf("shut down inference server: %w", err)
	}
	return nil
}

func (s *Server) routes() {
	s.mux.HandleFunc("/ping", s.method("GET", "ping", s.handlePing))
	s.mux.HandleFunc("/invocations", s.method("POST", "invocations", s.handleInvocations))
	s.mux.HandleFunc("/v2", s.method("GET", "v2_server", s.handleServerMeta))
	s.mux.HandleFunc("/v2/health/live", s.method("GET", "v2_live", s.handleLive))
	s.mux.HandleFunc("/v2/health/ready", s.method("GET", "v2_ready", s.handleReady))
	for _, base := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		s.mux.HandleFunc(base, s.method("GET", "v2_model", s.handleModelMeta))
		s.mux.HandleFunc(base+"/ready", s.method("GET", "v2_model_ready", s.handleModelReady))
		s.mux.HandleFunc(base+"/infer", s.method("POST", "v2_infer", s.handleInfer))
	}
	s.mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s; see /v2 and /invocations", r.URL.Path))
	})
}

// handlerFunc returns the status it wrote, for the metrics.
type handlerFunc func(w http.ResponseWriter, r *http.Request) int

// method wraps a handler with a method check and request metrics.
func (s *Server) method(want, endpoint string, h handlerFunc) http.HandlerFunc {
	reqs := s.metrics.requests.MustCurryWith(prometheus.Labels{"endpoint": endpoint})
	dur := s.metrics.duration.WithLabelValues(endpoint)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var code int
		if r.Method != want && !(want == "GET" && r.Method == "HEAD") {
			w.Header().Set("Allow", want)
			code = writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", r.URL.Path, want, r.Method))
		} else {
			code = h(w, r)
		}
		reqs.WithLabelValues(strconv.Itoa(code)).Inc()
		dur.Observe(time.Since(start).Seconds())
	}
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBody reads at most MaxBodyBytes; the caller returns buf to bufPool.
func (s *Server) readBody(r *http.Request, buf *bytes.Buffer) (int, error) {
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes is over the limit of %d; split the request", r.ContentLength, s.cfg.MaxBodyBytes)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, s.cfg.MaxBodyBytes+1))
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	if n > s.cfg.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body is over the limit of %d bytes; split the request", s.cfg.MaxBodyBytes)
	}
	if n == 0 {
		return http.StatusBadRequest, errors.New("empty body; send at least one row")
	}
	return 0, nil
}

// mediaType returns the bare media type of a Content-Type or Accept value.
func mediaType(v string) string {
	if v == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return v
	}
	return mt
}
