package gbt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/linkedge/linkedge/inference/aps"
)

// ChooseThreshold picks the decision threshold that minimises the APS cost
// 10·FP + 500·FN when rows with score >= threshold are called positive, and
// returns it with that cost.
//
// Call it on a validation split, never on the test set, or the reported
// test cost is optimistic. The threshold lies halfway between the lowest
// score called positive and the highest score called negative, so it does
// not sit on a validation score. Among equal costs the lowest threshold
// wins: with a miss costing 50 false alarms, erring towards alarms is the
// safer way to be wrong. The result is clamped to [0, 1] (a model scoring
// 1.0 on a negative cannot be fully silenced).
func ChooseThreshold(scores []float32, labels []bool) (threshold float64, cost int64, err error) {
	if len(scores) != len(labels) {
		return 0, 0, fmt.Errorf("choose threshold: %d scores for %d labels", len(scores), len(labels))
	}
	if len(scores) == 0 {
		return 0, 0, errors.New("choose threshold: no scores")
	}
	idx := make([]int, len(scores))
	pos := 0
	for i := range idx {
		idx[i] = i
		if labels[i] {
			pos++
		}
		if s := scores[i]; s != s {
			return 0, 0, fmt.Errorf("choose threshold: score %d is NaN", i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	// Start with nothing called positive, then admit one group of equal
	// scores at a time, highest first.
	fp, fn := 0, pos
	best, bestEnd := aps.Cost(fp, fn), 0
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			if labels[idx[j]] {
				fn--
			} else {
				fp++
			}
			j++
		}
		if c := aps.Cost(fp, fn); c <= best {
			best, bestEnd = c, j
		}
		i = j
	}
	switch {
	case bestEnd == 0:
		threshold = min(1, float64(scores[idx[0]])+1e-7)
	case bestEnd == len(idx):
		threshold = 0
	default:
		threshold = (float64(scores[idx[bestEnd-1]]) + float64(scores[idx[bestEnd]])) / 2
	}
	return threshold, best, nil
}
