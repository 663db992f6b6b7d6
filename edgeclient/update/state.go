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
	// RolledBack ends an update that served and was taken back.
	RolledBack Phase = "rolled_back"
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
}

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
	// Attempt counts tries of this target; a crash after the switch counts.
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Progress of the download, bytes.
	Downloaded int64  `json:"downloaded,omitempty"`
	Total      int64  `json:"total,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Installed is what the truck runs: installed.json.
type Installed struct {
	Current  *runtime.Spec `json:"current,omitempty"`
	Previous *runtime.Spec `json:"previous,omitempty"`
}
