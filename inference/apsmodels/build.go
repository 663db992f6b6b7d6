package apsmodels

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"time"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/aps"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/gbt"
)

// Options change what Build trains on and how it reports.
type Options struct {
	// Train and Test, when both set, replace the SYNTHETIC data (e.g. with
	// the real UCI files); the bundles then say Synthetic: false.
	Train, Test *aps.Dataset
	// Dataset names Train/Test in the bundles' Training.Dataset; default
	// "uci-aps". Ignored for the synthetic data.
	Dataset string
	// Log receives progress lines; nil is silent.
	Log io.Writer
	// LibPath is the ONNX Runtime library for inference.Init; empty finds
	// the cached one.
	LibPath string
	// Workers is the training goroutines; 0 means up to 2. The bundles do
	// not depend on it.
	Workers int
	// Specs replaces Specs() (tests use smaller models); nil means Specs().
	Specs []Spec
}

// maxORTDiff is how far a Go score may be from ONNX Runtime's before Build
// refuses to write the bundle: the two implement the same float32 sums.
const maxORTDiff = 1e-5

// Build trains the demo models from scratch and returns their bundles
// (model.tar.gz bytes) with a report. With default options it reproduces
// the committed V1 and V2 exactly: the same SYNTHETIC data (train seed 1,
// test seed 2), the same seeded training, thresholds from cross-validation
// of the training set, costs on the test set, and golden samples scored by
// the real ONNX Runtime and cross-checked against the Go prediction.
func Build(ctx context.Context, opts Options) (v1, v2 []byte, rep *Report, err error) {
	start := time.Now()
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", args...)
		}
	}
	if err := inference.Init(ctx, opts.LibPath); err != nil {
		return nil, nil, nil, err
	}
	specs := opts.Specs
	if specs == nil {
		specs = Specs()
	}
	if len(specs) != 2 {
		return nil, nil, nil, fmt.Errorf("build aps models: %d specs, want 2", len(specs))
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = min(2, runtime.GOMAXPROCS(0))
	}

	train, test := opts.Train, opts.Test
	rep = &Report{}
	switch {
	case train == nil && test == nil:
		rep.Dataset = fmt.Sprintf("synthetic-aps(train seed=%d,test seed=%d)", TrainSeed, TestSeed)
		rep.Synthetic = true
		logf("generating SYNTHETIC APS-shaped data (not the Scania data): train seed %d, test seed %d", TrainSeed, TestSeed)
		train, test = aps.GenerateTrain(TrainSeed), aps.GenerateTest(TestSeed)
	case train != nil && test != nil:
		rep.Dataset = opts.Dataset
		if rep.Dataset == "" {
			rep.Dataset = "uci-aps"
		}
	default:
		return nil, nil, nil, errors.New("build aps models: give both train and test data, or neither")
	}
	rep.TrainRows, rep.TestRows, rep.TestPositives = train.Len(), test.Len(), test.Positives()
	logf("data: %d train rows (%d positive), %d test rows (%d positive), %d features",
		train.Len(), train.Positives(), test.Len(), test.Positives(), len(train.Features))

	var out [][]byte
	for _, spec := range specs {
		spec.Params.Workers = workers
		b, mr, err := buildOne(ctx, spec, train, test, rep, logf)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("build %s v%d: %w", Name, spec.Version, err)
		}
		out = append(out, b)
		rep.Models = append(rep.Models, mr)
	}
	rep.Elapsed = time.Since(start)
	return out[0], out[1], rep, nil
}

func buildOne(ctx context.Context, spec Spec, train, test *aps.Dataset, rep *Report, logf func(string, ...any)) ([]byte, ModelReport, error) {
	p := spec.Params
	mr := ModelReport{Name: Name, Version: spec.Version, Trees: p.Trees, Depth: p.MaxDepth}
	t0 := time.Now()
	p.Progress = progress(fmt.Sprintf("v%d", spec.Version), logf)
	logf("v%d: %d trees of depth %d; %d-fold cross-validation picks the threshold", spec.Version, p.Trees, p.MaxDepth, CVFolds)
	oof, err := gbt.CrossValidate(ctx, train, p, CVFolds, CVSeed)
	if err != nil {
		return nil, mr, err
	}
	thr, cvCost, err := gbt.ChooseThreshold(oof, train.Y)
	if err != nil {
		return nil, mr, err
	}
	mr.Threshold, mr.CVCost = thr, cvCost
	logf("v%d: threshold %.6f (cross-validated cost %d on %d training rows); training on all rows", spec.Version, thr, cvCost, train.Len())
	model, err := gbt.TrainContext(ctx, train, p)
	if err != nil {
		return nil, mr, err
	}
	mr.TrainTime = time.Since(t0)

	meta := &bundle.Metadata{
		Schema: bundle.Schema, Name: Name, Version: spec.Version,
		Description: description(rep, spec),
		Input:       gbt.InputName, Output: gbt.OutputName,
		Features: append([]string(nil), train.Features...),
		Labels:   aps.Labels, Threshold: thr,
	}
	onnxBytes, err := model.ONNX(meta)
	if err != nil {
		return nil, mr, err
	}

	// Score the test set in Go and in ONNX Runtime; they must agree.
	goScores := model.PredictAll(test.X)
	ortAll, err := ortScores(onnxBytes, meta.Input, meta.Output, test.X)
	if err != nil {
		return nil, mr, err
	}
	for i := range goScores {
		d := math.Abs(float64(goScores[i] - ortAll[i]))
		mr.MaxORTDiff = max(mr.MaxORTDiff, d)
		if d > maxORTDiff {
			return nil, mr, fmt.Errorf("test row %d: go score %v, onnx runtime %v", i, goScores[i], ortAll[i])
		}
		if (float64(goScores[i]) >= thr) != (float64(ortAll[i]) >= thr) {
			mr.LabelFlips++
		}
	}
	c := aps.Evaluate(goScores, test.Y, thr)
	mr.TP, mr.FP, mr.TN, mr.FN, mr.Cost = c.TP, c.FP, c.TN, c.FN, c.Cost()
	logf("v%d: test %s (|go-ort| <= %.2g)", spec.Version, c, mr.MaxORTDiff)

	golden, err := goldenSamples(onnxBytes, meta, test, goScores, thr, rep.Synthetic)
	if err != nil {
		return nil, mr, err
	}
	meta.Golden = golden
	params := p.Map()
	params["cv_folds"] = strconv.Itoa(CVFolds)
	params["cv_seed"] = strconv.Itoa(CVSeed)
	params["threshold"] = "min 10*FP+500*FN on out-of-fold training scores"
	meta.Training = &bundle.Training{
		Dataset: rep.Dataset, Synthetic: rep.Synthetic, Algorithm: "gbt", Params: params,
		TrainRows: train.Len(), TestRows: test.Len(), FP: c.FP, FN: c.FN, Cost: c.Cost(),
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, meta, onnxBytes); err != nil {
		return nil, mr, err
	}
	sum := sha256.Sum256(buf.Bytes())
	mr.SHA256, mr.ModelBytes, mr.BundleBytes = hex.EncodeToString(sum[:]), len(onnxBytes), buf.Len()
	return buf.Bytes(), mr, nil
}

// goldenSamples scores the chosen test rows with ONNX Runtime, checks each
// against the Go score, and labels them with the threshold.
func goldenSamples(model []byte, meta *bundle.Metadata, test *aps.Dataset, goScores []float32, thr float64, synthetic bool) ([]bundle.Golden, error) {
	picks := pickGolden(test, goScores, thr)
	rows := make([][]float32, len(picks))
	for i, p := range picks {
		rows[i] = test.X[p.row]
	}
	scores, err := ortScores(model, meta.Input, meta.Output, rows)
	if err != nil {
		return nil, err
	}
	prefix := "uci-test"
	if synthetic {
		prefix = "synthetic-test"
	}
	out := make([]bundle.Golden, len(picks))
	for i, p := range picks {
		if d := math.Abs(float64(scores[i] - goScores[p.row])); d > maxORTDiff {
			return nil, fmt.Errorf("golden row %d: onnx runtime %v, go %v", p.row, scores[i], goScores[p.row])
		}
		out[i] = bundle.Golden{
			ID:       goldenID(prefix, p),
			Features: bundle.Row(append([]float32(nil), rows[i]...)),
			Score:    float64(scores[i]),
			Label:    meta.Label(scores[i]),
		}
	}
	return out, nil
}

func description(rep *Report, spec Spec) string {
	size := fmt.Sprintf("Gradient-boosted trees (%d trees, depth %d) predicting APS (air pressure system) failures; score = probability of class \"pos\".", spec.Params.Trees, spec.Params.MaxDepth)
	if rep.Synthetic {
		return "SYNTHETIC APS-shaped data: a LinkEdge demo model trained on data generated by inference/aps " +
			fmt.Sprintf("(train seed %d, test seed %d), NOT on the Scania APS data set; its scores say nothing about real trucks. ", TrainSeed, TestSeed) + size
	}
	return fmt.Sprintf("Trained on %s (the UCI \"APS Failure at Scania Trucks\" files, Scania CV AB). ", rep.Dataset) + size
}

// progress prints a line every tenth tree and at the last one, per fold.
func progress(tag string, logf func(string, ...any)) func(gbt.TreeInfo) {
	return func(ti gbt.TreeInfo) {
		if ti.Tree%10 != 0 && ti.Tree != ti.Trees {
			return
		}
		stage := "final model"
		if ti.Fold > 0 {
			stage = fmt.Sprintf("fold %d/%d", ti.Fold, CVFolds)
		}
		logf("  %s %s: tree %3d/%d  leaves %2d  train loss %.5f  %5.1fs",
			tag, stage, ti.Tree, ti.Trees, ti.Leaves, ti.Loss, ti.Elapsed.Seconds())
	}
}
