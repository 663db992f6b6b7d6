package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// Lifecycle errors.
var (
	ErrAlreadyRunning = errors.New("publisher: Run called twice")
	ErrClosed         = errors.New("publisher: closed")
)

// Publisher is the publisher service: it polls a registry, announces each
// model's highest approved version as a signed release, and serves local
// artifacts. Create it with [New], start it with [Run], stop it by
// cancelling Run's context or with [Publisher.Close].
type Publisher struct {
	cfg     Config
	log     *slog.Logger
	reg     Registry
	promReg *prometheus.Registry
	metrics *metrics
	arts    *ArtifactServer
	state   *StateFile
	ann     *Announcer
	sess    *session
	wake    chan struct{} // poll now (the broker connection came up)

	mu       sync.Mutex
	started  bool
	isClosed bool
	closed   chan struct{} // closed by Close
	runDone  chan struct{} // closed when Run returns

	// reported holds, per model ("" for the registry), the last problem
	// logged, so a problem that lasts is logged once and not every poll.
	// Only Run's goroutine touches it.
	reported map[string]string
}

// New validates cfg, reads the signing key and the state file, opens the
// registry and binds the artifact server, so that configuration mistakes
// surface before Run. It does not connect to the broker; Run does.
func New(cfg Config) (*Publisher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := release.ReadPrivateKeyFile(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	state := NewStateFile(cfg.StateFile)
	if _, err := state.Load(); err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, log: cfg.Logger, state: state, reg: cfg.Registry,
		promReg: cfg.Metrics, wake: make(chan struct{}, 1), closed: make(chan struct{}),
		reported: map[string]string{}}
	if p.promReg == nil {
		p.promReg = prometheus.NewRegistry()
	}
	if p.metrics, err = newMetrics(p.promReg); err != nil {
		return nil, err
	}
	var local *localreg.Registry
	if p.reg == nil {
		lr, err := NewLocalRegistry(cfg.RegistryDir)
		if err != nil {
			return nil, err
		}
		p.reg, local = lr, lr.Reg
	}
	if p.arts, err = NewArtifactServer(local, cfg.ArtifactListen, cfg.ArtifactBaseURL, p.promReg, p.log); err != nil {
		return nil, err
	}
	var dist Distributor = p.arts
	if cfg.Distributor != nil {
		dist = cfg.Distributor
	}
	p.sess = newSession(&p.cfg, p.log, p.metrics, p.poke)
	p.ann = &Announcer{Key: key, Distributor: dist, State: state, Sender: p.sess, TTL: cfg.ReleaseTTL,
		Logger: p.log, OnAnnounce: cfg.OnAnnounce, metrics: p.metrics}
	return p, nil
}

// Metrics returns the registry the publisher's metrics are on.
func (p *Publisher) Metrics() *prometheus.Registry { return p.promReg }

// ArtifactAddr returns the artifact server's bound address (host:port).
func (p *Publisher) ArtifactAddr() string { return p.arts.Addr() }

// ArtifactBaseURL returns the base URL of artifact URLs in releases.
func (p *Publisher) ArtifactBaseURL() string { return p.arts.BaseURL() }

// StateFile returns the path of the state file.
func (p *Publisher) StateFile() string { return p.state.Path() }

// Run connects to the broker (retrying in the background), serves
// artifacts and polls the registry until ctx is cancelled or Close is
// called; it then stops everything it started and returns nil. It returns
// an error if the artifact server fails, and may be called once.
func (p *Publisher) Run(ctx context.Context) error {
	p.mu.Lock()
	switch {
	case p.isClosed:
		p.mu.Unlock()
		return ErrClosed
	case p.started:
		p.mu.Unlock()
		return ErrAlreadyRunning
	}
	p.started, p.runDone = true, make(chan struct{})
	p.mu.Unlock()
	defer close(p.runDone)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-p.closed:
			cancel()
		case <-ctx.Done():
		}
	})
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- p.arts.Serve() })
	wg.Go(func() { p.sess.run(ctx) })
	defer func() {
		cancel()
		p.shutdownArtifacts()
		wg.Wait()
	}()

	p.log.Info("publisher started", "registry", p.reg.Name(), "broker", p.cfg.Broker,
		"artifacts", p.arts.BaseURL(), "listen", p.arts.Addr(), "poll", p.cfg.PollInterval, "state", p.state.Path())
	tick := time.NewTicker(p.cfg.PollInterval)
	defer tick.Stop()
	// A registry that hears about changes (the SageMaker backend's event
	// mode) asks for a poll at once instead of waiting for the ticker.
	var notify <-chan struct{}
	if n, ok := p.reg.(interface{ Notify() <-chan struct{} }); ok {
		notify = n.Notify()
	}
	for {
		p.poll(ctx)
		select {
		case <-ctx.Done():
			p.log.Info("publisher stopping")
			return nil
		case err := <-serveErr:
			return err
		case <-tick.C:
		case <-p.wake:
		case <-notify:
		}
	}
}

// Close stops a running Run and waits for it to return, or, if Run never
// ran, releases what New opened. It is idempotent and safe for concurrent
// use; calls after the first return at once.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.isClosed {
		p.mu.Unlock()
		return nil
	}
	p.isClosed = true
	close(p.closed)
	started, done := p.started, p.runDone
	p.mu.Unlock()
	if started {
		<-done
		return nil
	}
	p.shutdownArtifacts()
	return nil
}

func (p *Publisher) shutdownArtifacts() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.arts.Shutdown(ctx); err != nil {
		p.log.Warn("artifact server shutdown", "err", err)
	}
}

// poke asks Run to poll now; it never blocks.
func (p *Publisher) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// poll reads the registry once and announces every model whose target
// (highest approved version) differs from its last acknowledged
// announcement, or whose announcement is due for re-signing. Failures are
// logged and retried on the next poll; nothing is recorded until the broker
// acknowledged it.
func (p *Publisher) poll(ctx context.Context) {
	vs, err := p.reg.Versions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.metrics.failed(stageRegistry)
			p.report("", "cannot read the registry; changing nothing", "registry", p.reg.Name(), "err", err)
		}
		return
	}
	st, err := p.state.Load()
	if err != nil {
		p.metrics.failed(stageState)
		p.report("", "cannot read the state file; changing nothing", "err", err)
		return
	}
	p.clear("")
	best, seen := targets(vs)
	models := make([]string, 0, len(seen)+len(st.Models))
	for m := range seen {
		models = append(models, m)
	}
	for m := range st.Models {
		if !seen[m] {
			models = append(models, m)
		}
	}
	slices.Sort(models)
	now := time.Now()
	for _, m := range models {
		last := announcedOf(st, m)
		v, ok := best[m]
		if !ok {
			if last != nil {
				p.report(m, "no approved version remains; announcing nothing, trucks keep what they run",
					"model", m, "announced_version", last.Version, "serial", last.Serial)
			}
			continue
		}
		pl, halting, note := planFor(p.cfg.Rollout, p.sess, vs, v, st.Models[m], now)
		if note != "" {
			level := slog.LevelInfo
			if halting {
				level = slog.LevelWarn
			}
			p.note(m, level, note, "model", m)
		}
		if pl.hold {
			continue
		}
		switch {
		case last != nil && !due(last, pl, now) && p.lostByBroker(m, last):
			// Announced and acknowledged, but the broker no longer holds it
			// (it restarted without persistence): trucks that connect now
			// would get nothing. Announce it again, under a new serial.
			p.log.Warn("the broker lost the retained release; announcing it again", "model", m, "version", pl.Stable.Version, "serial", last.Serial)
			if _, err := p.ann.AnnouncePlan(ctx, pl, Always); err != nil && ctx.Err() == nil {
				p.report(m, "re-announcement failed; retrying on the next poll", "model", m, "err", err)
			}
			continue
		case !due(last, pl, now):
			if note == "" {
				p.clear(m)
			}
			continue
		case p.sess.waitingForFirstConnect():
			p.note(m, slog.LevelInfo, "waiting for the first broker connection before announcing", "model", m, "version", v.Version)
			continue
		}
		if _, err := p.ann.AnnouncePlan(ctx, pl, IfDue); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.report(m, "announcement failed; retrying on the next poll", "model", m, "version", v.Version, "err", err)
			continue
		}
		if note == "" {
			p.clear(m)
		}
	}
}

// lostByBroker reports whether the broker's retained release for model is
// missing or older than the last one acknowledged.
func (p *Publisher) lostByBroker(model string, last *Announcement) bool {
	if time.Since(last.AckedAt) < retainedGrace {
		return false // our own retained copy may still be on its way back
	}
	serial, settled := p.sess.retainedSerial(model)
	return settled && serial < last.Serial
}

func announcedOf(st *State, model string) *Announcement {
	if ms := st.Models[model]; ms != nil {
		return ms.Announced
	}
	return nil
}

// report logs a warning unless the same one was the last logged for key.
func (p *Publisher) report(key, msg string, args ...any) {
	p.note(key, slog.LevelWarn, msg, args...)
}

// note logs at level unless the same line was the last logged for key.
func (p *Publisher) note(key string, level slog.Level, msg string, args ...any) {
	line := fmt.Sprint(append([]any{msg}, args...)...)
	if p.reported[key] == line {
		return
	}
	p.reported[key] = line
	p.log.Log(context.Background(), level, msg, args...)
}

func (p *Publisher) clear(key string) { delete(p.reported, key) }
