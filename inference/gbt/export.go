package gbt

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/onnx"
)

// Default tensor names of exported models.
const (
	InputName  = "features"
	LogitName  = "logit"
	OutputName = "probability"
)

// Producer names this package in the models it writes.
const (
	ProducerName    = "linkedge-gbt"
	ProducerVersion = "1"
)

// ONNX exports the model as an ONNX graph that computes exactly what
// PredictProba computes:
//
//	features float[N,F] → ai.onnx.ml.TreeEnsembleRegressor → logit float[N,1]
//	                     → Sigmoid → probability float[N,1]
//
// The ensemble sums the trees (aggregate_function SUM) onto base_values =
// [Base]; every split is BRANCH_LEQ on a float32 threshold, and
// nodes_missing_value_tracks_true is 1 where missing values go left, which
// is how ONNX Runtime reads NaN (true branch iff x <= t, or x is NaN and the
// flag is set). meta supplies the tensor names (Input, Output; defaults
// InputName and OutputName), and its name, version and description are
// written into the model's metadata; meta may be nil.
func (m *Model) ONNX(meta *bundle.Metadata) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	in, out, name, desc, version := InputName, OutputName, "gbt", "", int64(0)
	if meta != nil {
		if meta.Input != "" {
			in = meta.Input
		}
		if meta.Output != "" {
			out = meta.Output
		}
		if meta.Name != "" {
			name = meta.Name
		}
		desc, version = meta.Description, meta.Version
		if len(meta.Features) > 0 && len(meta.Features) != len(m.Features) {
			return nil, fmt.Errorf("gbt: metadata lists %d features, the model has %d", len(meta.Features), len(m.Features))
		}
	}
	if in == LogitName || out == LogitName || in == out {
		return nil, fmt.Errorf("gbt: tensor names %q and %q clash with each other or with %q", in, out, LogitName)
	}
	model := &onnx.Model{
		ProducerName:    ProducerName,
		ProducerVersion: ProducerVersion,
		ModelVersion:    version,
		DocString:       desc,
		Metadata: []onnx.KeyValue{
			{Key: "linkedge.name", Value: name},
			{Key: "linkedge.version", Value: strconv.FormatInt(version, 10)},
			{Key: "linkedge.algorithm", Value: "gbt"},
			{Key: "linkedge.trees", Value: strconv.Itoa(len(m.Trees))},
			{Key: "linkedge.features", Value: strings.Join(m.Features, ",")},
		},
		Graph: onnx.Graph{
			Name: name,
			Nodes: []onnx.Node{
				m.treeEnsembleNode(in),
				{Name: "sigmoid", OpType: "Sigmoid", Inputs: []string{LogitName}, Outputs: []string{out}},
			},
			Inputs:  []onnx.ValueInfo{onnx.FloatTensor(in, onnx.Sym("N"), onnx.Fixed(int64(len(m.Features))))},
			Outputs: []onnx.ValueInfo{onnx.FloatTensor(out, onnx.Sym("N"), onnx.Fixed(1))},
		},
	}
	return model.Marshal()
}

// treeEnsembleNode lays the trees out as TreeEnsembleRegressor's parallel
// attribute arrays. Node ids are positions within each tree.
func (m *Model) treeEnsembleNode(input string) onnx.Node {
	var (
		treeIDs, nodeIDs, featIDs, trueIDs, falseIDs, missTrue []int64
		values                                                 []float32
		modes                                                  []string
		tTree, tNode, tIDs                                     []int64
		tWeights                                               []float32
	)
	for ti := range m.Trees {
		for ni, n := range m.Trees[ti].Nodes {
			treeIDs = append(treeIDs, int64(ti))
			nodeIDs = append(nodeIDs, int64(ni))
			if n.IsLeaf() {
				featIDs = append(featIDs, 0)
				values = append(values, 0)
				modes = append(modes, "LEAF")
				trueIDs = append(trueIDs, 0)
				falseIDs = append(falseIDs, 0)
				missTrue = append(missTrue, 0)
				tTree = append(tTree, int64(ti))
				tNode = append(tNode, int64(ni))
				tIDs = append(tIDs, 0)
				tWeights = append(tWeights, n.Value)
				continue
			}
			featIDs = append(featIDs, int64(n.Feature))
			values = append(values, n.Threshold)
			modes = append(modes, "BRANCH_LEQ")
			trueIDs = append(trueIDs, int64(n.Left))
			falseIDs = append(falseIDs, int64(n.Right))
			if n.MissingLeft {
				missTrue = append(missTrue, 1)
			} else {
				missTrue = append(missTrue, 0)
			}
		}
	}
	return onnx.Node{
		Name: "trees", OpType: "TreeEnsembleRegressor", Domain: onnx.DomainML,
		Inputs: []string{input}, Outputs: []string{LogitName},
		Attrs: []onnx.Attr{
			onnx.StringAttr("aggregate_function", "SUM"),
			onnx.FloatsAttr("base_values", []float32{m.Base}),
			onnx.IntAttr("n_targets", 1),
			onnx.IntsAttr("nodes_treeids", treeIDs),
			onnx.IntsAttr("nodes_nodeids", nodeIDs),
			onnx.IntsAttr("nodes_featureids", featIDs),
			onnx.FloatsAttr("nodes_values", values),
			onnx.StringsAttr("nodes_modes", modes),
			onnx.IntsAttr("nodes_truenodeids", trueIDs),
			onnx.IntsAttr("nodes_falsenodeids", falseIDs),
			onnx.IntsAttr("nodes_missing_value_tracks_true", missTrue),
			onnx.StringAttr("post_transform", "NONE"),
			onnx.IntsAttr("target_treeids", tTree),
			onnx.IntsAttr("target_nodeids", tNode),
			onnx.IntsAttr("target_ids", tIDs),
			onnx.FloatsAttr("target_weights", tWeights),
		},
	}
}
