package apsmodels

import (
	"fmt"
	"slices"

	ort "github.com/yalue/onnxruntime_go"
)

// ortScores runs model in ONNX Runtime on rows and returns the output
// column. It uses one intra-op thread: the result does not depend on the
// machine's core count, and the build shares the machine politely. The
// runtime must already be started (inference.Init).
func ortScores(model []byte, input, output string, rows [][]float32) ([]float32, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnx runtime options: %w", err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("onnx runtime options: %w", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("onnx runtime options: %w", err)
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{input}, []string{output}, opts)
	if err != nil {
		return nil, fmt.Errorf("onnx runtime session: %w", err)
	}
	defer sess.Destroy()
	f := len(rows[0])
	flat := make([]float32, 0, len(rows)*f)
	for i, r := range rows {
		if len(r) != f {
			return nil, fmt.Errorf("row %d has %d values, want %d", i, len(r), f)
		}
		flat = append(flat, r...)
	}
	x, err := ort.NewTensor(ort.NewShape(int64(len(rows)), int64(f)), flat)
	if err != nil {
		return nil, fmt.Errorf("onnx runtime input: %w", err)
	}
	defer x.Destroy()
	y, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(len(rows)), 1))
	if err != nil {
		return nil, fmt.Errorf("onnx runtime output: %w", err)
	}
	defer y.Destroy()
	if err := sess.Run([]ort.Value{x}, []ort.Value{y}); err != nil {
		return nil, fmt.Errorf("onnx runtime run: %w", err)
	}
	return slices.Clone(y.GetData()), nil
}
