package update

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/internal/backoff"
	"github.com/linkedge/linkedge/internal/download"
	"github.com/linkedge/linkedge/internal/release"
)

// FetchFunc downloads an artifact to dst and verifies its size and sha256;
// it resumes a partial download left by an earlier call. Its errors are
// classified by Classify; ctx is the fleet link's context, which ends when
// the link drops.
type FetchFunc func(ctx context.Context, t Target, dst string, progress func(done, total int64)) error

// Machine runs updates one at a time. It is not safe for concurrent use:
// the agent's single updater goroutine owns it. Every decision about a
// failure (resume, wait, retry, count, give up) is made here.
type Machine struct {
	Store   *Store
	Runtime runtime.Runtime
	Fetch   FetchFunc
	// VerifyRelease checks a kept release document's signature (not its
	// validity window: an offline truck must keep serving after its
	// release expired) and that it is for this truck's model. Boot uses it
	// to rebuild installed.json from the documents kept beside the
	// bundles when the file is unreadable; nil disables that.
	VerifyRelease func(doc []byte) (*release.Release, error)
	// Probation is how long a switched-to version serves before it is
	// committed; a failed request or health check in that time rolls back.
	// Default 10 s.
	Probation time.Duration
	// MaxAttempts is how many permanent failures give a target up.
	// Default 3.
	MaxAttempts int
	// MaxCrashes is how many agent deaths in a row while a target was
	// switched in (never a clean stop) count as one permanent failure: a
	// model that crashes the agent must not loop for ever. Default 5; a
	// power cut is rarely that regular.
	MaxCrashes int
	// RetryMin and RetryMax bound the jittered exponential backoff between
	// tries of a failing target. Defaults 5 s and 15 min.
	RetryMin, RetryMax time.Duration
	// MaxURLFailures is how many downloads from one artifact URL may end
	// on the source's bad answer (an HTTP error status, a wrong size or
	// sha256, a refused redirect) before the URL counts as dead: the
	// backoff above stops for it, and it is tried only every
	// DeadURLRetry, so that a hostile or dead source is not asked for
	// ever. Connection errors, stalls and a dropped link never count: a
	// truck is often offline, and must not give a good source up for it.
	// The count starts again when the URL sends bytes of the file, and a
	// newer document naming the artifact at another URL is tried at once.
	// Counts are kept in update.json. Default 8.
	MaxURLFailures int
	// DeadURLRetry is how often a dead URL is tried again (less up to a
	// tenth, so that a fleet does not come back at once), so that a source
	// that is back is found. Default 6 h.
	DeadURLRetry time.Duration
	// Hold, when set, says whether the switch must wait (the truck's
	// safety hold) and why. Downloads and checks go on; only the switch
	// waits, in phase Held, and Apply returns ErrDeferred.
	Hold func() (held bool, reason string)
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

func (m *Machine) maxAttempts() int { return cmp.Or(max(m.MaxAttempts, 0), 3) }
func (m *Machine) maxCrashes() int  { return cmp.Or(max(m.MaxCrashes, 0), 5) }
func (m *Machine) maxURLFailures() int {
	return cmp.Or(max(m.MaxURLFailures, 0), 8)
}
func (m *Machine) deadURLRetry() time.Duration {
	return cmp.Or(max(m.DeadURLRetry, 0), 6*time.Hour)
}
func (m *Machine) dead(s *Source) bool { return s.Failures >= m.maxURLFailures() }

// save writes r before the phase it names runs.
func (m *Machine) save(r *Record, p Phase) error {
	r.Phase = p
	r.UpdatedAt = m.now()
	if err := m.Store.SetRecord(*r); err != nil {
		return Mark(Transient, err)
	}
	if m.OnChange != nil {
		m.OnChange(*r)
	}
	return nil
}

// Boot brings up what serves after a start, before any network: the
// committed version, or the previous one if the committed bundle is corrupt
// or does not load. Each bundle's sha256 and size are checked against the
// release that installed it first; a corrupt one is deleted, so the next
// release downloads it again.
//
// It also settles an update a crash interrupted. installed.json is the one
// commit point: if it names the record's target, the update committed and
// stands. Otherwise a candidate that was switched in is simply not started
// again; the update resumes later at no cost, unless the agent died while
// it served MaxCrashes times in a row.
//
// It returns the spec now serving, or nil.
func (m *Machine) Boot(ctx context.Context) (*runtime.Spec, error) {
	if n, err := m.Store.SweepTemp(); err != nil {
		m.log().Warn("boot: could not remove every temporary file of an interrupted write", "removed", n, "err", err)
	} else if n > 0 {
		m.log().Info("boot: removed temporary files of interrupted writes", "count", n)
	}
	in, err := m.Store.Installed()
	if err != nil {
		m.log().Error("boot: installed.json is unreadable; rebuilding it from the signed releases kept beside the bundles", "err", err)
		in = m.rebuild()
		if err := m.Store.SetInstalled(in); err != nil {
			m.log().Error("boot: cannot rewrite installed.json", "err", err)
		}
	}
	rec, err := m.Store.Record()
	if err != nil {
		m.log().Error("boot: update.json is unreadable; forgetting the update in progress (the release starts it again)", "err", err)
		if err := m.Store.dropRecord(); err != nil {
			m.log().Error("boot: cannot remove update.json", "err", err)
		}
		rec = nil
	}
	if rec != nil && rec.Phase.afterSwitch() && in.Current != nil && SpecKey(*in.Current) == rec.Target.Key() {
		m.log().Info("boot: the update had committed before the agent stopped", "model", rec.Target.Model, "version", rec.Target.Version)
		rec.Error, rec.Class, rec.Crashes = "", "", 0
		if err := m.save(rec, Committed); err != nil {
			m.log().Error("boot: cannot record the commit in update.json", "err", err)
		}
	}

	serving, err := m.bootServe(ctx, &in)
	if err != nil {
		return nil, err
	}

	if rec != nil && rec.Phase.afterSwitch() {
		rec.Crashes++
		if rec.Crashes >= m.maxCrashes() {
			rec.Error = fmt.Sprintf("the agent died %d times in a row while version %d was switched in, before its commit", rec.Crashes, rec.Target.Version)
			rec.Class = Permanent.String()
			m.count(rec, Permanent)
			phase := Failed
			if serving != nil {
				phase = RolledBack // the committed version serves again
			}
			m.log().Error("boot: giving the version a failed attempt", "model", rec.Target.Model, "version", rec.Target.Version, "crashes", rec.Crashes)
			if err := m.save(rec, phase); err != nil {
				m.log().Error("boot: cannot record the failure", "err", err)
			}
		} else {
			rec.Error = fmt.Sprintf("the agent restarted while version %d was switched in, before its commit; the committed version serves and the update runs again", rec.Target.Version)
			rec.Class = Interrupted.String()
			m.log().Warn("boot: update interrupted after its switch; it runs again", "model", rec.Target.Model, "version", rec.Target.Version, "phase", rec.Phase)
			if err := m.save(rec, Verifying); err != nil {
				m.log().Error("boot: cannot record the interruption", "err", err)
			}
		}
	}

	// Housekeeping: bundles no one can need any more (a superseded
	// download, a version neither current nor previous).
	keep := []string{}
	for _, s := range []*runtime.Spec{in.Current, in.Previous} {
		if s != nil {
			keep = append(keep, s.SHA256)
		}
	}
	if rec != nil && !rec.Phase.Done() {
		keep = append(keep, rec.Target.Artifact.SHA256)
	}
	if err := m.Store.Prune(keep...); err != nil {
		m.log().Warn("boot: prune old artifacts", "err", err)
	}
	return serving, nil
}

// bootServe starts the first of in's versions whose bundle is intact and
// loads, and rewrites in (and installed.json) if that is not the current one.
func (m *Machine) bootServe(ctx context.Context, in *Installed) (*runtime.Spec, error) {
	var serving *runtime.Spec
	for _, spec := range []*runtime.Spec{in.Current, in.Previous} {
		if spec == nil {
			continue
		}
		if err := m.Store.VerifyArtifact(spec.SHA256, spec.Size); err != nil {
			m.log().Error("boot: installed bundle is corrupt; not serving it, and it will be downloaded again", "model", spec.Model, "version", spec.Version, "err", err)
			os.Remove(m.Store.ArtifactPath(spec.SHA256))
			continue
		}
		c, err := m.Runtime.Stage(ctx, *spec)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			m.log().Error("boot: installed model does not start; trying the previous one", "model", spec.Model, "version", spec.Version, "err", err)
			continue
		}
		if _, err := m.Runtime.Activate(ctx, c); err != nil {
			c.Close()
			return nil, err
		}
		serving = spec
		break
	}
	if serving != nil && serving != in.Current {
		// The previous version serves; the current one is gone or broken,
		// and the release that names it brings it back. Previous names
		// only a bundle that is there, so it stays empty until a commit.
		m.log().Warn("boot: serving the previous version", "model", serving.Model, "version", serving.Version)
		*in = Installed{Current: serving}
		if err := m.Store.SetInstalled(*in); err != nil {
			return serving, err
		}
	}
	return serving, nil
}

// rebuild makes installed.json again from the release documents kept beside
// the bundles: the bundles that were committed, whose document's signature
// verifies and whose bytes still have its sha256, newest commit first.
func (m *Machine) rebuild() Installed {
	if m.VerifyRelease == nil {
		return Installed{}
	}
	var specs []runtime.Spec
	for sha, k := range m.Store.keptReleases() {
		if k.CommittedAt.IsZero() {
			continue
		}
		r, err := m.VerifyRelease(k.Document)
		if err != nil {
			m.log().Warn("boot: a kept release does not verify; ignoring it", "sha256", sha, "err", err)
			continue
		}
		t, ok := targetBySHA(r, sha)
		if !ok {
			continue
		}
		if err := m.Store.VerifyArtifact(sha, t.Artifact.Size); err != nil {
			m.log().Warn("boot: a kept bundle is corrupt; ignoring it", "sha256", sha, "err", err)
			continue
		}
		specs = append(specs, runtime.Spec{Model: r.Model, Version: t.Version, SHA256: sha, Size: t.Artifact.Size,
			Bundle: m.Store.ArtifactPath(sha), Serial: r.Serial, Kind: t.Runtime.Kind, Image: t.Runtime.Image, InstalledAt: k.CommittedAt})
	}
	slices.SortFunc(specs, func(a, b runtime.Spec) int { return b.InstalledAt.Compare(a.InstalledAt) })
	var in Installed
	if len(specs) > 0 {
		in.Current = &specs[0]
	}
	if len(specs) > 1 {
		in.Previous = &specs[1]
	}
	if in.Current != nil {
		m.log().Info("boot: rebuilt installed.json from kept releases", "version", in.Current.Version, "bundles", len(specs))
	}
	return in
}

// targetBySHA finds the target of r (stable or canary) whose artifact is sha.
func targetBySHA(r *release.Release, sha string) (release.Target, bool) {
	if r.Stable.Artifact.SHA256 == sha {
		return r.Stable, true
	}
	if r.Canary != nil && r.Canary.Artifact.SHA256 == sha {
		return r.Canary.Target, true
	}
	return release.Target{}, false
}

// GivenUp reports whether t failed permanently MaxAttempts times.
func (m *Machine) GivenUp(t Target) (FailedTarget, bool) {
	f, ok := m.Store.Failed(t.Key())
	return f, ok && f.Attempts >= m.maxAttempts()
}

// NextTry is when the next try of t is due after a failure; zero when it
// is due now. A release with another serial (a re-announcement) is due now,
// unless the artifact must still be downloaded from a URL that is dead
// (see MaxURLFailures): that waits for the URL's own retry.
func (m *Machine) NextTry(t Target) time.Time {
	rec, err := m.Store.Record()
	if err != nil || rec == nil || rec.Target.Key() != t.Key() {
		return time.Time{}
	}
	var dead time.Time
	if s := rec.source(t.Artifact.URL); s != nil && m.dead(s) && !m.Store.HasArtifact(t) {
		dead = s.RetryAt
	}
	if rec.Target.Serial != t.Serial || (rec.Phase != Retrying && rec.Phase != Failed && rec.Phase != RolledBack) {
		return dead
	}
	if dead.After(rec.RetryAt) {
		return dead
	}
	return rec.RetryAt
}

// count records a failure of class c: it moves the backoff on and, for a
// permanent one, counts an attempt and gives the target up at MaxAttempts.
func (m *Machine) count(rec *Record, c Class) {
	rec.Retries++
	rec.RetryAt = m.now().Add(backoff.Nth(cmp.Or(m.RetryMin, 5*time.Second), cmp.Or(m.RetryMax, 15*time.Minute), rec.Retries))
	if c != Permanent {
		return
	}
	rec.Attempt++
	if rec.Attempt >= m.maxAttempts() {
		err := m.Store.MarkFailed(rec.Target.Key(), FailedTarget{Model: rec.Target.Model, Version: rec.Target.Version,
			Reason: rec.Error, Attempts: rec.Attempt, At: m.now()})
		if err != nil {
			m.log().Error("cannot record the version as given up", "err", err)
		}
	}
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

// Apply takes the truck to t. ctx is the agent's lifetime: staging, the
// health check, the switch, probation and the commit run on it. link is the
// fleet link's: only the download runs on it, so a link drop pauses a
// download and nothing else.
//
// It returns the record as it ended: Committed; or an error wrapping one of
// ErrInterrupted, ErrDeferred (the record stays and the next Apply resumes),
// ErrTransient (Retrying: try again at NextTry), ErrPermanent (Failed or
// RolledBack, one attempt counted) or ErrGivenUp.
func (m *Machine) Apply(ctx, link context.Context, t Target) (Record, error) {
	if f, ok := m.GivenUp(t); ok {
		return Record{Phase: Failed, Target: t, Error: f.Reason, Class: Permanent.String()},
			fmt.Errorf("%w: %s v%d failed %d times: %s", ErrGivenUp, t.Model, t.Version, f.Attempts, f.Reason)
	}
	rec, err := m.Store.Record()
	if err != nil {
		m.log().Error("update.json is unreadable; starting the update afresh", "err", err)
		rec = nil
	}
	if rec == nil || rec.Target.Key() != t.Key() || rec.Target.Model != t.Model || rec.Phase == Committed {
		rec = &Record{StartedAt: m.now()}
	} else if rec.Target.Serial != t.Serial {
		rec.Retries, rec.RetryAt = 0, time.Time{} // re-announced: start over at once
	}
	rec.Target = t
	rec.Error, rec.Class = "", ""
	rec.From = nil
	if serving := m.Runtime.Serving(); serving != nil {
		s := serving.Spec()
		rec.From = &s
	}
	return m.run(ctx, link, rec)
}

func (m *Machine) run(ctx, link context.Context, rec *Record) (Record, error) {
	t := rec.Target
	dst := m.Store.ArtifactPath(t.Artifact.SHA256)
	// Bytes already on disk are checked again: a power cut, or the disk,
	// may have changed them since they were verified.
	if m.Store.HasArtifact(t) {
		if err := m.save(rec, Verifying); err != nil {
			return m.fail(ctx, rec, err)
		}
		if err := m.Store.VerifyArtifact(t.Artifact.SHA256, t.Artifact.Size); err != nil {
			m.log().Warn("stored bundle is corrupt; downloading it again", "version", t.Version, "err", err)
			os.Remove(dst)
		}
	}
	if !m.Store.HasArtifact(t) {
		if s := rec.source(t.Artifact.URL); s != nil && m.dead(s) && m.now().Before(s.RetryAt) {
			return m.deadURL(rec, s) // not due: the source is not asked
		}
		if err := m.save(rec, Downloading); err != nil {
			return m.fail(ctx, rec, err)
		}
		last := time.Time{}
		start := int64(-1) // bytes held when the download began
		err := m.Fetch(link, t, dst, func(done, total int64) {
			if start < 0 {
				start = done
			}
			rec.Downloaded, rec.Total = done, total
			if m.OnChange != nil && time.Since(last) > 250*time.Millisecond {
				last = time.Now()
				m.OnChange(*rec)
			}
		})
		if err != nil {
			err = fmt.Errorf("download: %w", err)
			if s := m.sourceFailed(link, rec, err, start >= 0 && rec.Downloaded > start); s != nil {
				m.count(rec, Transient)
				return m.deadURL(rec, s)
			}
			return m.fail(link, rec, err)
		}
		rec.Sources = nil // the file came: no source is in doubt any more
		// Fetch verified size and digest before the file got its name.
		if err := m.save(rec, Verifying); err != nil {
			return m.fail(ctx, rec, err)
		}
	}
	if len(t.Document) > 0 {
		if err := m.Store.SetRelease(t.Artifact.SHA256, t.Document, time.Time{}); err != nil {
			m.log().Warn("cannot keep the release beside its bundle", "err", err)
		}
	}
	if held, why := m.held(); held && rec.Checked {
		return m.hold(rec, why) // checked once already: nothing to do until the hold clears
	}

	if err := m.save(rec, Staging); err != nil {
		return m.fail(ctx, rec, err)
	}
	spec := runtime.Spec{Model: t.Model, Version: t.Version, SHA256: t.Artifact.SHA256, Size: t.Artifact.Size, Bundle: dst,
		Serial: t.Serial, Kind: t.Runtime.Kind, Image: t.Runtime.Image}
	if err := m.save(rec, Starting); err != nil {
		return m.fail(ctx, rec, err)
	}
	cand, err := m.Runtime.Stage(ctx, spec)
	if err != nil {
		return m.fail(ctx, rec, fmt.Errorf("stage: %w", err))
	}
	if err := m.save(rec, HealthCheck); err != nil {
		cand.Close()
		return m.fail(ctx, rec, err)
	}
	if err := cand.Check(ctx); err != nil {
		cand.Close()
		return m.fail(ctx, rec, fmt.Errorf("health check: %w", err))
	}
	if held, why := m.held(); held {
		// Not kept staged: a hold can last hours, and a candidate holds
		// memory (or a container). Staging again after the hold costs
		// seconds.
		cand.Close()
		rec.Checked = true
		return m.hold(rec, why)
	}

	// Point of no return for the request path: from here an agent that
	// dies serves the committed version at its next start.
	if err := m.save(rec, Switching); err != nil {
		cand.Close()
		return m.fail(ctx, rec, err)
	}
	// Failures count from the switch: a request that fails while the
	// probation phase is being recorded counts too.
	base := cand.Failures()
	prev, err := m.Runtime.Activate(ctx, cand)
	if err != nil {
		cand.Close()
		return m.fail(ctx, rec, fmt.Errorf("switch: %w", err))
	}
	if err := m.save(rec, Probation); err != nil {
		return m.rollback(ctx, rec, cand, prev, err)
	}
	if err := m.probation(ctx, cand, base); err != nil {
		return m.rollback(ctx, rec, cand, prev, err)
	}

	// Commit: one atomic write of installed.json. update.json follows it,
	// but Boot trusts installed.json if a power cut falls between the two.
	old, err := m.Store.Installed()
	if err != nil {
		old = Installed{Current: rec.From}
	}
	spec.InstalledAt = m.now()
	in := Installed{Current: &spec, Previous: old.Current}
	if old.Current != nil && SpecKey(*old.Current) == SpecKey(spec) {
		in.Previous = old.Previous // the same version again: keep the real fallback
	}
	if in.Previous != nil && !m.Store.HasArtifact(Target{Artifact: release.Artifact{SHA256: in.Previous.SHA256, Size: in.Previous.Size}}) && in.Previous.Size > 0 {
		in.Previous = nil // its bundle is gone: nothing to fall back to
	}
	if err := m.Store.SetInstalled(in); err != nil {
		return m.rollback(ctx, rec, cand, prev, fmt.Errorf("commit: %w", Mark(Transient, err)))
	}
	rec.Error, rec.Class, rec.Retries, rec.RetryAt, rec.Crashes, rec.Checked = "", "", 0, time.Time{}, 0, false
	if err := m.save(rec, Committed); err != nil {
		m.log().Warn("update committed, but update.json could not say so; the next start settles it", "err", err)
	}
	if err := m.Store.SetRelease(t.Artifact.SHA256, t.Document, spec.InstalledAt); err != nil {
		m.log().Warn("cannot mark the kept release as committed", "err", err)
	}
	if err := m.Store.ClearFailed(t.Key()); err != nil {
		m.log().Warn("cannot clear the version's failure record", "err", err)
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

// sourceFailed counts a failed download against the target's URL when the
// source answered badly (download.SourceAnswered), and returns the URL's
// entry once that makes it dead. A download that got bytes of the file
// before it failed shows the source alive, so its count starts again,
// unless the failure says those bytes were wrong.
func (m *Machine) sourceFailed(link context.Context, rec *Record, err error, progressed bool) *Source {
	if Classify(link, err) == Interrupted {
		return nil
	}
	u := rec.Target.Artifact.URL
	wrong := errors.Is(err, download.ErrDigestMismatch) || errors.Is(err, download.ErrSizeMismatch) || errors.Is(err, download.ErrTooLarge)
	if s := rec.source(u); s != nil && progressed && !wrong {
		s.Failures, s.LastError, s.RetryAt = 0, "", time.Time{}
	}
	if !download.SourceAnswered(err) {
		return nil
	}
	s := rec.addSource(u)
	s.Failures++
	s.LastError = err.Error()
	if !m.dead(s) {
		return nil
	}
	d := m.deadURLRetry()
	s.RetryAt = m.now().Add(d - rand.N(d/10+1))
	return s
}

// deadURL ends a try of a target whose URL is dead: the update waits, in
// phase Retrying, for the URL's rare retry or for a newer document that
// names the artifact at another URL.
func (m *Machine) deadURL(rec *Record, s *Source) (Record, error) {
	t := rec.Target
	cause := fmt.Errorf("%w: %s answered badly %d times since it last sent bytes of the file (last: %s); it is tried again every %s, next at %s; a newer release or pin naming sha256 %s at another url is used at once",
		ErrDeadURL, redactURL(s.URL), s.Failures, s.LastError, m.deadURLRetry(), s.RetryAt.Format(time.RFC3339), t.Artifact.SHA256)
	rec.Error, rec.Class = cause.Error(), Transient.String()
	rec.RetryAt = s.RetryAt
	m.log().Warn("artifact url is dead; it is tried again only rarely", "model", t.Model, "version", t.Version,
		"url", redactURL(s.URL), "failures", s.Failures, "retry_at", s.RetryAt.Format(time.RFC3339), "last_error", s.LastError)
	if err := m.save(rec, Retrying); err != nil {
		m.log().Error("cannot record the update's state", "err", err)
	}
	return *rec, Mark(Transient, fmt.Errorf("update to %s v%d: %w", t.Model, t.Version, cause))
}

// redactURL drops what may be secret in a URL (a presigned query, user
// info) before it is logged or reported.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

func (m *Machine) held() (bool, string) {
	if m.Hold == nil {
		return false, ""
	}
	return m.Hold()
}

// hold parks the update until the safety hold clears.
func (m *Machine) hold(rec *Record, why string) (Record, error) {
	rec.Error, rec.Class = "held: "+why, Deferred.String()
	if err := m.save(rec, Held); err != nil {
		m.log().Error("cannot record the hold", "err", err)
	}
	m.log().Info("update ready; the switch waits for the safety hold", "model", rec.Target.Model, "version", rec.Target.Version, "reason", why)
	return *rec, Mark(Deferred, fmt.Errorf("update to %s v%d: switch %s", rec.Target.Model, rec.Target.Version, why))
}

// probation watches the switched-to candidate: any failed request since
// the switch (when c reported base failures), or a failed health check at
// the end, sends it back. ctx is the agent's lifetime, never the fleet
// link: only what the candidate serves judges it.
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
			return Mark(Interrupted, fmt.Errorf("the agent stopped during probation: %w", ctx.Err()))
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

// rollback puts the previous version back after the candidate served. An
// interruption (the agent stopping) is not held against the candidate: the
// update runs again after the restart.
func (m *Machine) rollback(ctx context.Context, rec *Record, cand, prev runtime.Candidate, cause error) (Record, error) {
	class := Classify(ctx, cause)
	rec.Error, rec.Class = cause.Error(), class.String()
	m.save(rec, RollingBack)
	m.log().Warn("rolling back", "model", rec.Target.Model, "version", rec.Target.Version, "class", class, "cause", cause)
	if prev != nil {
		if _, err := m.Runtime.Activate(context.WithoutCancel(ctx), prev); err != nil {
			return *rec, Mark(Transient, fmt.Errorf("roll back after %v: %w", cause, err))
		}
	}
	cand.Close()
	phase := RolledBack
	switch {
	case class == Interrupted:
		// Resumable: the bundle is verified again and staged anew.
		rec.Error = "paused: " + cause.Error()
		phase = Verifying
	case class != Permanent:
		m.count(rec, class)
		phase = Retrying
	default:
		m.count(rec, class)
		if prev == nil {
			phase = Failed // nothing served before: nothing was rolled back to
		}
	}
	if err := m.save(rec, phase); err != nil {
		m.log().Error("cannot record the rollback", "err", err)
	}
	return *rec, Mark(class, fmt.Errorf("update to %s v%d rolled back: %w", rec.Target.Model, rec.Target.Version, cause))
}

// fail ends an update that never served; the version that served before
// still does. ctx is the context the failed step ran on.
func (m *Machine) fail(ctx context.Context, rec *Record, cause error) (Record, error) {
	class := Classify(ctx, cause)
	rec.Error, rec.Class = cause.Error(), class.String()
	phase := rec.Phase
	switch class {
	case Interrupted:
		rec.Error = "paused: " + cause.Error()
		if phase.afterSwitch() || phase == "" {
			phase = Verifying
		}
	case Deferred:
		rec.Error = "waiting: " + cause.Error()
	case Transient:
		m.count(rec, class)
		phase = Retrying
		m.log().Warn("update step failed; retrying later", "model", rec.Target.Model, "version", rec.Target.Version,
			"retry_at", rec.RetryAt.Format(time.RFC3339), "err", cause)
	default:
		m.count(rec, class)
		phase = Failed
		m.log().Error("update failed; the previous version keeps serving", "model", rec.Target.Model, "version", rec.Target.Version,
			"attempt", rec.Attempt, "of", m.maxAttempts(), "err", cause)
	}
	if err := m.save(rec, phase); err != nil {
		m.log().Error("cannot record the update's state", "err", err)
	}
	return *rec, Mark(class, fmt.Errorf("update to %s v%d: %w", rec.Target.Model, rec.Target.Version, cause))
}

// Fallback replaces a serving candidate that can no longer serve (its
// container died and would not restart) with the best verified alternative:
// the previous version, or else the same bundle in process. It records the
// replacement as current in installed.json, so the release that names the
// dead target makes a normal update of it again, with its backoff, once the
// runtime can run it. It returns the spec now serving.
func (m *Machine) Fallback(ctx context.Context, dead runtime.Candidate, cause error) (*runtime.Spec, error) {
	in, err := m.Store.Installed()
	if err != nil {
		in = Installed{}
	}
	cur := dead.Spec()
	var options []runtime.Spec
	if in.Previous != nil && SpecKey(*in.Previous) != SpecKey(cur) {
		options = append(options, *in.Previous)
	}
	if cur.Kind != "" && cur.Kind != release.RuntimeInProcess {
		same := cur
		same.Kind, same.Image = release.RuntimeInProcess, ""
		options = append(options, same)
	}
	var errs []error
	for _, spec := range options {
		if err := m.Store.VerifyArtifact(spec.SHA256, spec.Size); err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := m.Runtime.Stage(ctx, spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("stage %s v%d (%s): %w", spec.Model, spec.Version, spec.Kind, err))
			continue
		}
		if err := c.Check(ctx); err != nil {
			c.Close()
			errs = append(errs, fmt.Errorf("check %s v%d (%s): %w", spec.Model, spec.Version, spec.Kind, err))
			continue
		}
		if _, err := m.Runtime.Activate(ctx, c); err != nil {
			c.Close()
			errs = append(errs, err)
			continue
		}
		dead.Close()
		spec.InstalledAt = m.now()
		next := Installed{Current: &spec}
		if in.Previous != nil && SpecKey(*in.Previous) != SpecKey(spec) {
			next.Previous = in.Previous
		}
		if err := m.Store.SetInstalled(next); err != nil {
			m.log().Error("fallback serves, but installed.json could not say so", "err", err)
		}
		m.log().Warn("serving a fallback", "model", spec.Model, "version", spec.Version, "runtime", spec.Kind,
			"instead_of", cur.Version, "instead_of_runtime", cur.Kind, "cause", cause)
		return &spec, nil
	}
	return nil, fmt.Errorf("no fallback for %s v%d: %w", cur.Model, cur.Version, errors.Join(append([]error{cause}, errs...)...))
}
