package edgeclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/status"
)

// updater is the one goroutine that runs updates. It wakes on a new
// release, on a reconnect, and on the retry timer; each time it works out
// the target and runs the state machine towards it. Whether and when to try
// again is the machine's decision (Machine.NextTry, Machine.GivenUp); the
// updater only waits for it, and for the fleet link when bytes are missing.
func (a *Agent) updater(ctx context.Context) {
	defer a.wg.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-retry.C:
		}
		for ctx.Err() == nil {
			t, ok := a.wanted()
			if !ok {
				break
			}
			if at := a.machine.NextTry(t); at.After(time.Now()) {
				retry.Reset(time.Until(at))
				a.log.Debug("update waits before it tries again", "version", t.Version, "at", at.Format(time.RFC3339))
				break
			}
			link, cancel, online := a.whileOnline(ctx)
			if !online {
				cancel() // nothing may be downloaded; bytes on disk still install
				if !a.store.HasArtifact(t) {
					a.log.Info("update waits for the fleet link", "version", t.Version)
					break
				}
			}
			a.publishEvent(status.Event{Kind: status.EventUpdateStarted, Version: t.Version, Serial: t.Serial})
			a.mu.Lock()
			a.running, a.cancelRunning = t.Artifact.SHA256, cancel
			a.mu.Unlock()
			rec, err := a.machine.Apply(ctx, link, t)
			a.mu.Lock()
			a.running, a.cancelRunning = "", nil
			a.mu.Unlock()
			cancel()
			a.finished(t, rec, err)
			if errors.Is(err, update.ErrInterrupted) || errors.Is(err, update.ErrDeferred) {
				break // the next release, reconnect or start resumes it
			}
			if wait := time.Until(rec.RetryAt); err != nil && wait > 0 {
				// From the record in memory: if the disk refused it (full),
				// update.json does not say so and NextTry would not wait.
				retry.Reset(wait)
				break
			}
			// Committed, or failed: the next round finds nothing to do, a
			// newer target, or the time of the retry.
		}
	}
}

// wanted returns the target the truck should move to, if it is not there.
func (a *Agent) wanted() (update.Target, bool) {
	a.mu.Lock()
	r, doc := a.pinRel, a.pinDoc
	if r == nil {
		r, doc = a.fleetRel, a.fleetDoc
	}
	a.mu.Unlock()
	var t update.Target
	switch {
	case r != nil:
		tg, canary := r.TargetFor(a.cfg.Truck, a.cfg.Groups)
		t = update.Target{Model: r.Model, Serial: r.Serial, Version: tg.Version, Artifact: tg.Artifact, Runtime: tg.Runtime, Canary: canary, Document: doc}
	case a.machine.Pending() != nil:
		// An update interrupted by a restart, resumed from its record.
		t = a.machine.Pending().Target
	default:
		return t, false
	}
	a.mu.Lock()
	a.st.Desired = t.Version
	a.mu.Unlock()
	if c := a.machine.Runtime.Serving(); c != nil && t.Same(c.Spec()) {
		return t, false
	}
	if _, err := a.rts.pick(t.Runtime.Kind); err != nil {
		a.setError(fmt.Sprintf("version %d: %v; staying on the current version", t.Version, err))
		return t, false
	}
	if f, given := a.machine.GivenUp(t); given {
		a.setError(fmt.Sprintf("version %d was given up after %d failed attempts on this truck: %s; a release with another bundle or image moves the truck again", t.Version, f.Attempts, f.Reason))
		return t, false
	}
	return t, true
}

// supersede stops a download that a newer release made pointless, so the
// truck fetches what it should run now instead of finishing an old version
// first. Only the download is cut short: from staging on, the update is
// seconds from done and a cancel would cost a rollback.
func (a *Agent) supersede(sha string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cancelRunning != nil && a.running != sha && a.st.Phase == string(update.Downloading) {
		a.log.Info("a newer release supersedes the download in progress")
		a.cancelRunning()
	}
}

// whileOnline returns a context that ends when the fleet link drops, and
// whether the link is up now. Downloads run only while online; a drop
// pauses them and the next connect resumes them.
func (a *Agent) whileOnline(ctx context.Context) (context.Context, context.CancelFunc, bool) {
	a.mu.Lock()
	online, offline := a.online, a.offline
	a.mu.Unlock()
	octx, cancel := context.WithCancel(ctx)
	if !online {
		return octx, cancel, false
	}
	go func() {
		select {
		case <-offline:
			cancel()
		case <-octx.Done():
		}
	}()
	return octx, cancel, true
}

// onRecord mirrors the state machine into the status, and reports it.
func (a *Agent) onRecord(r update.Record) {
	a.mu.Lock()
	a.st.Phase = string(r.Phase)
	a.st.Desired = r.Target.Version
	a.st.Downloaded, a.st.Total = r.Downloaded, r.Total
	if r.Error != "" && r.Phase != update.Held { // a hold is no error: Status.Hold says it
		a.st.LastError = r.Error
	}
	if r.Phase == update.Probation || r.Phase == update.Committed {
		a.st.Version = r.Target.Version
	}
	if r.Phase == update.RolledBack && r.From != nil {
		a.st.Version = r.From.Version
	}
	a.mu.Unlock()
	a.publishStatus()
}

func (a *Agent) finished(t update.Target, rec update.Record, err error) {
	switch {
	case err == nil:
		a.mu.Lock()
		a.st.LastError = ""
		a.updated = time.Now()
		a.mu.Unlock()
		a.publishEvent(status.Event{Kind: status.EventUpdateCommitted, Version: t.Version, Serial: t.Serial})
	case errors.Is(err, update.ErrInterrupted), errors.Is(err, update.ErrDeferred):
		a.log.Info("update paused", "version", t.Version, "phase", rec.Phase, "reason", err)
	case errors.Is(err, update.ErrGivenUp):
		a.setError(err.Error())
	case errors.Is(err, update.ErrTransient):
		a.setError(err.Error())
		a.publishEvent(status.Event{Kind: status.EventUpdateRetrying, Version: t.Version, Serial: t.Serial, Detail: err.Error()})
	case rec.Phase == update.RolledBack:
		a.publishEvent(status.Event{Kind: status.EventRolledBack, Version: t.Version, Serial: t.Serial, Detail: err.Error()})
	default:
		a.setError(err.Error())
		a.publishEvent(status.Event{Kind: status.EventUpdateFailed, Version: t.Version, Serial: t.Serial, Detail: err.Error()})
	}
	if c := a.machine.Runtime.Serving(); c != nil {
		a.setVersion(c.Spec().Version, 0)
	}
	a.publishStatus()
}
