package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/linkedge/linkedge/edgeclient/runtime"
)

// Sentinel errors.
var (
	// ErrInterrupted means the update stopped before it finished, because
	// the context ended (the truck went offline, or the agent stops). The
	// record stays, and the next Apply of the same target resumes it.
	ErrInterrupted = errors.New("update interrupted")
	// ErrGivenUp means the target's artifact failed before and will not be
	// tried again.
	ErrGivenUp = errors.New("artifact failed before; not retrying")
)

// FetchFunc downloads an artifact to dst and verifies its size and sha256;
// it resumes a partial download left by an earlier call. Errors that retrying
// cannot fix (digest mismatch, 404) must satisfy Permanent.
type FetchFunc func(ctx context.Context, t Target, dst string, progress func(done, total int64)) error

// Machine runs updates one at a time. It is not safe for concurrent use:
// the agent's single updater goroutine owns it.
type Machine struct {
	Store   *Store
	Runtime runtime.Runtime
	Fetch   FetchFunc
	// Permanent classifies fetch errors that retrying cannot fix.
	Permanent func(error) bool
	// Deferred classifies fetch errors that only a newer release can fix
	// (an expired presigned URL): the update pauses as if interrupted,
	// without counting an attempt, until the next release or reconnect.
	Deferred func(error) bool
	// Probation is how long a switched-to version serves before it is
	// committed; a failed request or health check in that time rolls back.
	// Default 10 s.
	Probation time.Duration
	// MaxAttempts of one target before it is given up. Default 3.
	MaxAttempts int
	// OnChange hears every record written, for status reports.
	OnChange func(Record)
	Log      *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (m *Machine) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Machine) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}

// save writes r before the phase it names runs.
func (m *Machine) save(r *Record, p Phase) error {
	r.Phase = p
	r.UpdatedAt = m.now()
	if err := m.Store.SetRecord(*r); err != nil {
		return err
	}
	if m.OnChange != nil {
		m.OnChange(*r)
	}
	return nil
}

// Boot brings up what serves after a start: the committed version, or the
// previous one if the committed one no longer loads. It also settles an
// update that a crash interrupted after its switch: that version served
// unverified-by-probation, so it counts as a failed attempt and the truck is
// back on the committed version. It returns the spec now serving, or nil.
func (m *Machine) Boot(ctx context.Context) (*runtime.Spec, error) {
	in, err := m.Store.Installed()
	if err != nil {
		return nil, err
	}
	var serving *runtime.Spec
	for _, spec := range []*runtime.Spec{in.Current, in.Previous} {
		if spec == nil {
			continue
		}
		c, err := m.Runtime.Stage(ctx, *spec)
		if err != nil {
			m.log().Error("installed model does not load; trying the previous one", "model", spec.Model, "version", spec.Version, "err", err)
			continue
		}
		if _, err := m.Runtime.Activate(ctx, c); err != nil {
			c.Close()
			return nil, err
		}
		serving = spec
		if spec != in.Current {
			in.Current, in.Previous = spec, nil
			if err := m.Store.SetInstalled(in); err != nil {
				return serving, err
			}
		}
		break
	}
	rec, err := m.Store.Record()
	if err != nil || rec == nil {
		return serving, err
	}
	if rec.Phase.afterSwitch() {
		rec.Error = fmt.Sprintf("agent restarted in phase %s before the commit; back on the committed version", rec.Phase)
		m.log().Warn("update interrupted after the switch; rolled back", "model", rec.Target.Model, "version", rec.Target.Version, "phase", rec.Phase)
		if rec.Attempt >= m.maxAttempts() {
			m.giveUp(rec)
		}
		if err := m.save(rec, RolledBack); err != nil {
			return serving, err
		}
	}
	return serving, nil
}

func (m *Machine) maxAttempts() int {
	if m.MaxAttempts > 0 {
		return m.MaxAttempts
	}
	return 3
}

// giveUp marks the target's artifact as failed for good.
func (m *Machine) giveUp(rec *Record) {
	m.Store.MarkFailed(rec.Target.Artifact.SHA256, FailedArtifact{Model: rec.Target.Model, Version: rec.Target.Version,
		Reason: rec.Error, Attempts: m.maxAttempts(), At: m.now()})
}

// Pending returns the record of an update that has not finished, so the
// agent can resume it when it is online again; nil if there is none.
func (m *Machine) Pending() *Record {
	rec, err := m.Store.Record()
	if err != nil || rec == nil || rec.Phase.Done() {
		return nil
	}
	return rec
}

// Apply takes the truck to t. It returns the record as it ended: Committed,
// Failed or RolledBack; or ErrInterrupted (the record stays, resumable) when
// ctx ends during the download or before the switch.
func (m *Machine) Apply(ctx context.Context, t Target) (Record, error) {
	if f, ok := m.Store.Failed(t.Artifact.SHA256); ok && f.Attempts >= m.maxAttempts() {
		return Record{Phase: Failed, Target: t, Error: f.Reason}, fmt.Errorf("%w: %s v%d: %s", ErrGivenUp, t.Model, t.Version, f.Reason)
	}
	rec, err := m.Store.Record()
	if err != nil {
		return Record{}, err
	}
	switch {
	case rec != nil && rec.Target.Model == t.Model && rec.Target.Artifact.SHA256 == t.Artifact.SHA256 && rec.Phase != Committed:
		// The same artifact again: resume it, or retry it, counting attempts.
		if rec.Phase.Done() {
			rec.StartedAt = m.now()
		}
	default:
		rec = &Record{Target: t, StartedAt: m.now()}
	}
	rec.Target = t
	rec.Attempt++
	rec.Error = ""
	if serving := m.Runtime.Serving(); serving != nil {
		s := serving.Spec()
		rec.From = &s
	}
	return m.run(ctx, rec)
}

func (m *Machine) run(ctx context.Context, rec *Record) (Record, error) {
	t := rec.Target
	dst := m.Store.ArtifactPath(t.Artifact.SHA256)
	// Downloading and Verifying: Fetch verifies size and digest before the
	// file gets its final name, so both phases are one call; Verifying is
	// recorded once the bytes are in, for the status.
	if err := m.save(rec, Downloading); err != nil {
		return *rec, err
	}
	last := time.Time{}
	err := m.Fetch(ctx, t, dst, func(done, total int64) {
		rec.Downloaded, rec.Total = done, total
		if m.OnChange != nil && time.Since(last) > 250*time.Millisecond {
			last = time.Now()
			m.OnChange(*rec)
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			rec.Error = "paused: " + ctx.Err().Error()
			m.save(rec, Downloading)
			return *rec, fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		if m.Deferred != nil && m.Deferred(err) {
			rec.Attempt--
			rec.Error = "waiting for a fresh release: " + err.Error()
			m.save(rec, Downloading)
			return *rec, fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		return m.fail(rec, fmt.Errorf("download: %w", err), m.Permanent != nil && m.Permanent(err))
	}
	if err := m.save(rec, Verifying); err != nil {
		return *rec, err
	}
	if st, err := os.Stat(dst); err != nil || st.Size() != t.Artifact.Size {
		return m.fail(rec, fmt.Errorf("verify: %s is missing or has the wrong size", dst), true)
	}

	if err := m.save(rec, Staging); err != nil {
		return *rec, err
	}
	spec := runtime.Spec{Model: t.Model, Version: t.Version, SHA256: t.Artifact.SHA256, Bundle: dst, Serial: t.Serial,
		Kind: t.Runtime.Kind, Image: t.Runtime.Image}
	if err := m.save(rec, Starting); err != nil {
		return *rec, err
	}
	cand, err := m.Runtime.Stage(ctx, spec)
	if err != nil {
		if ctx.Err() != nil {
			return *rec, fmt.Errorf("%w: %w", ErrInterrupted, err)
		}
		return m.fail(rec, fmt.Errorf("stage: %w", err), true)
	}
	if err := m.save(rec, HealthCheck); err != nil {
		cand.Close()
		return *rec, err
	}
	if err := cand.Check(ctx); err != nil {
		cand.Close()
		return m.fail(rec, fmt.Errorf("health check: %w", err), true)
	}

	// Point of no return for the request path: from here a crash rolls back.
	if err := m.save(rec, Switching); err != nil {
		cand.Close()
		return *rec, err
	}
	// Failures count from the switch: a request that fails while the
	// probation phase is being recorded counts too.
	base := cand.Failures()
	prev, err := m.Runtime.Activate(ctx, cand)
	if err != nil {
		cand.Close()
		return m.fail(rec, fmt.Errorf("switch: %w", err), true)
	}
	if err := m.save(rec, Probation); err != nil {
		return *rec, err
	}
	if err := m.probation(ctx, cand, base); err != nil {
		return m.rollback(ctx, rec, cand, prev, err)
	}

	// Commit: record the new version as current, then let the old one go.
	in, _ := m.Store.Installed()
	spec.InstalledAt = m.now()
	in.Previous, in.Current = in.Current, &spec
	if err := m.Store.SetInstalled(in); err != nil {
		return m.rollback(ctx, rec, cand, prev, fmt.Errorf("commit: %w", err))
	}
	if err := m.save(rec, Committed); err != nil {
		return *rec, err
	}
	if prev != nil {
		prev.Close()
	}
	keep := []string{spec.SHA256}
	if in.Previous != nil {
		keep = append(keep, in.Previous.SHA256)
	}
	if err := m.Store.Prune(keep...); err != nil {
		m.log().Warn("prune old artifacts", "err", err)
	}
	m.log().Info("update committed", "model", t.Model, "version", t.Version, "serial", t.Serial)
	return *rec, nil
}

// probation watches the switched-to candidate: any failed request since
// the switch (when c reported base failures), or a failed health check at
// the end, sends it back. It does not end early when ctx ends (the agent
// shutting down commits nothing): that is a rollback too.
func (m *Machine) probation(ctx context.Context, c runtime.Candidate, base int64) error {
	d := m.Probation
	if d <= 0 {
		d = 10 * time.Second
	}
	tick := time.NewTicker(min(d/4+1, 500*time.Millisecond))
	defer tick.Stop()
	end := time.NewTimer(d)
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted during probation: %w", ctx.Err())
		case <-tick.C:
			if n := c.Failures() - base; n > 0 {
				return fmt.Errorf("%w: %d requests failed during probation", runtime.ErrUnhealthy, n)
			}
		case <-end.C:
			if n := c.Failures() - base; n > 0 {
				return fmt.Errorf("%w: %d requests failed during probation", runtime.ErrUnhealthy, n)
			}
			return c.Check(ctx)
		}
	}
}

func (m *Machine) rollback(ctx context.Context, rec *Record, cand, prev runtime.Candidate, cause error) (Record, error) {
	rec.Error = cause.Error()
	m.save(rec, RollingBack)
	m.log().Warn("rolling back", "model", rec.Target.Model, "version", rec.Target.Version, "cause", cause)
	if prev != nil {
		if _, err := m.Runtime.Activate(context.WithoutCancel(ctx), prev); err != nil {
			return *rec, fmt.Errorf("roll back after %v: %w", cause, err)
		}
	}
	cand.Close()
	if rec.Attempt >= m.maxAttempts() || !errors.Is(cause, context.Canceled) {
		m.giveUp(rec)
	}
	if err := m.save(rec, RolledBack); err != nil {
		return *rec, err
	}
	return *rec, fmt.Errorf("update to %s v%d rolled back: %w", rec.Target.Model, rec.Target.Version, cause)
}

// fail ends an update that never served. A permanent failure marks the
// artifact so it is not fetched again; a transient one counts an attempt.
func (m *Machine) fail(rec *Record, cause error, permanent bool) (Record, error) {
	rec.Error = cause.Error()
	if permanent || rec.Attempt >= m.maxAttempts() {
		m.giveUp(rec)
		os.Remove(m.Store.ArtifactPath(rec.Target.Artifact.SHA256))
	}
	if err := m.save(rec, Failed); err != nil {
		return *rec, err
	}
	m.log().Error("update failed; the previous version keeps serving", "model", rec.Target.Model, "version", rec.Target.Version, "err", cause)
	return *rec, fmt.Errorf("update to %s v%d failed: %w", rec.Target.Model, rec.Target.Version, cause)
}
