package onnx_test

import (
	"context"
	"math"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/onnx"
	"github.com/linkedge/linkedge/inference/ortlib"
)

// startORT starts the real ONNX Runtime, or skips when its library is not on
// this machine (the tests never download it).
func startORT(t *testing.T) {
	t.Helper()
	if _, err := ortlib.Find(); err != nil {
		t.Skipf("ONNX Runtime not available: %v", err)
	}
	if err := inference.Init(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
}

// run feeds one float input of the given shape and returns the float output.
func run(t *testing.T, model []byte, in string, shape []int64, data []float32, out string, outShape []int64) []float32 {
	t.Helper()
	opts, err := ort.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{in}, []string{out}, opts)
	if err != nil {
		t.Fatalf("onnx runtime rejected the model: %v", err)
	}
	defer sess.Destroy()
	x, err := ort.NewTensor(ort.NewShape(shape...), data)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Destroy()
	y, err := ort.NewEmptyTensor[float32](ort.NewShape(outShape...))
	if err != nil {
		t.Fatal(err)
	}
	defer y.Destroy()
	if err := sess.Run([]ort.Value{x}, []ort.Value{y}); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(y.GetData())
}

func TestORTAddSigmoidLeakyRelu(t *testing.T) {
	startORT(t)
	m := &onnx.Model{
		ProducerName: "linkedge-test", ProducerVersion: "0.1", ModelVersion: 7, DocString: "add, sigmoid, leaky relu",
		Metadata: []onnx.KeyValue{{Key: "purpose", Value: "test"}},
		Graph: onnx.Graph{
			Name: "add_sigmoid",
			Nodes: []onnx.Node{
				{Name: "add", OpType: "Add", Inputs: []string{"x", "bias"}, Outputs: []string{"z"}},
				{Name: "sig", OpType: "Sigmoid", Inputs: []string{"z"}, Outputs: []string{"y"}},
				{Name: "leaky", OpType: "LeakyRelu", Inputs: []string{"z"}, Outputs: []string{"l"},
					Attrs: []onnx.Attr{onnx.FloatAttr("alpha", 0.25)}},
			},
			Inputs:       []onnx.ValueInfo{onnx.FloatTensor("x", onnx.Sym("N"), onnx.Fixed(3))},
			Outputs:      []onnx.ValueInfo{onnx.FloatTensor("y", onnx.Sym("N"), onnx.Fixed(3)), onnx.FloatTensor("l", onnx.Sym("N"), onnx.Fixed(3))},
			Initializers: []onnx.Tensor{{Name: "bias", Dims: []int64{3}, Floats: []float32{1, -2, 0.5}}},
		},
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 1 || ins[0].Name != "x" || !slices.Equal([]int64(ins[0].Dimensions), []int64{-1, 3}) || ins[0].DataType != ort.TensorElementDataTypeFloat {
		t.Errorf("inputs = %v, want x float [-1 3]", ins)
	}
	if len(outs) != 2 || outs[0].Name != "y" || outs[1].Name != "l" {
		t.Errorf("outputs = %v", outs)
	}
	md, err := ort.GetModelMetadataWithONNXData(b)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Destroy()
	if p, _ := md.GetProducerName(); p != "linkedge-test" {
		t.Errorf("producer = %q", p)
	}
	if v, _ := md.GetVersion(); v != 7 {
		t.Errorf("model version = %d", v)
	}
	if v, ok, _ := md.LookupCustomMetadataMap("purpose"); !ok || v != "test" {
		t.Errorf("metadata purpose = %q, %v", v, ok)
	}

	x := []float32{0, 0, 0, 1, 2, -3}
	bias := []float32{1, -2, 0.5}
	y := run(t, b, "x", []int64{2, 3}, x, "y", []int64{2, 3})
	l := run(t, b, "x", []int64{2, 3}, x, "l", []int64{2, 3})
	for i := range x {
		z := float64(x[i] + bias[i%3])
		want := 1 / (1 + math.Exp(-z))
		if math.Abs(float64(y[i])-want) > 1e-6 {
			t.Errorf("sigmoid[%d] = %v, want %v", i, y[i], want)
		}
		wantL := z
		if z < 0 {
			wantL = 0.25 * z
		}
		if math.Abs(float64(l[i])-wantL) > 1e-6 {
			t.Errorf("leaky[%d] = %v, want %v", i, l[i], wantL)
		}
	}
}

// TestORTTreeEnsemble checks the TreeEnsembleRegressor semantics the GBT
// exporter relies on: BRANCH_LEQ sends x == threshold to the true branch,
// NaN goes to the true branch only when missing_value_tracks_true is 1, and
// base_values is added to the sum of leaf weights.
func TestORTTreeEnsemble(t *testing.T) {
	startORT(t)
	// tree 0: n0: x1 <= 0.5 (NaN -> true) ? n1 (leaf 10) : n2
	//         n2: x0 <= 2   (NaN -> false) ? n3 (leaf 1) : n4 (leaf 2)
	// tree 1: a single leaf worth 100
	m := &onnx.Model{
		ProducerName: "linkedge-test",
		Graph: onnx.Graph{
			Name: "trees",
			Nodes: []onnx.Node{{
				OpType: "TreeEnsembleRegressor", Domain: onnx.DomainML,
				Inputs: []string{"x"}, Outputs: []string{"y"},
				Attrs: []onnx.Attr{
					onnx.StringAttr("aggregate_function", "SUM"),
					onnx.FloatsAttr("base_values", []float32{0.5}),
					onnx.IntAttr("n_targets", 1),
					onnx.IntsAttr("nodes_treeids", []int64{0, 0, 0, 0, 0, 1}),
					onnx.IntsAttr("nodes_nodeids", []int64{0, 1, 2, 3, 4, 0}),
					onnx.IntsAttr("nodes_featureids", []int64{1, 0, 0, 0, 0, 0}),
					onnx.FloatsAttr("nodes_values", []float32{0.5, 0, 2, 0, 0, 0}),
					onnx.StringsAttr("nodes_modes", []string{"BRANCH_LEQ", "LEAF", "BRANCH_LEQ", "LEAF", "LEAF", "LEAF"}),
					onnx.IntsAttr("nodes_truenodeids", []int64{1, 0, 3, 0, 0, 0}),
					onnx.IntsAttr("nodes_falsenodeids", []int64{2, 0, 4, 0, 0, 0}),
					onnx.IntsAttr("nodes_missing_value_tracks_true", []int64{1, 0, 0, 0, 0, 0}),
					onnx.StringAttr("post_transform", "NONE"),
					onnx.IntsAttr("target_treeids", []int64{0, 0, 0, 1}),
					onnx.IntsAttr("target_nodeids", []int64{1, 3, 4, 0}),
					onnx.IntsAttr("target_ids", []int64{0, 0, 0, 0}),
					onnx.FloatsAttr("target_weights", []float32{10, 1, 2, 100}),
				},
			}},
			Inputs:  []onnx.ValueInfo{onnx.FloatTensor("x", onnx.Sym("N"), onnx.Fixed(2))},
			Outputs: []onnx.ValueInfo{onnx.FloatTensor("y", onnx.Sym("N"), onnx.Fixed(1))},
		},
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	nan := float32(math.NaN())
	rows := []struct {
		x    [2]float32
		want float32
	}{
		{[2]float32{0, 0.5}, 110.5}, // equal to the threshold: true branch
		{[2]float32{3, nan}, 110.5}, // NaN, tracks true
		{[2]float32{nan, 1}, 102.5}, // NaN, tracks false
		{[2]float32{2, 0.6}, 101.5}, // x0 == 2: true branch
		{[2]float32{2.1, 0.6}, 102.5},
	}
	var x []float32
	for _, r := range rows {
		x = append(x, r.x[:]...)
	}
	y := run(t, b, "x", []int64{int64(len(rows)), 2}, x, "y", []int64{int64(len(rows)), 1})
	for i, r := range rows {
		if y[i] != r.want {
			t.Errorf("row %v: got %v, want %v", r.x, y[i], r.want)
		}
	}
}
