package inference

import (
	"context"

	"github.com/linkedge/linkedge/inference/bundle"
)

// Backend answers predictions for one model version. The HTTP and MQTT
// front ends and the Slot see only this, so what answers can be an Engine
// (ONNX Runtime in this process) or a model server in a container that
// speaks the same API: the truck swaps either without its clients noticing.
type Backend interface {
	// Meta is the bundle's metadata: name, version, features, labels.
	Meta() *bundle.Metadata
	// Digest identifies the model (sha256 of the ONNX graph, hex).
	Digest() string
	// PredictOne scores one row; concurrent calls may be batched.
	PredictOne(ctx context.Context, row []float32) (Prediction, error)
	// Predict scores rows that already form a batch.
	Predict(ctx context.Context, rows [][]float32) ([]Prediction, error)
	// Failures counts calls that failed for a reason other than bad input.
	Failures() int64
	// Close releases the backend; it is idempotent.
	Close() error
}

var _ Backend = (*Engine)(nil)

// Meta is the engine's model metadata.
func (e *Engine) Meta() *bundle.Metadata { return e.model.meta }

// Digest is the engine's model digest.
func (e *Engine) Digest() string { return e.model.digest }
