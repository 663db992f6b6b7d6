package edgeclient

import (
	"context"
	"fmt"
	"sync"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/internal/release"
)

// runtimes routes each version to the runtime its release names, and keeps
// track of what serves across them: a truck can go from an in-process model
// to a container and back, through the same slot.
type runtimes struct {
	inprocess runtime.Runtime
	container runtime.Runtime // nil when containers are not enabled

	mu      sync.Mutex
	owner   map[runtime.Candidate]runtime.Runtime
	serving runtime.Candidate
}

var _ runtime.Runtime = (*runtimes)(nil)

func (m *runtimes) pick(kind string) (runtime.Runtime, error) {
	switch kind {
	case "", release.RuntimeInProcess:
		return m.inprocess, nil
	case release.RuntimeContainer:
		if m.container == nil {
			return nil, fmt.Errorf("runtime %q is not enabled on this truck (containers.enabled)", kind)
		}
		return m.container, nil
	}
	return nil, fmt.Errorf("unknown runtime %q", kind)
}

func (m *runtimes) Stage(ctx context.Context, spec runtime.Spec) (runtime.Candidate, error) {
	rt, err := m.pick(spec.Kind)
	if err != nil {
		return nil, err
	}
	c, err := rt.Stage(ctx, spec)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.owner == nil {
		m.owner = map[runtime.Candidate]runtime.Runtime{}
	}
	m.owner[c] = rt
	m.mu.Unlock()
	return c, nil
}

func (m *runtimes) Activate(ctx context.Context, c runtime.Candidate) (runtime.Candidate, error) {
	m.mu.Lock()
	rt := m.owner[c]
	m.mu.Unlock()
	if rt == nil {
		return nil, fmt.Errorf("activate: candidate %s v%d was not staged here", c.Spec().Model, c.Spec().Version)
	}
	if _, err := rt.Activate(ctx, c); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.serving
	m.serving = c
	// Forget candidates that can no longer serve again: everything but the
	// new one and the previous (kept for a rollback).
	for k := range m.owner {
		if k != c && k != prev {
			delete(m.owner, k)
		}
	}
	return prev, nil
}

func (m *runtimes) Serving() runtime.Candidate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.serving
}
