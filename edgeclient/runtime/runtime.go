// Package runtime is the seam between the truck's update state machine and
// whatever actually runs a model. The state machine only ever stages a
// candidate, checks it, activates it and closes what it no longer needs; an
// implementation decides what those mean: loading an ONNX session into the
// agent's own process (package inprocess), or starting an inference
// container next to the old one and moving the local endpoint over.
package runtime

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/linkedge/linkedge/inference"
)

// ErrUnhealthy means a candidate or the serving model failed a health check.
var ErrUnhealthy = errors.New("model unhealthy")

// Spec identifies one installed model version on the truck.
type Spec struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
	// SHA256 of the bundle file, lowercase hex.
	SHA256 string `json:"sha256"`
	// Bundle is the verified model.tar.gz on local disk.
	Bundle string `json:"bundle"`
	// Serial of the release document that asked for this version.
	Serial int64 `json:"serial"`
	// Kind is release.RuntimeInProcess or release.RuntimeContainer.
	Kind string `json:"kind"`
	// Image is the container image (by digest) for container runtimes.
	Image string `json:"image,omitempty"`
	// InstalledAt is when the version was committed.
	InstalledAt time.Time `json:"installed_at,omitzero"`
}

// Runtime runs models.
type Runtime interface {
	// Stage prepares spec to serve without serving it yet: load and check
	// the model, or create and start its container.
	Stage(ctx context.Context, spec Spec) (Candidate, error)
	// Activate makes c the one that serves, without failing a request in
	// flight, and returns the one that served before (nil if none), still
	// open, so that a rollback is one more Activate.
	Activate(ctx context.Context, c Candidate) (prev Candidate, err error)
	// Serving returns the candidate that serves now, or nil.
	Serving() Candidate
}

// Candidate is a staged or serving model version.
type Candidate interface {
	Spec() Spec
	// Check runs the health check: ready, and the golden samples give the
	// answers the bundle says they must.
	Check(ctx context.Context) error
	// Failures counts the requests this candidate failed since it was
	// staged; the probation period watches it.
	Failures() int64
	// Close releases the candidate. Closing a serving candidate is a bug.
	Close() error
}

// Switch is what a runtime that serves through an inference.Slot shares:
// it swaps a candidate's backend into the slot and remembers which
// candidate serves, so Activate can hand back the previous one.
type Switch struct {
	mu      sync.Mutex
	serving Candidate
}

// Activate installs b (c's backend) in slot and returns the candidate that
// served before, or nil.
func (s *Switch) Activate(slot *inference.Slot, c Candidate, b inference.Backend) Candidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot.Swap(b, 0)
	prev := s.serving
	s.serving = c
	return prev
}

// Serving returns the candidate that serves, or nil.
func (s *Switch) Serving() Candidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving
}
