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
	"fmt"
	"sync"
	"time"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
)

// ErrUnhealthy means a candidate or the serving model failed a health check:
// the model itself answered wrongly.
var ErrUnhealthy = errors.New("model unhealthy")

// ErrUnavailable means the runtime could not run a candidate through no
// fault of the model: the container engine failed, an image never answered.
// The update machine retries these instead of counting them against the
// version.
var ErrUnavailable = errors.New("runtime unavailable")

// Spec identifies one installed model version on the truck.
type Spec struct {
	Model   string `json:"model"`
	Version int64  `json:"version"`
	// SHA256 of the bundle file, lowercase hex.
	SHA256 string `json:"sha256"`
	// Size of the bundle file in bytes; 0 in specs written before it was
	// recorded.
	Size int64 `json:"size,omitempty"`
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

// Supervised is a Candidate whose serving process can die on its own, apart
// from the agent (a container). The agent's supervisor polls Alive while the
// candidate serves; when it fails, it calls Restart, and when that fails too,
// it falls back to another verified version. In-process candidates live and
// die with the agent and do not implement it.
type Supervised interface {
	Candidate
	// Alive reports whether the candidate can answer requests now: nil, or
	// an error that says why not (exited, not answering /ping).
	Alive(ctx context.Context) error
	// Restart brings a candidate that is not alive back to serving the same
	// spec, and checks it (ready and golden samples) before it returns. The
	// agent's front ends keep pointing at the candidate, so Restart must keep
	// whatever address they use, or update it in place.
	Restart(ctx context.Context) error
}

// Adopt makes b the bundle of spec: its metadata must name spec's model,
// and takes spec's version whatever metadata.json says. The version is the
// registry's, bound to the bundle's sha256 by the signed release; a
// pipeline builds the bundle before the registry gives it a number, so
// metadata.json may have none, or a guess a parallel registration made
// wrong. Every runtime calls it before it loads or unpacks a bundle, so
// that the model's reported version (HTTP, OIP, MQTT, metrics) is the
// release's. A bundle of another model is bundle.ErrInvalid.
func Adopt(b *bundle.Bundle, spec Spec) error {
	switch {
	case b.Meta == nil:
		return fmt.Errorf("%w: bundle has no %s; the release announced %s v%d", bundle.ErrInvalid, bundle.MetadataFile, spec.Model, spec.Version)
	case b.Meta.Name != spec.Model:
		return fmt.Errorf("%w: bundle holds model %s, the release announced %s v%d", bundle.ErrInvalid, b.Meta.Name, spec.Model, spec.Version)
	}
	b.Meta.Version = spec.Version
	return nil
}
