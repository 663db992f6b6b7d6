package gbt

import (
	"context"
	"math"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/aps"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/ortlib"
)

// ortPredict runs an exported model in the real ONNX Runtime (one thread,
// to share the machine politely) on a batch of rows.
func ortPredict(t *testing.T, model []byte, rows [][]float32) []float32 {
	t.Helper()
	if _, err := ortlib.Find(); err != nil {
		t.Skipf("ONNX Runtime not available: %v", err)
	}
	if err := inference.Init(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{InputName}, []string{OutputName}, opts)
	if err != nil {
		t.Fatalf("onnx runtime rejected the model: %v", err)
	}
	defer sess.Destroy()
	f := len(rows[0])
	flat := make([]float32, 0, len(rows)*f)
	for _, r := range rows {
		flat = append(flat, r...)
	}
	x, err := ort.NewTensor(ort.NewShape(int64(len(rows)), int64(f)), flat)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Destroy()
	y, err := ort.NewEmptyTensor[float32](ort.NewShape(int64(len(rows)), 1))
	if err != nil {
		t.Fatal(err)
	}
	defer y.Destroy()
	if err := sess.Run([]ort.Value{x}, []ort.Value{y}); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(y.GetData())
}

// TestGoMatchesONNXRuntime trains on SYNTHETIC APS rows, exports, and
// checks that ONNX Runtime and PredictProba agree on 1,000 other rows, many
// of them with missing values.
func TestGoMatchesONNXRuntime(t *testing.T) {
	train := aps.Generate(5, 6000, 0.05)
	p := DefaultParams()
	p.Trees, p.MaxDepth, p.ColSample, p.PosWeight = 40, 4, 0.5, 5
	m, err := Train(train, p)
	if err != nil {
		t.Fatal(err)
	}
	meta := &bundle.Metadata{Name: "aps-test", Version: 3, Description: "SYNTHETIC test model", Input: InputName, Output: OutputName, Features: aps.Columns}
	b, err := m.ONNX(meta)
	if err != nil {
		t.Fatal(err)
	}
	test := aps.Generate(6, 1000, 0.05)
	got := ortPredict(t, b, test.X)
	var worst float64
	for i, row := range test.X {
		want := m.PredictProba(row)
		d := math.Abs(float64(got[i] - want))
		worst = max(worst, d)
		if d > 1e-5 {
			t.Errorf("row %d: onnx runtime %v, go %v", i, got[i], want)
		}
	}
	t.Logf("largest |ORT - Go| over 1000 rows: %g", worst)

	ins, outs, err := ort.GetInputOutputInfoWithONNXData(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 1 || ins[0].Name != InputName || !slices.Equal([]int64(ins[0].Dimensions), []int64{-1, 170}) {
		t.Errorf("inputs = %v, want features [-1 170]", ins)
	}
	if len(outs) != 1 || outs[0].Name != OutputName || !slices.Equal([]int64(outs[0].Dimensions), []int64{-1, 1}) {
		t.Errorf("outputs = %v, want probability [-1 1]", outs)
	}
	md, err := ort.GetModelMetadataWithONNXData(b)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Destroy()
	if v, ok, _ := md.LookupCustomMetadataMap("linkedge.name"); !ok || v != "aps-test" {
		t.Errorf("linkedge.name = %q", v)
	}
	if v, _ := md.GetVersion(); v != 3 {
		t.Errorf("model version %d, want 3", v)
	}
}

// TestExportedEdgeCases pins the float32 edge cases: values exactly on a
// threshold, missing values on both kinds of split, the +Inf "present vs
// missing" split, and a single-leaf tree.
func TestExportedEdgeCases(t *testing.T) {
	m := &Model{
		Features: []string{"a", "b"},
		Base:     -1.25,
		Trees: []Tree{
			{Nodes: []Node{
				{Feature: 0, Threshold: 0.1, Left: 1, Right: 2, MissingLeft: true},
				{Feature: -1, Value: 0.75},
				{Feature: 1, Threshold: float32(math.Inf(1)), Left: 3, Right: 4},
				{Feature: -1, Value: -0.5},
				{Feature: -1, Value: 2},
			}},
			{Nodes: []Node{{Feature: -1, Value: 0.125}}},
		},
	}
	b, err := m.ONNX(nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := [][]float32{{0.1, 0}, {nan, 0}, {0.1000001, 5}, {1, nan}, {1, math.MaxFloat32}, {nan, nan}}
	got := ortPredict(t, b, rows)
	for i, r := range rows {
		if want := m.PredictProba(r); math.Abs(float64(got[i]-want)) > 1e-6 {
			t.Errorf("row %v: onnx runtime %v, go %v", r, got[i], want)
		}
	}
	wantLogits := []float32{-0.375, -0.375, -1.625, 0.875, -1.625, -0.375}
	for i, r := range rows {
		if l := m.Logit(r); l != wantLogits[i] {
			t.Errorf("row %v: logit %v, want %v", r, l, wantLogits[i])
		}
	}
}
