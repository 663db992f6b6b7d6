package publisher

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// Staged rollouts.
//
// Without a rollout policy the publisher announces a newly approved version
// to every truck at once. With one ([RolloutConfig]), a version newer than
// the stable one goes first to canary trucks: the release document keeps
// the old version as its stable target and names the new one as its canary,
// for the trucks in the policy's groups and a percentage of the others. The
// publisher watches the trucks' retained status reports, and then:
//
//   - halts the rollout when HaltAfter canary trucks report that the version
//     failed (its download, checks, start or probation) or was rolled back:
//     it withdraws the canary, so trucks that took it go back to the stable
//     version and no other truck tries it. The halt is remembered; the
//     version is not tried again until a newer one is approved, or an
//     operator announces it by hand (`linkedge publish`);
//   - promotes the version to stable once Soak has passed since the first
//     canary announcement and at least MinCommitted canary trucks run it,
//     unless an operator halted it (holds.go): then the canary stays as it
//     is until the operator resumes it.
//
// A rejection, a first version or a version lower than the stable one is
// announced to every truck at once: going back must never wait.

// Rollout defaults.
const (
	DefaultRolloutSoak = time.Hour
)

// RolloutConfig is a staged rollout policy. YAML key `rollout`.
type RolloutConfig struct {
	// Percent of the trucks outside Groups that run a new version first,
	// 0 to 100, picked by a deterministic hash of model and truck id.
	Percent int `yaml:"percent"`
	// Groups whose trucks run a new version first (a truck's `groups` in
	// its config).
	Groups []string `yaml:"groups"`
	// Soak is how long the canary runs before promotion, counted from the
	// broker's acknowledgement of the first canary document. Default 1h.
	Soak time.Duration `yaml:"soak"`
	// MinCommitted is how many canary trucks must have committed the new
	// version before it is promoted. Default 1; 0 is not allowed, since a
	// canary nobody ran proves nothing.
	MinCommitted int `yaml:"min_committed"`
	// HaltAfter is how many canary trucks reporting the new version failed
	// or rolled back halt the rollout. Default 1.
	HaltAfter int `yaml:"halt_after"`
}

func (c *RolloutConfig) setDefaults() {
	if c.Soak == 0 {
		c.Soak = DefaultRolloutSoak
	}
	if c.MinCommitted == 0 {
		c.MinCommitted = 1
	}
	if c.HaltAfter == 0 {
		c.HaltAfter = 1
	}
}

func (c *RolloutConfig) validate() error {
	var problems []string
	if c.Percent < 0 || c.Percent > 100 {
		problems = append(problems, fmt.Sprintf("rollout.percent is %d; want 0 to 100", c.Percent))
	}
	if c.Percent == 0 && len(c.Groups) == 0 {
		problems = append(problems, "rollout selects no truck; set rollout.percent or rollout.groups")
	}
	for _, g := range c.Groups {
		if err := topics.ValidID(g); err != nil {
			problems = append(problems, fmt.Sprintf("rollout.groups: %q: %v", g, err))
		}
	}
	if c.Soak < 0 {
		problems = append(problems, fmt.Sprintf("rollout.soak is %s; want a positive duration", c.Soak))
	}
	if c.MinCommitted < 0 {
		problems = append(problems, fmt.Sprintf("rollout.min_committed is %d; want 1 or more", c.MinCommitted))
	}
	if c.HaltAfter < 0 {
		problems = append(problems, fmt.Sprintf("rollout.halt_after is %d; want 1 or more", c.HaltAfter))
	}
	if c.HaltAfter > maxRolloutFailures {
		problems = append(problems, fmt.Sprintf("rollout.halt_after is %d; at most %d, the failed trucks the state file keeps per rollout", c.HaltAfter, maxRolloutFailures))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Rollout is the state file's record of one staged rollout.
type Rollout struct {
	// Version and SHA256 identify the version being rolled out.
	Version int64  `json:"version"`
	SHA256  string `json:"sha256"`
	// StartedAt is when the broker acknowledged the first canary document;
	// zero until then.
	StartedAt time.Time `json:"started_at,omitzero"`
	// HaltedAt and HaltReason are set once canary trucks failed it.
	HaltedAt   time.Time `json:"halted_at,omitzero"`
	HaltReason string    `json:"halt_reason,omitempty"`
	// Failures are the trucks whose update_failed or update_rolled_back
	// event reported that this version failed, each with the error it gave
	// (clipped to maxFailureDetail bytes). The events are heard once (the
	// broker forgets them once acknowledged), so they are kept here for a
	// restarted publisher to go on counting them towards HaltAfter. A
	// truck counts once, whatever number of events it sends. At most
	// maxRolloutFailures trucks; they go with the rollout when a newer
	// version replaces it or it ends.
	Failures map[string]string `json:"failures,omitempty"`
	// Hold is the operator halt holding the rollout (see holds.go), copied
	// from the holds file so that the state says who halted it and why;
	// nil when none.
	Hold *Hold `json:"operator_hold,omitempty"`
}

// Bounds of Rollout.Failures.
const (
	// maxRolloutFailures is the most failed trucks kept per rollout, and
	// so the largest HaltAfter allowed: past it, a restart could not count
	// up to the threshold.
	maxRolloutFailures = 1000
	// maxFailureDetail is the most bytes of a truck's error kept.
	maxFailureDetail = 256
)

// Halted reports whether the rollout was halted.
func (r *Rollout) Halted() bool { return r != nil && !r.HaltedAt.IsZero() }

// CanaryHealth is what the trucks report about a canary version.
type CanaryHealth struct {
	// Committed are the trucks that run it, committed.
	Committed []string
	// Failed are the trucks whose update to it failed or was rolled back,
	// each with the error it reported.
	Failed map[string]string
	// Desired is the version each truck's last status said it targets.
	Desired map[string]int64
	// Settled is false while the view may still be filling up (the
	// subscription to the trucks' statuses is new): a promotion waits for
	// it, a halt does not.
	Settled bool
}

// HealthView gives the trucks' reports on a model version; the publisher's
// MQTT session implements it from the retained status topics.
type HealthView interface {
	CanaryHealth(model string, version int64) CanaryHealth
}

// planFor decides what to announce for model when its highest approved
// version is best, given every version the registry listed, the state's
// last announcement and rollout, the operator's hold of the model (nil if
// none) and the trucks' reports. note explains a decision worth logging (a
// halt, a wait), or is empty. An operator hold of the version being rolled
// out keeps the canary as it is: no promotion, but canary failures still
// halt it.
func planFor(cfg *RolloutConfig, health HealthView, vs []Version, best Version, ms *ModelState, hold *Hold, now time.Time) (pl Plan, halted bool, note string) {
	var last *Announcement
	var ro *Rollout
	if ms != nil {
		last, ro = ms.Announced, ms.Rollout
	}
	if cfg == nil || last == nil || best.Version <= last.Version {
		// No policy, the first version, the stable one again, or a way
		// back: every truck at once.
		return Plan{Stable: best}, false, ""
	}
	stable, ok := approvedMatching(vs, best.Model, last)
	if sameRollout := ro != nil && ro.Version == best.Version && ro.SHA256 == best.Artifact.SHA256; sameRollout && ro.Halted() && !ok {
		// The halted version must not reach everyone because the version
		// it was halted in favour of went away: hold what is announced.
		return Plan{hold: true}, false, fmt.Sprintf("the rollout of version %d was halted (%s) and version %d, the stable one, is no longer approved; announcing nothing until a newer version is approved",
			best.Version, ro.HaltReason, last.Version)
	}
	if !ok {
		return Plan{Stable: best}, false, fmt.Sprintf("version %d, the stable one, is no longer approved: announcing version %d to every truck", last.Version, best.Version)
	}
	canary := Plan{Stable: stable, Canary: &best, Percent: cfg.Percent, Groups: cfg.Groups}
	if ro == nil || ro.Version != best.Version || ro.SHA256 != best.Artifact.SHA256 {
		canary.Rollout = &Rollout{Version: best.Version, SHA256: best.Artifact.SHA256}
		return canary, false, ""
	}
	held := hold.Active() && hold.Version == ro.Version
	if held || ro.Hold != nil {
		// The state records the hold as the holds file has it now.
		r := *ro
		r.Hold = nil
		if held {
			h := *hold
			r.Hold = &h
		}
		ro = &r
	}
	canary.Rollout = ro
	if ro.Halted() {
		return Plan{Stable: stable, Rollout: ro}, false, fmt.Sprintf("the rollout of version %d was halted at %s (%s); approve a newer version, or announce it by hand with linkedge publish",
			best.Version, ro.HaltedAt.Format(time.RFC3339), ro.HaltReason)
	}
	if ro.StartedAt.IsZero() {
		return canary, false, "" // the first canary document is not acknowledged yet
	}
	h := withPersisted(health.CanaryHealth(best.Model, best.Version), ro.Failures)
	h, outside := canaryOnly(h, best.Model, best.Version, cfg)
	if len(h.Failed) >= cfg.HaltAfter {
		trucks := make([]string, 0, len(h.Failed))
		for t := range h.Failed {
			trucks = append(trucks, t)
		}
		slices.Sort(trucks)
		reason := fmt.Sprintf("%d canary truck(s) failed it: %s; %s reported: %s", len(trucks), strings.Join(trucks, ", "), trucks[0], h.Failed[trucks[0]])
		halt := *ro
		halt.HaltedAt, halt.HaltReason = now.UTC(), clipReason(reason)
		return Plan{Stable: stable, Rollout: &halt}, true, "halting the rollout of version " + fmt.Sprint(best.Version) + ": " + reason
	}
	if held {
		return canary, false, fmt.Sprintf("the rollout of version %d is halted by %s since %s (%s): the canary stays as it is and is not promoted until it is resumed (linkedge rollout resume)",
			best.Version, hold.HaltedBy, hold.HaltedAt.Format(time.RFC3339), hold.Reason)
	}
	if soakEnd := ro.StartedAt.Add(cfg.Soak); now.Before(soakEnd) {
		return canary, false, ""
	}
	if !h.Settled {
		return canary, false, ""
	}
	if len(h.Committed) < cfg.MinCommitted {
		return canary, false, fmt.Sprintf("soak of version %d is over, waiting for %d canary truck(s) to commit it (%d have)", best.Version, cfg.MinCommitted, len(h.Committed))
	}
	if len(outside) > 0 {
		// Promoting anyway; the reports are worth a line.
		return Plan{Stable: best}, false, fmt.Sprintf("ignored failure reports on version %d from trucks outside its canary: %s", best.Version, strings.Join(outside, ", "))
	}
	return Plan{Stable: best}, false, ""
}

// canaryOnly keeps the failures of trucks that are in the canary: those
// whose bucket is below the percent (the selection every truck computes,
// release.Bucket), and, with canary groups, those whose status targets the
// canary version (group membership is the truck's own setting, so its
// status is the only word on it). A truck outside the canary cannot have
// tried the version; its report is dropped, and returned, sorted.
func canaryOnly(h CanaryHealth, model string, version int64, cfg *RolloutConfig) (CanaryHealth, []string) {
	var outside []string
	kept := make(map[string]string, len(h.Failed))
	for t, detail := range h.Failed {
		if release.Bucket(model, t) < cfg.Percent || (len(cfg.Groups) > 0 && h.Desired[t] == version) {
			kept[t] = detail
		} else {
			outside = append(outside, t)
		}
	}
	slices.Sort(outside)
	h.Failed = kept
	return h, outside
}

// withPersisted adds to what the trucks report now the failures persisted
// with the rollout (heard before a restart), except those of trucks that
// have committed the version since (a retry that made it), as the session
// does with the failures it heard itself.
func withPersisted(h CanaryHealth, persisted map[string]string) CanaryHealth {
	if len(persisted) == 0 {
		return h
	}
	committed := make(map[string]bool, len(h.Committed))
	for _, t := range h.Committed {
		committed[t] = true
	}
	failed := make(map[string]string, len(h.Failed)+len(persisted))
	maps.Copy(failed, h.Failed)
	for t, detail := range persisted {
		if _, ok := failed[t]; !ok && !committed[t] {
			failed[t] = detail
		}
	}
	h.Failed = failed
	return h
}

// clipDetail shortens a truck's error to maxFailureDetail bytes, on a rune
// boundary.
func clipDetail(s string) string {
	if len(s) <= maxFailureDetail {
		return s
	}
	const ellipsis = "…"
	n := maxFailureDetail - len(ellipsis)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ellipsis
}

// approvedMatching finds, among the approved versions of model, the one the
// announcement a names as stable, with the same content.
func approvedMatching(vs []Version, model string, a *Announcement) (Version, bool) {
	for _, v := range vs {
		if v.Model == model && v.Status == StatusApproved && a.Matches(v) {
			return v, true
		}
	}
	return Version{}, false
}

func clipReason(s string) string {
	const max = 512
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
