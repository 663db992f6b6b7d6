package gbt

import (
	"fmt"
	"math"
)

// Node is one node of a tree. A leaf has Feature -1 and carries Value; a
// split sends a row to Left when x <= Threshold, to Right when
// x > Threshold, and a missing x (NaN) to Left only when MissingLeft. This
// is ONNX's BRANCH_LEQ with missing_value_tracks_true = MissingLeft.
type Node struct {
	Feature     int32
	Threshold   float32
	Left, Right int32
	MissingLeft bool
	Value       float32

	bin uint8 // the split's bin, for routing binned training rows
}

// IsLeaf reports whether n is a leaf.
func (n *Node) IsLeaf() bool { return n.Feature < 0 }

// Tree is one regression tree; Nodes[0] is the root.
type Tree struct {
	Nodes []Node
}

// Leaves counts the tree's leaves.
func (t *Tree) Leaves() int {
	n := 0
	for i := range t.Nodes {
		if t.Nodes[i].IsLeaf() {
			n++
		}
	}
	return n
}

// leafValue walks the tree for one row, comparing in float32 as ONNX
// Runtime does.
func (t *Tree) leafValue(row []float32) float32 {
	i := int32(0)
	for {
		n := &t.Nodes[i]
		if n.Feature < 0 {
			return n.Value
		}
		x := row[n.Feature]
		if x <= n.Threshold || (n.MissingLeft && x != x) {
			i = n.Left
		} else {
			i = n.Right
		}
	}
}

// Model is a trained ensemble: logit = Base + sum of the trees' leaves,
// probability = sigmoid(logit).
type Model struct {
	// Features names the input columns, in order.
	Features []string
	// Base is the starting log-odds (the weighted positive rate).
	Base  float32
	Trees []Tree
	// Params are the settings it was trained with.
	Params Params
}

// Logit is the raw score of one row. It sums the trees in order in float32
// and adds Base last, the order ONNX Runtime's TreeEnsembleRegressor uses,
// so the two agree to the last bit or nearly (ORT may sum trees in parallel
// chunks for small batches).
func (m *Model) Logit(row []float32) float32 {
	var s float32
	for i := range m.Trees {
		s += m.Trees[i].leafValue(row)
	}
	return s + m.Base
}

// PredictProba is the probability of the positive class for one row (NaN
// marks a missing value). It panics if the row is shorter than Features.
func (m *Model) PredictProba(row []float32) float32 {
	return sigmoid32(m.Logit(row))
}

// PredictAll scores many rows.
func (m *Model) PredictAll(rows [][]float32) []float32 {
	out := make([]float32, len(rows))
	for i, r := range rows {
		out[i] = m.PredictProba(r)
	}
	return out
}

func sigmoid32(x float32) float32 {
	return float32(1 / (1 + math.Exp(-float64(x))))
}

// MaxDepth is the depth of the deepest tree (a lone leaf has depth 0).
func (m *Model) MaxDepth() int {
	best := 0
	for i := range m.Trees {
		if d := m.Trees[i].depth(0, 0); d > best {
			best = d
		}
	}
	return best
}

func (t *Tree) depth(i int32, d int) int {
	n := &t.Nodes[i]
	if n.IsLeaf() {
		return d
	}
	return max(t.depth(n.Left, d+1), t.depth(n.Right, d+1))
}

// Validate checks the trees' structure: children in range and after their
// parent, features in range, finite values.
func (m *Model) Validate() error {
	if len(m.Trees) == 0 {
		return fmt.Errorf("gbt: model has no trees")
	}
	if math.IsNaN(float64(m.Base)) || math.IsInf(float64(m.Base), 0) {
		return fmt.Errorf("gbt: base score %v is not finite", m.Base)
	}
	for ti := range m.Trees {
		nodes := m.Trees[ti].Nodes
		if len(nodes) == 0 {
			return fmt.Errorf("gbt: tree %d is empty", ti)
		}
		for i, n := range nodes {
			if n.IsLeaf() {
				if math.IsNaN(float64(n.Value)) || math.IsInf(float64(n.Value), 0) {
					return fmt.Errorf("gbt: tree %d node %d: leaf value %v", ti, i, n.Value)
				}
				continue
			}
			if int(n.Feature) >= len(m.Features) {
				return fmt.Errorf("gbt: tree %d node %d: feature %d of %d", ti, i, n.Feature, len(m.Features))
			}
			if n.Left <= int32(i) || n.Right <= int32(i) || int(n.Left) >= len(nodes) || int(n.Right) >= len(nodes) {
				return fmt.Errorf("gbt: tree %d node %d: children %d, %d out of order", ti, i, n.Left, n.Right)
			}
			if math.IsNaN(float64(n.Threshold)) {
				return fmt.Errorf("gbt: tree %d node %d: threshold is NaN", ti, i)
			}
		}
	}
	return nil
}
