// Package console is the fleet console: an HTTP server that shows the fleet
// as `linkedge fleet` reads it (internal/fleetview), live, and lets an
// operator approve, reject, pin and unpin through the same code as the
// command line, each confirmed and written to an audit log. The pages are
// rendered on the server with html/template; one small script, embedded
// like the templates and the style sheet, keeps the table live over
// server-sent events. See docs/console.md.
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/fleetview"
)

//go:embed assets
var assets embed.FS

// Server is a running console. Close it.
type Server struct {
	cfg      Config
	users    map[string]User
	sessions *sessions
	limiter  *loginLimiter
	audit    *auditLog
	pages    map[string]*template.Template
	metrics  *metrics

	view *fleetview.View
	// gen counts changes of the view; the live pages compare it with what
	// they sent last.
	gen     atomic.Uint64
	changed chan struct{} // closed and replaced on every change
	chMu    sync.Mutex

	cacheMu  sync.Mutex
	cacheGen uint64
	cache    []Row

	hist     *history
	histDone chan struct{}

	alerts *alertLog

	streams atomic.Int64
	ln      net.Listener
	srv     *http.Server
	url     string

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// New checks the configuration and loads the users file. Start serves.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	users, err := LoadUsers(cfg.UsersFile)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, users: users, sessions: newSessions(cfg.SessionTTL), limiter: newLoginLimiter(),
		changed: make(chan struct{}), done: make(chan struct{}), hist: newHistory(), histDone: make(chan struct{}),
		alerts: newAlertLog(time.Now())}
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	if s.metrics, err = newMetrics(cfg.Metrics); err != nil {
		return nil, err
	}
	s.registerStreamsGauge()
	if cfg.Actions != nil {
		if s.audit, err = openAudit(cfg.AuditLog); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start reads the fleet from the broker and starts serving. It returns
// once both are up.
func (s *Server) Start(ctx context.Context) error {
	fc := s.cfg.Fleet
	user := fc.OnChange
	fc.OnChange = func(truck, model string) {
		s.gen.Add(1)
		s.chMu.Lock()
		close(s.changed)
		s.changed = make(chan struct{})
		s.chMu.Unlock()
		if user != nil {
			user(truck, model)
		}
	}
	forwarded := fc.OnForwarded
	fc.OnForwarded = func(truck, model string, made []time.Time) {
		// The trucks forward their alerts only, unless configured to
		// forward every prediction (docs/console.md says so).
		s.alerts.add(time.Now(), truck, made)
		if forwarded != nil {
			forwarded(truck, model, made)
		}
	}
	lost, current := fc.OnConnectionLost, fc.OnCurrent
	fc.OnConnectionLost = func(err error) {
		s.cfg.Logger.Warn("console: lost the fleet broker; the pages show what was known until it is back", "broker", fc.Broker, "err", err)
		s.gen.Add(1)
		if lost != nil {
			lost(err)
		}
	}
	fc.OnCurrent = func(since time.Time) {
		s.cfg.Logger.Info("console: the fleet broker is back; the pages are current again", "stale_since", since)
		s.gen.Add(1)
		if current != nil {
			current(since)
		}
	}
	v, err := fleetview.Open(ctx, fc)
	if err != nil {
		return err
	}
	s.view = v
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		v.Close()
		return fmt.Errorf("console: listen on %s: %w", s.cfg.Listen, err)
	}
	scheme := "http"
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			ln.Close()
			v.Close()
			return fmt.Errorf("%w: tls: %w", ErrInvalidConfig, err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	s.ln = ln
	s.url = scheme + "://" + ln.Addr().String()
	if exposed(s.cfg.Listen) && s.cfg.TLSCert == "" {
		s.cfg.Logger.Warn("console: listening beyond loopback without TLS: passwords and session cookies cross the network in the clear; give it a certificate (--tls-cert, --tls-key) or listen on 127.0.0.1 behind a TLS proxy", "listen", ln.Addr().String())
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		BaseContext: func(net.Listener) context.Context { return runCtx },
		ErrorLog:    slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug)}
	go func() {
		defer close(s.histDone)
		s.sampleLoop(runCtx, s.cfg.ChartInterval)
	}()
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("console: serve", "err", err)
		}
	}()
	s.cfg.Logger.Info("console: serving", "url", s.url, "broker", fc.Broker, "actions", s.cfg.Actions != nil)
	return nil
}

// URL is where the console serves, e.g. http://127.0.0.1:9890.
func (s *Server) URL() string { return s.url }

// Close stops serving (ending the live streams), disconnects from the
// broker and closes the audit log. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.srv != nil {
			s.stop() // ends the live streams, which Shutdown does not wait for
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.srv.Shutdown(ctx); err != nil {
				errs = append(errs, s.srv.Close())
			}
			cancel()
			<-s.done
			<-s.histDone
		}
		if s.view != nil {
			errs = append(errs, s.view.Close())
		}
		if s.audit != nil {
			errs = append(errs, s.audit.close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// rows returns every truck's row, rebuilt at most once per change however
// many pages ask.
func (s *Server) rows() []Row {
	g := s.gen.Load()
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.cache == nil || s.cacheGen != g {
		s.cache, s.cacheGen = rowsOf(s.view.Snapshot().Trucks), g
	}
	return s.cache
}

func (s *Server) changedCh() <-chan struct{} {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	return s.changed
}

type metrics struct {
	streams prometheus.GaugeFunc
	actions *prometheus.CounterVec
	logins  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "linkedge_console_actions_total",
			Help: "Operator actions through the console, by action and result (ok, failed, refused)."}, []string{"action", "result"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "linkedge_console_logins_total",
			Help: "Console logins by result (ok, failed, limited)."}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.actions, m.logins} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (s *Server) registerStreamsGauge() {
	if s.cfg.Metrics == nil {
		return
	}
	s.metrics.streams = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "linkedge_console_live_streams",
		Help: "Browser pages connected for live updates."}, func() float64 { return float64(s.streams.Load()) })
	_ = s.cfg.Metrics.Register(s.metrics.streams)
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"join": strings.Join,
		"rfc3339": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		},
	}
	base, err := template.New("").Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/part-*.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(assets, "assets/page-*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		t, err := template.Must(base.Clone()).ParseFS(assets, n)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(strings.TrimPrefix(n, "assets/page-"), ".html")
		pages[name] = t
	}
	return pages, nil
}
