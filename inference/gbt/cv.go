package gbt

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/linkedge/linkedge/inference/aps"
)

// CrossValidate scores every row of ds with a model that did not see it: the
// rows are dealt into k folds (stratified by class, seeded), and for each
// fold a model with params p is trained on the other k-1 folds and scores
// the fold. The out-of-fold scores are what ChooseThreshold should see: with
// 1.7% positives a single validation split holds too few of them to place
// a threshold reliably, while out-of-fold scores use every training positive
// and still never score a row with a model that trained on it.
//
// The features are binned once for all folds (binning looks at values only,
// never at labels).
func CrossValidate(ctx context.Context, ds *aps.Dataset, p Params, k int, seed uint64) ([]float32, error) {
	p, err := checkInput(ds, p)
	if err != nil {
		return nil, err
	}
	if k < 2 || k > ds.Len() {
		return nil, fmt.Errorf("gbt: %d folds for %d rows", k, ds.Len())
	}
	fold := Folds(ds.Y, k, seed)
	data := newBinned(ds.X, len(ds.Features), p.MaxBins, p.Workers)
	scores := make([]float32, ds.Len())
	for f := range k {
		var train, held []int32
		for i, fi := range fold {
			if fi == f {
				held = append(held, int32(i))
			} else {
				train = append(train, int32(i))
			}
		}
		m, err := newTrainer(ds, p, data).run(ctx, ds, train, f+1)
		if err != nil {
			return nil, fmt.Errorf("gbt: fold %d of %d: %w", f+1, k, err)
		}
		for _, i := range held {
			scores[i] = m.PredictProba(ds.X[i])
		}
	}
	return scores, nil
}

// Folds deals rows into k folds, stratified: the positives are shuffled and
// dealt round-robin, then the negatives, so every fold gets its share of
// each class. The result gives each row's fold in [0, k).
func Folds(labels []bool, k int, seed uint64) []int {
	r := rand.NewPCG(seed, 0xf01d)
	out := make([]int, len(labels))
	for _, cls := range []bool{true, false} {
		var idx []int
		for i, y := range labels {
			if y == cls {
				idx = append(idx, i)
			}
		}
		for i := len(idx) - 1; i > 0; i-- {
			j := int(r.Uint64() % uint64(i+1))
			idx[i], idx[j] = idx[j], idx[i]
		}
		for n, i := range idx {
			out[i] = n % k
		}
	}
	return out
}
