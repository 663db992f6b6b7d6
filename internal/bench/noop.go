package bench

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/linkedge/linkedge/edgeclient/runtime"
)

// noopRuntime stands in for ONNX Runtime in simulated trucks: it "runs" a
// version by checking that its verified bundle is on disk, so the fleet
// bench measures the fleet side of an update (release, download, digest,
// reports), not model loading.
type noopRuntime struct {
	mu      sync.Mutex
	serving runtime.Candidate
}

var _ runtime.Runtime = (*noopRuntime)(nil)

type noopCandidate struct{ spec runtime.Spec }

func (c *noopCandidate) Spec() runtime.Spec          { return c.spec }
func (c *noopCandidate) Check(context.Context) error { return nil }
func (c *noopCandidate) Failures() int64             { return 0 }
func (c *noopCandidate) Close() error                { return nil }

func (r *noopRuntime) Stage(_ context.Context, spec runtime.Spec) (runtime.Candidate, error) {
	fi, err := os.Stat(spec.Bundle)
	if err != nil {
		return nil, fmt.Errorf("stage %s v%d: %w", spec.Model, spec.Version, err)
	}
	if spec.Size > 0 && fi.Size() != spec.Size {
		return nil, fmt.Errorf("stage %s v%d: bundle of %d bytes, want %d", spec.Model, spec.Version, fi.Size(), spec.Size)
	}
	return &noopCandidate{spec: spec}, nil
}

func (r *noopRuntime) Activate(_ context.Context, c runtime.Candidate) (runtime.Candidate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.serving
	r.serving = c
	return prev, nil
}

func (r *noopRuntime) Serving() runtime.Candidate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serving
}
