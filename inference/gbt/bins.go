package gbt

import (
	"math"
	"slices"
	"sort"
	"sync"
)

// binned is the training data cut into bins: one byte per value, stored by
// feature so a histogram pass over one feature reads memory in order.
//
// Value bin i of feature f holds the x with cuts[f][i-1] < x <= cuts[f][i],
// so "bin <= i" is exactly "x <= cuts[f][i]": the test a tree node makes at
// prediction time. Bin len(cuts[f]) holds the values above the last cut, and
// bin len(cuts[f])+1 is the missing bin.
type binned struct {
	cuts [][]float32
	cols [][]uint8
	// rows is the same bins stored by row (nRows × nFeat), for histogram
	// passes that read each row's gradient once.
	rows []uint8
	nf   int
}

// nValueBins is the number of value bins of feature f; it is also the index
// of its missing bin.
func (b *binned) nValueBins(f int) int { return len(b.cuts[f]) + 1 }

func newBinned(X [][]float32, nFeat, maxBins, workers int) *binned {
	b := &binned{cuts: make([][]float32, nFeat), cols: make([][]uint8, nFeat), nf: nFeat}
	// Features are independent, so they are cut in parallel; each one's
	// result depends only on its own values.
	var wg sync.WaitGroup
	next := make(chan int)
	for range max(1, workers) {
		wg.Go(func() {
			vals := make([]float32, 0, len(X))
			for f := range next {
				vals = vals[:0]
				for _, row := range X {
					if v := row[f]; !math.IsNaN(float64(v)) {
						vals = append(vals, v)
					}
				}
				slices.Sort(vals)
				cuts := quantileCuts(vals, maxBins)
				col := make([]uint8, len(X))
				for i, row := range X {
					col[i] = binOf(cuts, row[f])
				}
				b.cuts[f], b.cols[f] = cuts, col
			}
		})
	}
	for f := range nFeat {
		next <- f
	}
	close(next)
	wg.Wait()
	b.rows = make([]uint8, len(X)*nFeat)
	for f, col := range b.cols {
		for i, v := range col {
			b.rows[i*nFeat+f] = v
		}
	}
	return b
}

// binOf places x among cuts: the first i with x <= cuts[i], len(cuts) when
// x is above them all, len(cuts)+1 when x is NaN.
func binOf(cuts []float32, x float32) uint8 {
	if math.IsNaN(float64(x)) {
		return uint8(len(cuts) + 1)
	}
	return uint8(sort.Search(len(cuts), func(i int) bool { return x <= cuts[i] }))
}

// quantileCuts picks at most maxBins-1 cut points over sorted values so the
// bins hold about equal numbers of rows, never splitting equal values. With
// few distinct values every gap between them gets a cut. Each cut lies
// between two neighbouring distinct values, at their midpoint when float32
// can represent one, so unseen values in between go to the nearer side.
func quantileCuts(sorted []float32, maxBins int) []float32 {
	if len(sorted) == 0 {
		return nil
	}
	type run struct {
		v float32
		n int
	}
	var runs []run
	for _, v := range sorted {
		if len(runs) > 0 && runs[len(runs)-1].v == v {
			runs[len(runs)-1].n++
			continue
		}
		runs = append(runs, run{v, 1})
	}
	var cuts []float32
	between := func(a, b float32) float32 {
		m := float32((float64(a) + float64(b)) / 2)
		if m >= b || m < a {
			return a
		}
		return m
	}
	if len(runs) <= maxBins {
		for i := 1; i < len(runs); i++ {
			cuts = append(cuts, between(runs[i-1].v, runs[i].v))
		}
		return cuts
	}
	n := len(sorted)
	acc := 0
	next := 1
	for i := 0; i < len(runs)-1 && len(cuts) < maxBins-1; i++ {
		acc += runs[i].n
		if float64(acc) >= float64(next)*float64(n)/float64(maxBins) {
			cuts = append(cuts, between(runs[i].v, runs[i+1].v))
			for float64(acc) >= float64(next)*float64(n)/float64(maxBins) {
				next++
			}
		}
	}
	return cuts
}
