// Package update is the truck's update state machine: the one place that
// decides how a model version goes from "announced" to "serving".
//
//	Idle → Downloading → Verifying → Staging → Starting → HealthCheck →
//	Switching → Probation → Committed
//
// and, from any step after Switching: → RollingBack → Committed(previous).
// A failure before Switching changes nothing that serves: the update ends
// as Failed and the previous version keeps serving.
//
// The record of where an update stands is written atomically before each
// step runs (see Store), so a power cut at any point either resumes (before
// the switch: the download resumes, staging starts over) or rolls back (after
// the switch, before the commit: the agent boots the committed version and
// the interrupted version counts as one failed attempt). The truck never
// serves a version that was not verified and health-checked, and never loses
// the one that was committed. The names of the phases are part of the status
// protocol: append, never rename.
package update

import (
	"slices"
	"time"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/internal/release"
)

// Phase is one step of an update.
type Phase string

// The phases, in order. These strings appear in the truck's status.
const (
	Idle        Phase = "idle"
	Downloading Phase = "downloading"
	Verifying   Phase = "verifying"
	Staging     Phase = "staging"
	Starting    Phase = "starting"
	HealthCheck Phase = "health_check"
	Switching   Phase = "switching"
	Probation   Phase = "probation"
	Committed   Phase = "committed"
	RollingBack Phase = "rolling_back"
	// Failed ends an update that never served: the previous version serves.
	Failed Phase = "failed"
	// RolledBack ends an update that served and was taken back; the
	// previous version serves.
	RolledBack Phase = "rolled_back"
	// Retrying: a step failed for a reason that may pass (see Transient);
	// the version is not at fault and the update runs again at RetryAt.
	Retrying Phase = "retrying"
	// Held: the candidate is downloaded, verified and passed its health
	// check, and the switch waits for the truck's safety hold (package
	// hold) to clear.
	Held Phase = "held"
)

// Done reports whether p ends an update.
func (p Phase) Done() bool {
	return p == Idle || p == Committed || p == Failed || p == RolledBack
}

// afterSwitch reports whether the candidate may have served in phase p, so
// that an interrupted update must roll back rather than resume.
func (p Phase) afterSwitch() bool {
	return p == Switching || p == Probation || p == RollingBack
}

// Target is what an update installs: one release target for one model.
type Target struct {
	Model    string           `json:"model"`
	Serial   int64            `json:"serial"`
	Version  int64            `json:"version"`
	Artifact release.Artifact `json:"artifact"`
	Runtime  release.Runtime  `json:"runtime"`
	Canary   bool             `json:"canary,omitempty"`
	// Document is the signed release document that named this target, as
	// received. The machine keeps it beside the bundle, so the truck's
	// state can be rebuilt from signed facts. Not in update.json.
	Document []byte `json:"-"`
}

// Key names the target in failed.json: the bundle and how it runs. A
// version given up in one container image is tried again in another.
func (t Target) Key() string {
	return specKey(t.Artifact.SHA256, t.Runtime.Kind, t.Runtime.Image)
}

func specKey(sha, kind, image string) string {
	if kind == "" {
		kind = release.RuntimeInProcess
	}
	if image == "" {
		return sha + "/" + kind
	}
	return sha + "/" + kind + "/" + image
}

// SpecKey is Key for an installed spec.
func SpecKey(s runtime.Spec) string { return specKey(s.SHA256, s.Kind, s.Image) }

// Same reports whether t and spec are the same version of the same bundle,
// run the same way (the same version moving into a container is a change).
func (t Target) Same(spec runtime.Spec) bool {
	kind := t.Runtime.Kind
	if kind == "" {
		kind = "inprocess"
	}
	specKind := spec.Kind
	if specKind == "" {
		specKind = "inprocess"
	}
	return t.Model == spec.Model && t.Version == spec.Version && t.Artifact.SHA256 == spec.SHA256 &&
		kind == specKind && t.Runtime.Image == spec.Image
}

// Record is where an update stands; it is update.json.
type Record struct {
	Phase  Phase  `json:"phase"`
	Target Target `json:"target"`
	// From is the version that served when the update began.
	From *runtime.Spec `json:"from,omitempty"`
	// Attempt counts the permanent failures of this target (the model did
	// not load, failed its golden samples or its probation); MaxAttempts
	// of them give it up. Interruptions and transient failures are free.
	Attempt int `json:"attempt"`
	// Retries counts the failures since the last success of any kind, for
	// the backoff; RetryAt is when the next try is due.
	Retries int       `json:"retries,omitempty"`
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Crashes counts agent starts that found this target past its switch
	// without a commit: the agent died (not stopped) while the candidate
	// served. MaxCrashes of them in a row count as a permanent failure,
	// since a model that kills the agent would otherwise loop for ever.
	Crashes int `json:"crashes,omitempty"`
	// Checked is set once the candidate passed its health check while the
	// switch was held, so later tries during the hold stage nothing.
	Checked bool `json:"checked,omitempty"`
	// Sources are the artifact URLs of the target that answered badly,
	// newest last (at most maxSources); see Machine.MaxURLFailures.
	Sources []Source `json:"sources,omitempty"`
	// Class of the last error, when there is one.
	Class     string    `json:"class,omitempty"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Progress of the download, bytes.
	Downloaded int64  `json:"downloaded,omitempty"`
	Total      int64  `json:"total,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Source counts the bad answers of one artifact URL, as a signed document
// names it (for a grant, the release's URL, not the short-lived one).
type Source struct {
	URL string `json:"url"`
	// Failures counts the downloads from URL that ended on the source's
	// answer (an HTTP error status, a wrong size or sha256, a refused
	// redirect) since it last sent bytes of the file. Connection errors
	// and stalls do not count. MaxURLFailures of them make it dead.
	Failures int `json:"failures"`
	// LastError is the last such answer.
	LastError string `json:"last_error,omitempty"`
	// RetryAt is when a dead URL is tried again.
	RetryAt time.Time `json:"retry_at,omitzero"`
}

// maxSources bounds Record.Sources: a target changes URL only with a new
// signed document.
const maxSources = 4

// source returns the record's entry for url, or nil.
func (r *Record) source(url string) *Source {
	for i := range r.Sources {
		if r.Sources[i].URL == url {
			return &r.Sources[i]
		}
	}
	return nil
}

// addSource returns the entry for url, made if there is none.
func (r *Record) addSource(url string) *Source {
	if s := r.source(url); s != nil {
		return s
	}
	if len(r.Sources) >= maxSources {
		r.Sources = slices.Delete(r.Sources, 0, len(r.Sources)-maxSources+1)
	}
	r.Sources = append(r.Sources, Source{URL: url})
	return &r.Sources[len(r.Sources)-1]
}

// Installed is what the truck runs: installed.json.
type Installed struct {
	Current  *runtime.Spec `json:"current,omitempty"`
	Previous *runtime.Spec `json:"previous,omitempty"`
}
