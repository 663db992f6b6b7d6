package publisher

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// Sender delivers one release document: retained, QoS 1. Send returns nil
// only once the broker acknowledged it (PUBACK); on any error the document
// may or may not have reached the broker.
type Sender interface {
	Send(ctx context.Context, topic string, payload []byte) error
}

// Policy says when [Announcer.Announce] publishes.
type Policy int

const (
	// IfDue publishes only if the state file shows that v's content was not
	// yet announced for its model, or that the announcement is due for
	// re-signing. The publisher's poll loop uses it.
	IfDue Policy = iota
	// Always publishes a new document (new serial), even if an identical
	// target was announced. [PublishOnce] uses it: the caller asked for an
	// announcement and a fresh acknowledgement.
	Always
)

// Announcer is the one code path by which a release document reaches the
// broker, shared by the publisher service and [PublishOnce]. Its fields are
// all required except Logger, Now and OnAnnounce.
type Announcer struct {
	// Key signs release documents.
	Key ed25519.PrivateKey
	// Distributor gives the artifact URL put in the document.
	Distributor Distributor
	// State records serials and acknowledged announcements.
	State *StateFile
	// Sender publishes and waits for the broker's acknowledgement.
	Sender Sender
	// TTL is how long a document is valid (shortened to the URL's expiry).
	TTL time.Duration
	// Grants, if set, replaces Distributor's URLs in the document with
	// Grants' stable locations and "grant": true; trucks then ask the
	// publisher service for a download URL (see [GrantDistributor]). Only
	// the service sets it: it is what answers the requests.
	Grants GrantDistributor
	// Logger receives one Info line per announcement; default slog.Default.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Replica is the publisher's replica number (see Config.Replica): its
	// serials end in it modulo MaxReplicas.
	Replica int
	// OnAnnounce, if set, is called after each acknowledged announcement,
	// on the announcing goroutine (keep it quick).
	OnAnnounce func(model string, version int64, serial int64)

	metrics *metrics
}

// Plan is what one release document announces: a stable target for every
// truck and, during a staged rollout, a canary target for some of them.
type Plan struct {
	Stable Version
	// Canary, when set, is run by the trucks in Groups and by Percent of the
	// others (see release.Release.TargetFor).
	Canary  *Version
	Percent int
	Groups  []string
	// Truck makes the document a pin for that one truck (see [Pin]); only
	// with Stable alone.
	Truck string
	// Rollout is recorded in the state file with the announcement, in the
	// same write: the staged rollout the document belongs to (running, or
	// halted with the canary withdrawn), or nil when none.
	Rollout *Rollout

	// hold, set by the rollout planning, means announce nothing.
	hold bool
}

// Announce announces v as the stable target, with no canary: see
// [Announcer.AnnouncePlan].
func (a *Announcer) Announce(ctx context.Context, v Version, p Policy) (*release.Release, error) {
	return a.AnnouncePlan(ctx, Plan{Stable: v}, p)
}

// AnnouncePlan signs a release document for pl, publishes it retained with
// QoS 1 to topics.ModelRelease(model), waits for the broker's
// acknowledgement and only then records it (and pl.Rollout) in the state
// file. It returns the document announced, or nil and nil when p is IfDue
// and nothing is due.
//
// Serials follow one rule: serial = max(highest serial ever signed for the
// model + 1, Unix milliseconds now), rounded up to end in the publisher's
// replica number modulo MaxReplicas. The highest serial is recorded before
// the document is sent, so neither a crash, nor a restart, nor a second
// publisher (which starts from the clock and has a replica number of its
// own) ever reuses one. The whole call
// holds the state file's lock, so concurrent announcers take turns.
func (a *Announcer) AnnouncePlan(ctx context.Context, pl Plan, p Policy) (*release.Release, error) {
	v := pl.Stable
	for _, t := range []*Version{&pl.Stable, pl.Canary} {
		if t != nil && t.Status != StatusApproved {
			return nil, fmt.Errorf("%w: %s version %d is %s", ErrNotApproved, t.Model, t.Version, t.Status)
		}
	}
	if pl.Canary != nil && pl.Canary.Model != v.Model {
		return nil, fmt.Errorf("publisher: canary of model %s in a release of %s", pl.Canary.Model, v.Model)
	}
	unlock, err := a.State.lock(ctx)
	if err != nil {
		a.metrics.failed(stageState)
		return nil, err
	}
	defer unlock()
	st, err := a.State.Load()
	if err != nil {
		a.metrics.failed(stageState)
		return nil, err
	}
	now := a.now()
	ms := st.entry(v.Model)
	if p == IfDue && !due(ms.Announced, pl, now) {
		return nil, nil
	}
	rel, doc, err := a.sign(ctx, pl, ms.SignedSerial, now)
	if err != nil {
		return nil, err
	}
	ms.SignedSerial = rel.Serial
	if err := a.State.save(st); err != nil {
		a.metrics.failed(stageState)
		return nil, err
	}
	if err := a.Sender.Send(ctx, topics.ModelRelease(v.Model), doc); err != nil {
		a.metrics.failed(stagePublish)
		// No serial in the message: the poll loop logs a lasting failure
		// once, by comparing messages.
		return nil, fmt.Errorf("announce %s version %d: %w", v.Model, v.Version, err)
	}
	acked := a.now()
	ms.Announced = &Announcement{
		Version: v.Version, Serial: rel.Serial, SHA256: v.Artifact.SHA256, Size: v.Artifact.Size,
		URL: rel.Stable.Artifact.URL, Runtime: v.Runtime,
		IssuedAt: rel.IssuedAt, ExpiresAt: rel.ExpiresAt, AckedAt: acked.UTC(),
	}
	if c := pl.Canary; c != nil {
		ms.Announced.Canary = &CanaryAnnouncement{Version: c.Version, SHA256: c.Artifact.SHA256, Size: c.Artifact.Size,
			Runtime: c.Runtime, Percent: pl.Percent, Groups: pl.Groups}
	}
	newlyHalted := pl.Rollout.Halted() && !ms.Rollout.Halted()
	ms.Rollout = withRecordedFailures(pl.Rollout, ms.Rollout)
	if ro := ms.Rollout; ro != nil && pl.Canary != nil && ro.StartedAt.IsZero() {
		ro.StartedAt = acked.UTC() // the soak counts from the first canary the broker has
	}
	if err := a.State.save(st); err != nil {
		// The broker has the document; only our memory of it failed. The
		// next poll re-announces with a higher serial, which is harmless.
		a.metrics.failed(stageState)
		return rel, fmt.Errorf("%s version %d (serial %d) was announced but not recorded: %w", v.Model, v.Version, rel.Serial, err)
	}
	var canary int64
	if pl.Canary != nil {
		canary = pl.Canary.Version
	}
	a.metrics.announced(v.Model, v.Version, canary, float64(acked.UnixNano())/1e9)
	if newlyHalted {
		a.metrics.rolloutHalted(v.Model)
	}
	args := []any{"model", v.Model, "version", v.Version, "serial", rel.Serial,
		"sha256", v.Artifact.SHA256, "url", withoutQuery(rel.Stable.Artifact.URL), "expires_at", rel.ExpiresAt}
	if c := pl.Canary; c != nil {
		args = append(args, "canary_version", c.Version, "canary_percent", pl.Percent, "canary_groups", pl.Groups)
	}
	a.logger().Info("announced release", args...)
	if a.OnAnnounce != nil {
		a.OnAnnounce(v.Model, v.Version, rel.Serial)
	}
	return rel, nil
}

// withRecordedFailures returns planned, the rollout a plan records, with
// the failures the state file holds for the same rollout added: the plan
// was made from an earlier read of the file, and failures persisted since
// must not be lost by writing it back.
func withRecordedFailures(planned, recorded *Rollout) *Rollout {
	if planned == nil || recorded == nil || len(recorded.Failures) == 0 ||
		planned.Version != recorded.Version || planned.SHA256 != recorded.SHA256 {
		return planned
	}
	merged := *planned
	merged.Failures = make(map[string]string, len(planned.Failures)+len(recorded.Failures))
	maps.Copy(merged.Failures, recorded.Failures)
	maps.Copy(merged.Failures, planned.Failures)
	for len(merged.Failures) > maxRolloutFailures { // only if both were full
		for t := range merged.Failures {
			delete(merged.Failures, t)
			break
		}
	}
	return &merged
}

// target builds a document target for v with a fresh download URL, and
// returns when that URL stops working (zero: never).
func (a *Announcer) target(ctx context.Context, v Version) (release.Target, time.Time, error) {
	if a.Grants != nil {
		url, err := a.Grants.StableURL(ctx, v)
		if err != nil {
			a.metrics.failed(stageURL)
			return release.Target{}, time.Time{}, fmt.Errorf("artifact location for %s version %d: %w", v.Model, v.Version, err)
		}
		return release.Target{
			Version: v.Version,
			Artifact: release.Artifact{
				URL: url, SHA256: v.Artifact.SHA256, Size: v.Artifact.Size, MediaType: release.MediaTypeBundle, Grant: true,
			},
			Runtime: v.Runtime,
			Source:  v.Source,
		}, time.Time{}, nil
	}
	url, urlExpires, err := a.Distributor.URL(ctx, v)
	if err != nil {
		a.metrics.failed(stageURL)
		return release.Target{}, time.Time{}, fmt.Errorf("artifact url for %s version %d: %w", v.Model, v.Version, err)
	}
	return release.Target{
		Version: v.Version,
		Artifact: release.Artifact{
			URL: url, SHA256: v.Artifact.SHA256, Size: v.Artifact.Size, MediaType: release.MediaTypeBundle,
		},
		Runtime: v.Runtime,
		Source:  v.Source,
	}, urlExpires, nil
}

// sign builds and signs the document for pl, with a serial above last. The
// document expires no later than its earliest URL.
func (a *Announcer) sign(ctx context.Context, pl Plan, last int64, now time.Time) (*release.Release, []byte, error) {
	v := pl.Stable
	issued := now.UTC().Truncate(time.Millisecond)
	expires := issued.Add(a.TTL)
	stable, urlExpires, err := a.target(ctx, v)
	if err != nil {
		return nil, nil, err
	}
	if !urlExpires.IsZero() && urlExpires.Before(expires) {
		expires = urlExpires.UTC()
	}
	rel := &release.Release{
		Schema:    release.Schema,
		Model:     v.Model,
		Serial:    nextSerial(last, now, a.Replica),
		IssuedAt:  issued,
		ExpiresAt: expires,
		Stable:    stable,
		Truck:     pl.Truck,
	}
	if c := pl.Canary; c != nil {
		t, cExpires, err := a.target(ctx, *c)
		if err != nil {
			return nil, nil, err
		}
		if !cExpires.IsZero() && cExpires.Before(expires) {
			expires, urlExpires = cExpires.UTC(), cExpires
		}
		rel.ExpiresAt = expires
		rel.Canary = &release.Canary{Target: t, Percent: pl.Percent, Groups: pl.Groups}
	}
	if !expires.After(issued) {
		a.metrics.failed(stageURL)
		return nil, nil, fmt.Errorf("artifact url for %s version %d expires at %s, before the document would be issued", v.Model, v.Version, urlExpires)
	}
	doc, err := release.Sign(rel, a.Key)
	if err != nil {
		a.metrics.failed(stageSign)
		return nil, nil, fmt.Errorf("sign %s version %d: %w", v.Model, v.Version, err)
	}
	return rel, doc, nil
}

// due reports whether pl must be announced given the last acknowledged
// announcement: it is new content, or the announcement needs re-signing.
func due(last *Announcement, pl Plan, now time.Time) bool {
	return !last.MatchesPlan(pl) || !now.Before(last.ResignAt())
}

// MaxReplicas is how many publishers can run at once with serials that
// never collide (see Config.Replica).
const MaxReplicas = 16

// nextSerial is the serial rule; see [Announcer.AnnouncePlan]: the least
// serial above last and not below the clock that ends in replica, modulo
// MaxReplicas. Rounding up keeps serials increasing; the residue keeps two
// publishers that sign in the same millisecond apart.
func nextSerial(last int64, now time.Time, replica int) int64 {
	s := max(last+1, now.UnixMilli())
	return s + (int64(replica)-s%MaxReplicas+MaxReplicas)%MaxReplicas
}

func (a *Announcer) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Announcer) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// withoutQuery drops a URL's query for logs: a presigned URL's query is a
// credential, good until it expires.
func withoutQuery(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}
