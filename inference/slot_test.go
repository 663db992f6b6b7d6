package inference_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
)

// remoteBackend stands for a backend that can die apart from this process.
type remoteBackend struct {
	healthy atomic.Bool
}

func (b *remoteBackend) Meta() *bundle.Metadata { return &bundle.Metadata{Name: "m", Version: 1} }
func (b *remoteBackend) Digest() string         { return "d" }
func (b *remoteBackend) PredictOne(context.Context, []float32) (inference.Prediction, error) {
	return inference.Prediction{}, nil
}
func (b *remoteBackend) Predict(context.Context, [][]float32) ([]inference.Prediction, error) {
	return nil, nil
}
func (b *remoteBackend) Failures() int64 { return 0 }
func (b *remoteBackend) Close() error    { return nil }
func (b *remoteBackend) Healthy() bool   { return b.healthy.Load() }

// TestSlotHealthy: an empty slot is neither ready nor healthy; a backend that
// reports its health decides Healthy while Ready only says something is
// installed.
func TestSlotHealthy(t *testing.T) {
	var s inference.Slot
	if s.Ready() || s.Healthy() {
		t.Fatal("an empty slot says it can serve")
	}
	b := &remoteBackend{}
	s.Swap(b, 0)
	if !s.Ready() || s.Healthy() {
		t.Fatalf("unhealthy remote backend: ready %v healthy %v, want true false", s.Ready(), s.Healthy())
	}
	b.healthy.Store(true)
	if !s.Healthy() {
		t.Fatal("healthy remote backend: slot not healthy")
	}
	s.Swap(nil, 0)
	if s.Healthy() {
		t.Fatal("emptied slot still healthy")
	}
}
