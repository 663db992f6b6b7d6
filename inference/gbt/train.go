package gbt

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/linkedge/linkedge/inference/aps"
)

// Train fits a model to ds (X with NaN for missing values, Y true for the
// positive class) with logistic loss.
func Train(ds *aps.Dataset, p Params) (*Model, error) {
	return TrainContext(context.Background(), ds, p)
}

// TrainContext is Train that stops between trees when ctx is done.
func TrainContext(ctx context.Context, ds *aps.Dataset, p Params) (*Model, error) {
	p, err := checkInput(ds, p)
	if err != nil {
		return nil, err
	}
	data := newBinned(ds.X, len(ds.Features), p.MaxBins, p.Workers)
	return newTrainer(ds, p, data).run(ctx, ds, allRows(ds.Len()), 0)
}

func checkInput(ds *aps.Dataset, p Params) (Params, error) {
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		return p, err
	}
	if err := ds.Validate(); err != nil {
		return p, fmt.Errorf("gbt: %w", err)
	}
	if len(ds.Features) == 0 {
		return p, errors.New("gbt: training data has no features")
	}
	if npos := ds.Positives(); npos == 0 || npos == ds.Len() {
		return p, errors.New("gbt: training data needs rows of both classes")
	}
	return p, nil
}

func allRows(n int) []int32 {
	rows := make([]int32, n)
	for i := range rows {
		rows[i] = int32(i)
	}
	return rows
}

// trainer holds the state of one training run.
type trainer struct {
	p     Params
	n     int
	data  *binned
	offs  []int // start of each feature's histogram; offs[nFeat] is the total
	w     []float64
	y     []bool
	f     []float64 // current logit of every row
	grad  []gradPair
	feats []int // features the current tree may use
	rng   *rand.PCG
	pool  [][]histBin
	tmp   []int32
}

type gradPair struct{ g, h float64 }

func newTrainer(ds *aps.Dataset, p Params, data *binned) *trainer {
	nf := len(ds.Features)
	t := &trainer{
		p: p, n: ds.Len(), y: ds.Y, data: data,
		rng: rand.NewPCG(p.Seed, 0x9b7),
	}
	t.offs = make([]int, nf+1)
	for f := range nf {
		t.offs[f+1] = t.offs[f] + t.data.nValueBins(f) + 1
	}
	t.w = make([]float64, t.n)
	for i, y := range ds.Y {
		t.w[i] = 1
		if y {
			t.w[i] = p.PosWeight
		}
	}
	t.f = make([]float64, t.n)
	t.grad = make([]gradPair, t.n)
	t.tmp = make([]int32, t.n)
	return t
}

// run boosts on the rows in train (ascending indices into ds); fold only
// labels progress reports.
func (t *trainer) run(ctx context.Context, ds *aps.Dataset, train []int32, fold int) (*Model, error) {
	start := time.Now()
	var sw, swy float64
	for _, i := range train {
		sw += t.w[i]
		if t.y[i] {
			swy += t.w[i]
		}
	}
	if swy == 0 || swy == sw {
		return nil, errors.New("gbt: training rows need both classes")
	}
	rate := swy / sw
	base := float32(math.Log(rate / (1 - rate)))
	for i := range t.f {
		t.f[i] = float64(base)
	}
	m := &Model{Features: append([]string(nil), ds.Features...), Base: base, Params: t.p}
	m.Params.Progress = nil
	rows := make([]int32, 0, len(train))
	for k := range t.p.Trees {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("gbt: stopped after %d trees: %w", k, err)
		}
		t.gradients(train)
		rows = t.sampleRows(rows[:0], train)
		t.sampleFeatures()
		tree := t.growTree(rows)
		loss := t.update(&tree, train)
		m.Trees = append(m.Trees, tree)
		if t.p.Progress != nil {
			t.p.Progress(TreeInfo{Tree: k + 1, Trees: t.p.Trees, Fold: fold, Leaves: tree.Leaves(), Loss: loss, Elapsed: time.Since(start)})
		}
	}
	return m, m.Validate()
}

// gradients computes the logistic loss's first and second derivatives with
// respect to each training row's logit, times the row weight.
func (t *trainer) gradients(train []int32) {
	for _, i := range train {
		p := 1 / (1 + math.Exp(-t.f[i]))
		y := 0.0
		if t.y[i] {
			y = 1
		}
		w := t.w[i]
		t.grad[i] = gradPair{w * (p - y), w * math.Max(p*(1-p), 1e-16)}
	}
}

func (t *trainer) sampleRows(rows, train []int32) []int32 {
	if t.p.Subsample >= 1 {
		return append(rows, train...)
	}
	for _, i := range train {
		if uniform(t.rng) < t.p.Subsample {
			rows = append(rows, i)
		}
	}
	return rows
}

func (t *trainer) sampleFeatures() {
	nf := len(t.data.cuts)
	t.feats = t.feats[:0]
	if t.p.ColSample >= 1 {
		for f := range nf {
			t.feats = append(t.feats, f)
		}
		return
	}
	k := max(1, int(math.Round(t.p.ColSample*float64(nf))))
	// Partial Fisher-Yates: the first k of a seeded shuffle.
	perm := make([]int, nf)
	for i := range perm {
		perm[i] = i
	}
	for i := 0; i < k; i++ {
		j := i + int(t.rng.Uint64()%uint64(nf-i))
		perm[i], perm[j] = perm[j], perm[i]
	}
	picked := make([]bool, nf)
	for _, f := range perm[:k] {
		picked[f] = true
	}
	for f := range nf {
		if picked[f] {
			t.feats = append(t.feats, f)
		}
	}
}

// update adds the tree to every row's logit (routing rows by bin, which is
// the same as routing by threshold) and returns the new weighted log loss
// over the training rows.
func (t *trainer) update(tree *Tree, train []int32) float64 {
	for i := range t.n {
		t.f[i] += float64(tree.binnedLeaf(t.data, i))
	}
	var loss, sw float64
	for _, i := range train {
		// log(1+exp(-z)) for the true class, computed without overflow.
		z := t.f[i]
		if !t.y[i] {
			z = -z
		}
		loss += t.w[i] * (math.Max(-z, 0) + math.Log1p(math.Exp(-math.Abs(z))))
		sw += t.w[i]
	}
	return loss / sw
}

// binnedLeaf walks the tree for binned row i.
func (tr *Tree) binnedLeaf(data *binned, i int) float32 {
	j := int32(0)
	for {
		nd := &tr.Nodes[j]
		if nd.Feature < 0 {
			return nd.Value
		}
		b := data.cols[nd.Feature][i]
		missing := int(b) == data.nValueBins(int(nd.Feature))
		if (!missing && b <= nd.bin) || (missing && nd.MissingLeft) {
			j = nd.Left
		} else {
			j = nd.Right
		}
	}
}

// uniform is in [0, 1), built from PCG's raw output (fixed by the PCG
// algorithm) rather than math/rand's helpers, so models do not change with
// a Go release.
func uniform(r *rand.PCG) float64 {
	return float64(r.Uint64()>>11) / (1 << 53)
}
