// Package gbt trains gradient-boosted decision trees for binary
// classification (logistic loss) in pure Go and exports them to ONNX.
//
// It exists so LinkEdge can build its own demo models without Python: the
// trainer is small, deterministic for a given seed, and its models predict
// in float32 exactly the way ONNX Runtime's TreeEnsembleRegressor does, so a
// score computed in Go matches the score a truck computes from the exported
// model.
//
// The method follows XGBoost/LightGBM in miniature: features are cut into at
// most MaxBins quantile bins once; each tree grows depth-first to MaxDepth
// on gradient/hessian histograms (the smaller child is built, the larger is
// the parent minus it); a split's gain is the usual second-order gain with
// L2 regularisation Lambda; missing values (NaN) have their own histogram
// bin and every split learns which side they take by trying both.
package gbt

import (
	"fmt"
	"strconv"
	"time"
)

// Params are the training settings.
type Params struct {
	// Trees is the number of boosting rounds.
	Trees int
	// MaxDepth bounds each tree; a tree has at most 2^MaxDepth leaves.
	MaxDepth int
	// LearningRate shrinks each tree's leaves (0 < LearningRate <= 1).
	LearningRate float64
	// Lambda is the L2 penalty on leaf values; larger is smoother.
	Lambda float64
	// Gamma is the minimum gain a split must bring.
	Gamma float64
	// MinLeafRows and MinLeafHessian bound the rows and the hessian sum
	// (roughly, the confidence-weighted rows) in every leaf.
	MinLeafRows    int
	MinLeafHessian float64
	// Subsample is the fraction of rows each tree sees (drawn per tree);
	// 0 or 1 means all rows.
	Subsample float64
	// ColSample is the fraction of features each tree may split on (drawn
	// per tree); 0 or 1 means all.
	ColSample float64
	// MaxBins bounds the value bins per feature (2..255); missing values get
	// one more.
	MaxBins int
	// PosWeight weighs positive rows in the loss; 0 means 1. With 1.7%
	// positives and a miss costing 50 false alarms, a weight above 1 spends
	// more of the model's capacity on the positives.
	PosWeight float64
	// Seed drives row and column sampling; equal seeds give equal models.
	Seed uint64
	// Workers is how many goroutines build histograms; 0 means 1. The model
	// does not depend on it.
	Workers int
	// Progress, when set, is called after every tree.
	Progress func(TreeInfo) `json:"-"`
}

// TreeInfo reports one finished tree.
type TreeInfo struct {
	Tree, Trees int // 1-based index and total
	// Fold is the cross-validation fold being trained (1-based), or 0 for
	// a model trained on all rows.
	Fold   int
	Leaves int
	// Loss is the weighted mean log loss on the training rows after it.
	Loss    float64
	Elapsed time.Duration // since training started
}

// DefaultParams are sensible settings for tabular data of the APS size.
func DefaultParams() Params {
	return Params{
		Trees: 100, MaxDepth: 4, LearningRate: 0.1, Lambda: 1,
		MinLeafRows: 20, MinLeafHessian: 1e-3, Subsample: 0.8, ColSample: 1,
		MaxBins: 64, PosWeight: 1, Seed: 1,
	}
}

func (p Params) withDefaults() Params {
	if p.PosWeight == 0 {
		p.PosWeight = 1
	}
	if p.Subsample == 0 {
		p.Subsample = 1
	}
	if p.ColSample == 0 {
		p.ColSample = 1
	}
	if p.MaxBins == 0 {
		p.MaxBins = 64
	}
	if p.Workers <= 0 {
		p.Workers = 1
	}
	if p.MinLeafRows <= 0 {
		p.MinLeafRows = 1
	}
	return p
}

func (p Params) validate() error {
	switch {
	case p.Trees < 1:
		return fmt.Errorf("gbt: trees is %d, want 1 or more", p.Trees)
	case p.MaxDepth < 1 || p.MaxDepth > 16:
		return fmt.Errorf("gbt: max depth is %d, want 1..16", p.MaxDepth)
	case !(p.LearningRate > 0 && p.LearningRate <= 1):
		return fmt.Errorf("gbt: learning rate is %v, want (0, 1]", p.LearningRate)
	case p.Lambda < 0 || p.Gamma < 0 || p.MinLeafHessian < 0:
		return fmt.Errorf("gbt: lambda, gamma and min leaf hessian must not be negative")
	case !(p.Subsample > 0 && p.Subsample <= 1) || !(p.ColSample > 0 && p.ColSample <= 1):
		return fmt.Errorf("gbt: subsample %v and colsample %v must be in (0, 1]", p.Subsample, p.ColSample)
	case p.MaxBins < 2 || p.MaxBins > 255:
		return fmt.Errorf("gbt: max bins is %d, want 2..255", p.MaxBins)
	case !(p.PosWeight > 0):
		return fmt.Errorf("gbt: positive weight is %v, want > 0", p.PosWeight)
	}
	return nil
}

// Map lists the settings that shape the model, as text, for
// bundle.Training.Params. Workers and Progress are left out: they change
// speed, not the model.
func (p Params) Map() map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	return map[string]string{
		"trees":            strconv.Itoa(p.Trees),
		"max_depth":        strconv.Itoa(p.MaxDepth),
		"learning_rate":    f(p.LearningRate),
		"lambda":           f(p.Lambda),
		"gamma":            f(p.Gamma),
		"min_leaf_rows":    strconv.Itoa(p.MinLeafRows),
		"min_leaf_hessian": f(p.MinLeafHessian),
		"subsample":        f(p.Subsample),
		"colsample":        f(p.ColSample),
		"max_bins":         strconv.Itoa(p.MaxBins),
		"pos_weight":       f(p.PosWeight),
		"seed":             strconv.FormatUint(p.Seed, 10),
	}
}
