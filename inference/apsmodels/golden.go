package apsmodels

import (
	"fmt"
	"math"
	"slices"

	"github.com/linkedge/linkedge/inference/aps"
)

// goldenPick is one chosen golden row and why it was chosen.
type goldenPick struct {
	row  int
	kind string
}

// goldenPlan says how many rows of each kind the golden set takes: caught
// and missed failures, false and true alarms' counterparts, and the
// sparsest row (most missing values), so a target that mishandles NaN or
// one side of the threshold fails the check.
var goldenPlan = []struct {
	kind string
	n    int
}{
	{"sparse", 1}, {"tp", 4}, {"fn", 2}, {"fp", 2}, {"tn", 3},
}

// minMargin keeps golden rows away from the threshold: a row scoring within
// this distance could change label between runtime builds that differ in
// the last bits, and a golden sample must be stable.
const minMargin = 1e-3

// pickGolden chooses about a dozen test rows deterministically: for each
// kind, the first rows in file order that fit it and sit clearly away from
// the threshold. Kinds with too few rows (a perfect model has no misses)
// are topped up with true negatives.
func pickGolden(test *aps.Dataset, scores []float32, threshold float64) []goldenPick {
	used := map[int]bool{}
	var out []goldenPick
	kindOf := func(i int) string {
		pred := float64(scores[i]) >= threshold
		switch {
		case pred && test.Y[i]:
			return "tp"
		case pred:
			return "fp"
		case test.Y[i]:
			return "fn"
		}
		return "tn"
	}
	stable := func(i int) bool { return math.Abs(float64(scores[i])-threshold) >= minMargin }
	missing := func(i int) int {
		n := 0
		for _, v := range test.X[i] {
			if math.IsNaN(float64(v)) {
				n++
			}
		}
		return n
	}
	total := 0
	for _, p := range goldenPlan {
		total += p.n
		if p.kind == "sparse" {
			best, most := -1, -1
			for i := range test.X {
				if m := missing(i); m > most && stable(i) {
					best, most = i, m
				}
			}
			if best >= 0 {
				used[best] = true
				out = append(out, goldenPick{best, "sparse"})
			}
			continue
		}
		got := 0
		for i := 0; i < test.Len() && got < p.n; i++ {
			if !used[i] && stable(i) && kindOf(i) == p.kind {
				used[i] = true
				out = append(out, goldenPick{i, p.kind})
				got++
			}
		}
	}
	for i := 0; i < test.Len() && len(out) < total; i++ {
		if !used[i] && stable(i) {
			used[i] = true
			out = append(out, goldenPick{i, kindOf(i)})
		}
	}
	slices.SortFunc(out, func(a, b goldenPick) int { return a.row - b.row })
	return out
}

// goldenID names a golden sample after its test row (0-based data row) and
// kind, so a failing sample can be traced back to the file.
func goldenID(prefix string, p goldenPick) string {
	return fmt.Sprintf("%s-row-%05d-%s", prefix, p.row, p.kind)
}
