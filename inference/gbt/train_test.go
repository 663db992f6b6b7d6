package gbt

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/linkedge/linkedge/inference/aps"
)

var nan = float32(math.NaN())

// tiny builds a one-feature dataset from (value, label) pairs, each repeated
// n times so leaf-size limits are met.
func tiny(n int, pairs ...any) *aps.Dataset {
	ds := &aps.Dataset{Features: []string{"x"}}
	for range n {
		for i := 0; i < len(pairs); i += 2 {
			ds.X = append(ds.X, []float32{pairs[i].(float32)})
			ds.Y = append(ds.Y, pairs[i+1].(bool))
		}
	}
	return ds
}

func smallParams() Params {
	p := DefaultParams()
	p.Trees, p.MaxDepth, p.MinLeafRows, p.Subsample = 10, 1, 1, 1
	return p
}

func TestLearnsObviousSplit(t *testing.T) {
	ds := tiny(5, float32(1), false, float32(2), false, float32(4), false, float32(5), true, float32(7), true, float32(9), true)
	m, err := Train(ds, smallParams())
	if err != nil {
		t.Fatal(err)
	}
	root := m.Trees[0].Nodes[0]
	if root.IsLeaf() || root.Feature != 0 || !(root.Threshold >= 4 && root.Threshold < 5) {
		t.Fatalf("root = %+v, want a split on x between 4 and 5", root)
	}
	for _, c := range []struct {
		x    float32
		want bool
	}{{0, false}, {4, false}, {4.4, false}, {5, true}, {100, true}} {
		if p := m.PredictProba([]float32{c.x}); (p >= 0.5) != c.want {
			t.Errorf("x=%v: p=%v, want positive=%v", c.x, p, c.want)
		}
	}
}

func TestLearnsMissingDirection(t *testing.T) {
	tests := []struct {
		name     string
		ds       *aps.Dataset
		wantLeft bool // missing values go with the low (left) values
	}{
		{"missing behaves like low values",
			tiny(5, float32(1), false, float32(2), false, nan, false, float32(8), true, float32(9), true), true},
		{"missing behaves like high values",
			tiny(5, float32(1), false, float32(2), false, nan, true, float32(8), true, float32(9), true), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Train(tc.ds, smallParams())
			if err != nil {
				t.Fatal(err)
			}
			root := m.Trees[0].Nodes[0]
			if root.IsLeaf() || root.MissingLeft != tc.wantLeft {
				t.Fatalf("root = %+v, want MissingLeft=%v", root, tc.wantLeft)
			}
			low, miss := m.PredictProba([]float32{1}), m.PredictProba([]float32{nan})
			if (math.Abs(float64(low-miss)) < 1e-6) != tc.wantLeft {
				t.Errorf("p(low)=%v p(missing)=%v, want equal=%v", low, miss, tc.wantLeft)
			}
		})
	}
}

func TestMissingOnlySplit(t *testing.T) {
	// Only presence matters: the split must be "present vs missing", with a
	// threshold of +Inf so every present value goes left.
	ds := tiny(5, float32(1), false, float32(50), false, nan, true)
	m, err := Train(ds, smallParams())
	if err != nil {
		t.Fatal(err)
	}
	root := m.Trees[0].Nodes[0]
	if root.IsLeaf() || !math.IsInf(float64(root.Threshold), 1) || root.MissingLeft {
		t.Fatalf("root = %+v, want threshold +Inf with missing right", root)
	}
	if m.PredictProba([]float32{nan}) < 0.5 || m.PredictProba([]float32{1e9}) >= 0.5 {
		t.Error("missing rows should score positive, present rows negative")
	}
}

func TestUnseenMissingFollowsLargerSide(t *testing.T) {
	ds := tiny(5, float32(1), false, float32(2), false, float32(3), false, float32(9), true)
	m, err := Train(ds, smallParams())
	if err != nil {
		t.Fatal(err)
	}
	if root := m.Trees[0].Nodes[0]; root.IsLeaf() || !root.MissingLeft {
		t.Fatalf("root = %+v, want missing sent left (15 rows) rather than right (5 rows)", root)
	}
}

func TestDeterministicAndWorkerIndependent(t *testing.T) {
	ds := aps.Generate(3, 3000, 0.05)
	p := DefaultParams()
	p.Trees, p.MaxDepth, p.ColSample, p.Subsample = 8, 3, 0.5, 0.7
	a, err := Train(ds, p)
	if err != nil {
		t.Fatal(err)
	}
	p.Workers = 3
	b, err := Train(ds, p)
	if err != nil {
		t.Fatal(err)
	}
	b.Params.Workers = a.Params.Workers
	if !reflect.DeepEqual(a, b) {
		t.Error("same seed, different worker count: models differ")
	}
	p.Seed++
	c, err := Train(ds, p)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a.Trees, c.Trees) {
		t.Error("a different seed gave the same trees")
	}
}

// TestBinnedRoutingMatchesThresholds checks the invariant the trainer rests
// on: routing a training row by its bins reaches the same leaf as routing
// its float values by the node thresholds.
func TestBinnedRoutingMatchesThresholds(t *testing.T) {
	ds := aps.Generate(4, 2000, 0.1)
	p := DefaultParams()
	p.Trees, p.MaxDepth, p.MaxBins = 5, 4, 16
	m, err := Train(ds, p)
	if err != nil {
		t.Fatal(err)
	}
	data := newBinned(ds.X, len(ds.Features), p.MaxBins, 1)
	for ti := range m.Trees {
		for i, row := range ds.X {
			if a, b := m.Trees[ti].leafValue(row), m.Trees[ti].binnedLeaf(data, i); a != b {
				t.Fatalf("tree %d row %d: threshold leaf %v, binned leaf %v", ti, i, a, b)
			}
		}
	}
}

func TestTrainRejects(t *testing.T) {
	good := tiny(3, float32(1), false, float32(2), true)
	tests := []struct {
		name   string
		ds     *aps.Dataset
		change func(p *Params)
	}{
		{"no trees", good, func(p *Params) { p.Trees = 0 }},
		{"depth 0", good, func(p *Params) { p.MaxDepth = 0 }},
		{"learning rate 0", good, func(p *Params) { p.LearningRate = 0 }},
		{"subsample above 1", good, func(p *Params) { p.Subsample = 1.5 }},
		{"too many bins", good, func(p *Params) { p.MaxBins = 256 }},
		{"negative lambda", good, func(p *Params) { p.Lambda = -1 }},
		{"one class", tiny(3, float32(1), false, float32(2), false), func(*Params) {}},
		{"ragged rows", &aps.Dataset{Features: []string{"a", "b"}, X: [][]float32{{1}}, Y: []bool{true}}, func(*Params) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := smallParams()
			tc.change(&p)
			if _, err := Train(tc.ds, p); err == nil {
				t.Error("Train succeeded, want an error")
			}
		})
	}
}

func TestQuantileCuts(t *testing.T) {
	tests := []struct {
		name    string
		sorted  []float32
		maxBins int
		want    []float32
	}{
		{"empty", nil, 4, nil},
		{"constant", []float32{3, 3, 3}, 4, nil},
		{"few distinct: midpoints", []float32{1, 1, 2, 4}, 4, []float32{1.5, 3}},
		{"quantiles", []float32{1, 2, 3, 4, 5, 6, 7, 8}, 4, []float32{2.5, 4.5, 6.5}},
		{"equal values never split", []float32{1, 1, 1, 1, 1, 1, 2, 3}, 2, []float32{1.5}},
		{"adjacent floats", []float32{1, math.Nextafter32(1, 2)}, 4, []float32{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := quantileCuts(tc.sorted, tc.maxBins)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			for _, v := range tc.sorted {
				b := binOf(got, v)
				if int(b) < len(got) && v > got[b] || b > 0 && v <= got[b-1] {
					t.Errorf("value %v in bin %d breaks the cut order %v", v, b, got)
				}
			}
		})
	}
}

func TestCrossValidateStratified(t *testing.T) {
	labels := make([]bool, 1000)
	for i := range 50 {
		labels[i*20] = true
	}
	folds := Folds(labels, 4, 9)
	var pos, all [4]int
	for i, f := range folds {
		all[f]++
		if labels[i] {
			pos[f]++
		}
	}
	for f := range 4 {
		if pos[f] < 12 || pos[f] > 13 || all[f] < 249 || all[f] > 251 {
			t.Errorf("fold %d: %d rows, %d positives", f, all[f], pos[f])
		}
	}
	if _, err := CrossValidate(t.Context(), tiny(2, float32(1), false, float32(2), true), smallParams(), 1, 1); err == nil {
		t.Error("one fold accepted")
	}
	ctx, cancel := contextWithCancel(t)
	cancel()
	_, err := CrossValidate(ctx, aps.Generate(1, 400, 0.1), smallParams(), 2, 1)
	if !errors.Is(err, ctx.Err()) {
		t.Errorf("cancelled: got %v", err)
	}
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}
