package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// Lifecycle errors.
var (
	ErrAlreadyRunning = errors.New("publisher: Run called twice")
	ErrClosed         = errors.New("publisher: closed")
	// ErrCloseTimeout is wrapped by the error of a Close, or of a Run
	// stopped by its context, that gave up after Config.CloseTimeout on
	// something that did not stop; the error names it. It goes on in the
	// background.
	ErrCloseTimeout = errors.New("publisher: close timed out")
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
	grants  *grantServer  // nil unless the distributor's URLs need grants
	wake    chan struct{} // poll now (the broker connection came up)

	mu       sync.Mutex
	started  bool
	isClosed bool
	closeBy  time.Time     // set by Close: when it returns at the latest
	closed   chan struct{} // closed by Close
	runDone  chan struct{} // closed when Run returns
	stopErr  error         // what Run's shutdown left behind; read after runDone

	// doing says what the poll loop is busy with, for the error of a
	// shutdown that has to leave it behind.
	doing atomic.Pointer[string]

	// reported holds, per model ("" for the registry, failuresKey for the
	// canary failures), the last problem logged, so a problem that lasts is
	// logged once and not every poll. Only the poll loop touches it.
	reported map[string]string
	// rewatched is when lostByBroker last asked for a fresh view of the
	// retained releases.
	rewatched time.Time
}

// failuresKey is the reported key of the canary failures' persistence, and
// degradedKey that of a registry answering from an older view; neither is
// a valid model id.
const (
	failuresKey = "#failures"
	degradedKey = "#degraded"
	holdsKey    = "#holds"
)

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
	if h, ok := p.reg.(interface{ Health() error }); ok {
		p.arts.SetHealth(h.Health)
	}
	var dist Distributor = p.arts
	if cfg.Distributor != nil {
		dist = cfg.Distributor
	}
	p.sess = newSession(&p.cfg, p.log, p.metrics, p.poke, p.poke)
	p.ann = &Announcer{Key: key, Distributor: dist, State: state, Sender: p.sess, TTL: cfg.ReleaseTTL, Replica: cfg.Replica,
		Logger: p.log, OnAnnounce: cfg.OnAnnounce, metrics: p.metrics}
	if gd, ok := dist.(GrantDistributor); ok && (cfg.SageMaker == nil || !cfg.SageMaker.URLsInRelease) {
		if p.grants, err = newGrantServer(key, gd, p.sess.SendGrant, p.log.With("part", "grants"), p.promReg); err != nil {
			return nil, err
		}
		p.ann.Grants = gd
		p.sess.onGrant = p.grants.offer
	}
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
// called; it then stops everything it started, within Config.CloseTimeout,
// and returns nil. It returns an error if the artifact server fails, or one
// wrapping [ErrCloseTimeout] that names what did not stop in time. It may
// be called once.
func (p *Publisher) Run(ctx context.Context) (err error) {
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
	defer cancel()
	go func() {
		select {
		case <-p.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	// The session outlives the poll loop by a moment: the failures
	// persisted last are acknowledged over it.
	sessCtx, stopSess := context.WithCancel(context.Background())
	defer stopSess()
	serveErr := make(chan error, 1)
	artsDone := make(chan struct{})
	go func() {
		defer close(artsDone)
		serveErr <- p.arts.Serve()
	}()
	sessDone := make(chan struct{})
	go func() {
		defer close(sessDone)
		p.sess.run(sessCtx)
	}()
	// The poll loop has a goroutine of its own so that the shutdown can
	// leave it behind if it is stuck (a registry call that ignores ctx).
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		var wg sync.WaitGroup
		if p.grants != nil {
			wg.Go(func() { p.grants.run(ctx) })
		}
		p.loop(ctx)
		wg.Wait()
	}()

	p.log.Info("publisher started", "registry", p.reg.Name(), "broker", p.cfg.Broker,
		"artifacts", p.arts.BaseURL(), "listen", p.arts.Addr(), "poll", p.cfg.PollInterval, "state", p.state.Path())
	select {
	case <-ctx.Done():
		p.log.Info("publisher stopping")
	case err = <-serveErr:
		cancel()
	}
	stopErr := p.shutdown(loopDone, stopSess, sessDone, artsDone)
	p.stopErr = stopErr // read by Close once runDone is closed
	return errors.Join(err, stopErr)
}

// loop polls until ctx is done.
func (p *Publisher) loop(ctx context.Context) {
	defer p.setDoing("")
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
		p.setDoing("")
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-p.wake:
		case <-notify:
		}
	}
}

// How a shutdown shares out its CloseTimeout (fractions of it): the poll
// loop has until half of it to return, persisting the last canary failures
// until five eighths, the broker connection until seven eighths; the
// artifact server lets downloads in flight run until three quarters, then
// cuts them off (trucks resume them).
const (
	stopLoopPart     = 1.0 / 2
	stopFailuresPart = 5.0 / 8
	stopArtsPart     = 3.0 / 4
	stopSessPart     = 7.0 / 8
)

// shutdown stops what Run started, giving up on each part at its share of
// the CloseTimeout, and returns an error wrapping ErrCloseTimeout that names
// the parts it gave up on, or nil.
func (p *Publisher) shutdown(loopDone <-chan struct{}, stopSess func(), sessDone, artsDone <-chan struct{}) error {
	start := time.Now()
	p.mu.Lock()
	end := p.closeBy
	p.mu.Unlock()
	if end.IsZero() {
		end = start.Add(p.cfg.CloseTimeout)
	} else {
		// Close returns at closeBy; leave it a moment to read the result.
		end = end.Add(-p.cfg.CloseTimeout / 16)
	}
	budget := end.Sub(start)
	at := func(part float64) time.Time { return start.Add(time.Duration(float64(budget) * part)) }
	var left []string

	artsStopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithDeadline(context.Background(), at(stopArtsPart))
		defer cancel()
		artsStopped <- p.arts.Shutdown(ctx)
	}()

	if waitUntil(loopDone, at(stopLoopPart)) {
		// The loop is done: persist the failures heard last while the
		// session is still up to acknowledge them.
		persisted := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithDeadline(context.Background(), at(stopFailuresPart))
			defer cancel()
			persisted <- p.persistFailures(ctx)
		}()
		select {
		case err := <-persisted:
			if err != nil {
				p.log.Warn("cannot record the last canary failures; the broker sends their events again after a restart", "err", err)
			}
		case <-time.After(time.Until(at(stopFailuresPart))):
			left = append(left, "recording the last canary failures in the state file")
		}
	} else {
		left = append(left, "the poll loop, "+p.getDoing())
	}

	stopSess()
	if !waitUntil(sessDone, at(stopSessPart)) {
		left = append(left, fmt.Sprintf("the broker connection to %s (its disconnect did not finish)", p.cfg.Broker))
	}
	select {
	case err := <-artsStopped:
		if err != nil {
			p.log.Warn("artifact server stopped; downloads in flight were cut off", "err", err)
		}
		if !waitUntil(artsDone, end) {
			left = append(left, "the artifact server on "+p.arts.Addr())
		}
	case <-time.After(time.Until(end)):
		left = append(left, "the artifact server on "+p.arts.Addr())
	}
	if len(left) == 0 {
		return nil
	}
	err := fmt.Errorf("%w after %s; abandoned %s", ErrCloseTimeout, p.cfg.CloseTimeout, strings.Join(left, "; "))
	p.log.Error("publisher did not stop in time", "err", err)
	return err
}

// waitUntil reports whether done is closed before t.
func waitUntil(done <-chan struct{}, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

func (p *Publisher) setDoing(what string) { p.doing.Store(&what) }

func (p *Publisher) getDoing() string {
	if d := p.doing.Load(); d != nil && *d != "" {
		return *d
	}
	return "between polls"
}

// Close stops a running Run and waits for it to return, or, if Run never
// ran, releases what New opened. It returns within Config.CloseTimeout, with
// an error wrapping [ErrCloseTimeout] that names what it gave up on if
// something did not stop. It is idempotent and safe for concurrent use;
// calls after the first return nil at once.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.isClosed {
		p.mu.Unlock()
		return nil
	}
	p.isClosed = true
	p.closeBy = time.Now().Add(p.cfg.CloseTimeout)
	close(p.closed)
	started, done, closeBy := p.started, p.runDone, p.closeBy
	p.mu.Unlock()
	if started {
		select {
		case <-done:
			return nil // Run had stopped already, and said how
		default:
		}
		if !waitUntil(done, closeBy) {
			err := fmt.Errorf("%w after %s: Run did not return", ErrCloseTimeout, p.cfg.CloseTimeout)
			p.log.Error("publisher did not stop in time", "err", err)
			return err
		}
		return p.stopErr
	}
	ctx, cancel := context.WithDeadline(context.Background(), closeBy)
	defer cancel()
	if err := p.arts.Shutdown(ctx); err != nil {
		return fmt.Errorf("close artifact server: %w", err)
	}
	return nil
}

// persistFailures writes the failure events heard since the last call
// into the state file, under its lock, and then has them acknowledged to
// the broker. A failure of a version that is not the model's rollout in the
// file is not kept (it cannot halt anything) but acknowledged all the same.
func (p *Publisher) persistFailures(ctx context.Context) error {
	batch := p.sess.pendingFailures()
	if len(batch) == 0 {
		return nil
	}
	p.setDoing("recording canary failures in the state file")
	unlock, err := p.state.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := p.state.Load()
	if err != nil {
		return err
	}
	changed := false
	for _, f := range batch {
		ms := st.Models[f.mv.model]
		if ms == nil || ms.Rollout == nil || ms.Rollout.Version != f.mv.version {
			continue
		}
		ro := ms.Rollout
		if _, ok := ro.Failures[f.truck]; ok {
			continue
		}
		if len(ro.Failures) >= maxRolloutFailures {
			p.log.Warn("too many failed canary trucks to record another", "model", f.mv.model, "version", f.mv.version, "truck", f.truck, "limit", maxRolloutFailures)
			continue
		}
		if ro.Failures == nil {
			ro.Failures = map[string]string{}
		}
		ro.Failures[f.truck] = clipDetail(f.detail)
		changed = true
		p.log.Info("recorded a canary failure", "model", f.mv.model, "version", f.mv.version, "truck", f.truck, "failed_trucks", len(ro.Failures))
	}
	if changed {
		if err := p.state.save(st); err != nil {
			return err
		}
	}
	p.sess.failuresPersisted(len(batch), heldFailures(st))
	return nil
}

// heldFailures lists the failed trucks st holds, per rollout.
func heldFailures(st *State) map[modelVersion]map[string]bool {
	held := map[modelVersion]map[string]bool{}
	for m, ms := range st.Models {
		if ro := ms.Rollout; ro != nil && len(ro.Failures) > 0 {
			trucks := make(map[string]bool, len(ro.Failures))
			for t := range ro.Failures {
				trucks[t] = true
			}
			held[modelVersion{m, ro.Version}] = trucks
		}
	}
	return held
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
	if err := p.persistFailures(ctx); err != nil {
		if ctx.Err() != nil {
			return
		}
		p.metrics.failed(stageState)
		p.report(failuresKey, "cannot record canary failures in the state file; retrying on the next poll", "err", err)
	} else {
		p.clear(failuresKey)
	}
	p.setDoing("reading the registry " + p.reg.Name())
	vs, err := p.reg.Versions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.metrics.failed(stageRegistry)
			p.report("", "cannot read the registry; changing nothing", "registry", p.reg.Name(), "err", err)
		}
		return
	}
	// A registry that keeps answering from an older view of part of what
	// it watches (SageMaker while a group's reads fail) counts as a failed
	// registry step at every poll, as one that cannot answer at all does:
	// an alert on errors_total must not wait for /healthz to call the view
	// stale.
	if d, ok := p.reg.(interface{ Degraded() error }); ok {
		if err := d.Degraded(); err != nil {
			p.metrics.failed(stageRegistry)
			p.report(degradedKey, "the registry answers from an older view; announcing from it", "registry", p.reg.Name(), "err", err)
		} else {
			p.clear(degradedKey)
		}
	}
	if p.grants != nil {
		p.grants.setApproved(vs)
	}
	p.setDoing("reading the state file " + p.state.Path())
	st, err := p.state.Load()
	if err != nil {
		p.metrics.failed(stageState)
		p.report("", "cannot read the state file; changing nothing", "err", err)
		return
	}
	p.clear("")
	holds, err := holdsFile{p.cfg.HoldsFile}.load()
	if err != nil {
		// Promoting a rollout an operator may have halted is worse than
		// waiting: change nothing until the file is fixed.
		p.metrics.failed(stageState)
		p.report(holdsKey, "cannot read the operator holds file; changing nothing", "err", err)
		return
	}
	p.clear(holdsKey)
	p.sess.forgetSettled(st)
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
		pl, halting, note := planFor(p.cfg.Rollout, p.sess, vs, v, st.Models[m], holds.Models[m], now)
		if err := p.recordHold(ctx, m, pl.Rollout, holds.Models[m]); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.metrics.failed(stageState)
			p.report(m+"/hold", "cannot record the operator hold in the state file; retrying on the next poll", "model", m, "err", err)
		}
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
			p.log.Warn("the broker retains an older release than the last acknowledged (it lost ours, or another publisher's replaced it); announcing it again", "model", m, "version", pl.Stable.Version, "serial", last.Serial, "retained_serial", p.retainedNow(m))
			p.setDoing(fmt.Sprintf("announcing %s version %d again", m, pl.Stable.Version))
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
		p.setDoing(fmt.Sprintf("announcing %s version %d", m, v.Version))
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

// recordHold copies the operator hold the plan's rollout carries (or its
// absence) into the state file's record of the same rollout, when they
// differ, so the state says who halted it and why; it logs the change.
// A rollout resumed and promoted in the same poll has no record left to
// change (the announcement drops it), but the resumption is logged.
func (p *Publisher) recordHold(ctx context.Context, model string, planned *Rollout, hold *Hold) error {
	p.metrics.setHeld(model, planned != nil && planned.Hold != nil)
	st, err := p.state.Load()
	if err != nil {
		return err
	}
	ms := st.Models[model]
	if ms == nil || ms.Rollout == nil {
		return nil // nothing recorded yet: the announcement records the rollout
	}
	was := ms.Rollout.Hold
	if planned == nil || planned.Version != ms.Rollout.Version || planned.SHA256 != ms.Rollout.SHA256 {
		if was != nil {
			p.logResumed(model, ms.Rollout.Version, was, hold)
		}
		return nil
	}
	if sameHold(was, planned.Hold) {
		return nil
	}
	p.setDoing("recording an operator hold in the state file")
	unlock, err := p.state.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if st, err = p.state.Load(); err != nil {
		return err
	}
	ms = st.Models[model]
	if ms == nil || ms.Rollout == nil || ms.Rollout.Version != planned.Version || ms.Rollout.SHA256 != planned.SHA256 {
		return nil
	}
	ms.Rollout.Hold = planned.Hold
	if err := p.state.save(st); err != nil {
		return err
	}
	if h := planned.Hold; h != nil {
		p.note(model+"/hold", slog.LevelWarn, "rollout halted by an operator: not promoting it until it is resumed", "model", model, "version", planned.Version,
			"halted_by", h.HaltedBy, "reason", h.Reason, "halted_at", h.HaltedAt)
	} else {
		p.logResumed(model, planned.Version, was, hold)
	}
	return nil
}

// logResumed logs, once, that the operator hold of model's rollout
// of version was lifted.
func (p *Publisher) logResumed(model string, version int64, was, hold *Hold) {
	args := []any{"model", model, "version", version, "halted_by", was.HaltedBy, "reason", was.Reason}
	msg := "the operator hold of the rollout no longer applies"
	if hold != nil && hold.Version == version && !hold.Active() {
		msg = "rollout resumed by an operator"
		args = append(args, "resumed_by", hold.ResumedBy, "resumed_at", hold.ResumedAt)
	}
	p.note(model+"/hold", slog.LevelInfo, msg, args...)
}

func sameHold(a, b *Hold) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Version == b.Version && a.HaltedBy == b.HaltedBy && a.Reason == b.Reason && a.HaltedAt.Equal(b.HaltedAt) &&
		a.ResumedBy == b.ResumedBy && a.ResumedAt.Equal(b.ResumedAt)
}

// lostByBroker reports whether the broker's retained release for model is
// missing or older than the last one acknowledged.
//
// Only a view subscribed after the acknowledgement can say so for certain:
// the broker sends what it retains right behind the SUBACK. An older view
// learns of the announcement from its echo (the publisher is subscribed to
// its own release topics), which a broker busy with thousands of trucks may
// deliver seconds later; taking the wait for the echo as a loss announced
// the release again to every truck. Once the echo came, a lower serial after
// it means the broker now retains an older document: another publisher's,
// for the same plan, signed a moment before ours but sent after it;
// announcing again puts the newest document back, so the fleet converges on
// one.
//
// The live echoes alone can also mislead: the broker stores two publishers'
// documents in one order and may deliver them in the other, leaving the view
// on the newer serial while the older is retained (seen under CI load in
// TestTwoPublishers). So confirmDelay after every acknowledgement the
// publisher takes one fresh view, which reads what is retained; and if no
// echo came within echoWait, it looks again.
func (p *Publisher) lostByBroker(model string, last *Announcement) bool {
	serial, echoed, since, settled := p.sess.retainedSerial(model)
	if !settled {
		return false
	}
	fresh := since.After(last.AckedAt)
	if serial < last.Serial && (fresh || echoed >= last.Serial) {
		return true
	}
	now := time.Now()
	confirm := !fresh && p.rewatched.Before(last.AckedAt) && now.Sub(last.AckedAt) > confirmDelay
	noEcho := serial < last.Serial && now.Sub(last.AckedAt) > echoWait && now.Sub(p.rewatched) > echoWait
	if confirm || noEcho {
		p.rewatched = now
		p.sess.rewatch()
	}
	return false
}

// retainedNow is the serial the broker retains for model, as last seen.
func (p *Publisher) retainedNow(model string) int64 {
	serial, _, _, _ := p.sess.retainedSerial(model)
	return serial
}

// echoWait is how long the echo of an announcement may take before the
// publisher looks at the broker's retained release with a new
// subscription.
const echoWait = 10 * time.Second

// confirmDelay is how long after an acknowledgement the publisher takes its
// confirming view of the retained releases: long enough for a second
// publisher's document for the same approval to have landed.
const confirmDelay = time.Second

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
