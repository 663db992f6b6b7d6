// Package inprocess runs models inside the agent's own process: a candidate
// is an ONNX Runtime session behind a micro-batcher, and activating it is an
// atomic swap of the engine in the inference.Slot that the HTTP and MQTT
// front ends read from. Requests in flight finish on the old engine.
package inprocess

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
)

// Runtime is the in-process runtime.
type Runtime struct {
	slot    *inference.Slot
	opts    inference.Options
	batch   inference.BatchConfig
	observe inference.BatchObserver
	// Limits bound what a bundle may unpack to (model.onnx is held in
	// memory to load it). Zero fields take bundle's defaults.
	Limits bundle.Limits

	sw runtime.Switch
}

var _ runtime.Runtime = (*Runtime)(nil)

// New makes a runtime that serves through slot. observe receives batch
// statistics (the server's metrics); it may be nil.
func New(slot *inference.Slot, opts inference.Options, batch inference.BatchConfig, observe inference.BatchObserver) *Runtime {
	return &Runtime{slot: slot, opts: opts, batch: batch, observe: observe}
}

type candidate struct {
	spec runtime.Spec
	eng  *inference.Engine
	once sync.Once
}

func (c *candidate) Spec() runtime.Spec { return c.spec }

func (c *candidate) Check(ctx context.Context) error {
	if err := c.eng.Model().CheckGolden(ctx); err != nil {
		return fmt.Errorf("%w: %w", runtime.ErrUnhealthy, err)
	}
	return nil
}

func (c *candidate) Failures() int64 { return c.eng.Failures() }

func (c *candidate) Close() error {
	var err error
	c.once.Do(func() { err = c.eng.Close() })
	return err
}

// Stage loads the bundle; inference.Load checks the graph against the
// metadata and runs the golden samples, so a candidate that exists is one
// that passed them once.
func (r *Runtime) Stage(ctx context.Context, spec runtime.Spec) (runtime.Candidate, error) {
	b, err := bundle.OpenWithLimits(spec.Bundle, r.Limits)
	if err != nil {
		if errors.Is(err, bundle.ErrTooLarge) {
			// Signed, and too large for this truck's setting: it will not
			// fit the next time either.
			return nil, fmt.Errorf("%w: %w (inference.max_model_bytes)", runtime.ErrUnhealthy, err)
		}
		return nil, err
	}
	if err := runtime.Adopt(b, spec); err != nil {
		return nil, err
	}
	m, err := inference.Load(ctx, b, r.opts)
	if err != nil {
		return nil, err
	}
	return &candidate{spec: spec, eng: inference.NewEngine(m, r.batch, r.observe)}, nil
}

// Activate swaps c into the slot and waits until no request runs on the
// previous engine any more.
func (r *Runtime) Activate(ctx context.Context, c runtime.Candidate) (runtime.Candidate, error) {
	cc, ok := c.(*candidate)
	if !ok {
		return nil, fmt.Errorf("inprocess: cannot activate a %T", c)
	}
	prev := r.sw.Activate(r.slot, cc, cc.eng)
	if prev == nil {
		return nil, nil
	}
	return prev, nil
}

// Serving returns the serving candidate.
func (r *Runtime) Serving() runtime.Candidate {
	return r.sw.Serving()
}
