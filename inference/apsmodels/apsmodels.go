// Package apsmodels holds LinkEdge's two demo model bundles for the APS
// failure task, aps-failure version 1 and version 2, and the code that
// rebuilds them byte for byte.
//
// Both models are trained on SYNTHETIC data from inference/aps (train seed
// 1, test seed 2), never on the Scania data, so their scores mean nothing
// for real trucks. They exist to exercise the fleet machinery end to end: a
// small first model, then a larger one that is measurably better, so a
// rollout from v1 to v2 has something to show.
//
// The bundles are committed next to this file and embedded. Regenerate them
// with `linkedge toolkit train-aps`; TestBuildReproducible fails when the
// committed files and a fresh Build differ.
package apsmodels

import (
	"bytes"
	_ "embed"

	"github.com/linkedge/linkedge/inference/gbt"
)

// Name is the models' bundle name.
const Name = "aps-failure"

// Seeds of the SYNTHETIC data the demo models are trained and tested on.
const (
	TrainSeed = 1
	TestSeed  = 2
)

// Threshold selection: the cost-minimising threshold is chosen on
// out-of-fold scores from CVFolds-fold cross-validation of the training set
// (see gbt.CrossValidate), never on the test set.
const (
	CVFolds = 4
	CVSeed  = 11
)

// File names of the committed bundles.
const (
	V1File = "aps-failure-v1.tar.gz"
	V2File = "aps-failure-v2.tar.gz"
)

//go:embed aps-failure-v1.tar.gz
var v1Bundle []byte

//go:embed aps-failure-v2.tar.gz
var v2Bundle []byte

// V1 returns the committed version 1 bundle (a model.tar.gz): 20 trees of
// depth 3. The slice is a copy.
func V1() []byte { return bytes.Clone(v1Bundle) }

// V2 returns the committed version 2 bundle: 120 trees of depth 5, with a
// lower test cost than V1. The slice is a copy.
func V2() []byte { return bytes.Clone(v2Bundle) }

// Spec is one model to build.
type Spec struct {
	Version int64
	Params  gbt.Params
}

// Specs are the two demo models. v1 is deliberately small (what a first
// attempt might ship); v2 is larger, samples half the features per tree and
// weighs positives more, and lands at a clearly lower cost.
func Specs() []Spec {
	v1 := gbt.DefaultParams()
	v1.Trees, v1.MaxDepth, v1.LearningRate, v1.PosWeight, v1.Seed = 20, 3, 0.3, 5, 1
	v2 := gbt.DefaultParams()
	v2.Trees, v2.MaxDepth, v2.LearningRate, v2.ColSample, v2.PosWeight, v2.Seed = 120, 5, 0.1, 0.5, 10, 2
	return []Spec{{Version: 1, Params: v1}, {Version: 2, Params: v2}}
}
