package aps

import (
	"fmt"
	"math"
)

// Dataset is a table of rows with a binary label. X[i] holds the features of
// row i in the order of Features; NaN marks a missing value. Y[i] is true
// for the positive class ("pos", an APS failure).
type Dataset struct {
	Features []string
	X        [][]float32
	Y        []bool
}

// Len is the number of rows.
func (d *Dataset) Len() int { return len(d.Y) }

// Positives counts the rows labelled positive.
func (d *Dataset) Positives() int {
	n := 0
	for _, y := range d.Y {
		if y {
			n++
		}
	}
	return n
}

// Validate checks that the shape is consistent: one label per row and one
// value per feature in every row, none of them infinite.
func (d *Dataset) Validate() error {
	if len(d.X) != len(d.Y) {
		return fmt.Errorf("dataset has %d rows but %d labels", len(d.X), len(d.Y))
	}
	for i, row := range d.X {
		if len(row) != len(d.Features) {
			return fmt.Errorf("dataset row %d has %d values, want %d", i, len(row), len(d.Features))
		}
		for j, v := range row {
			if math.IsInf(float64(v), 0) {
				return fmt.Errorf("dataset row %d column %s is infinite", i, d.Features[j])
			}
		}
	}
	return nil
}

// Subset returns the rows at idx, sharing the row slices with d.
func (d *Dataset) Subset(idx []int) *Dataset {
	out := &Dataset{Features: d.Features, X: make([][]float32, len(idx)), Y: make([]bool, len(idx))}
	for k, i := range idx {
		out.X[k] = d.X[i]
		out.Y[k] = d.Y[i]
	}
	return out
}

// StratifiedSplit puts round(frac × count) of the positives and of the
// negatives, chosen with a seeded shuffle, into the second result and the
// rest into the first. Keeping the class ratio matters here: with 1.7%
// positives an unlucky plain split could leave a validation set with very
// few of them. Row order is kept within each part.
func (d *Dataset) StratifiedSplit(frac float64, seed uint64) (rest, held *Dataset) {
	r := newRNG(seed, 0x5b117)
	take := make([]bool, d.Len())
	for _, cls := range []bool{false, true} {
		var idx []int
		for i, y := range d.Y {
			if y == cls {
				idx = append(idx, i)
			}
		}
		r.shuffle(idx)
		n := int(math.Round(frac * float64(len(idx))))
		for _, i := range idx[:n] {
			take[i] = true
		}
	}
	var a, b []int
	for i, t := range take {
		if t {
			b = append(b, i)
		} else {
			a = append(a, i)
		}
	}
	return d.Subset(a), d.Subset(b)
}

// Cost is the APS challenge cost: a false alarm (an unneeded workshop check)
// costs 10, a missed failure (a breakdown on the road) costs 500.
func Cost(fp, fn int) int64 { return 10*int64(fp) + 500*int64(fn) }

// Confusion counts predictions against labels.
type Confusion struct {
	TP, FP, TN, FN int
}

// Cost is the challenge cost of these counts.
func (c Confusion) Cost() int64 { return Cost(c.FP, c.FN) }

// Add counts one prediction.
func (c *Confusion) Add(predicted, actual bool) {
	switch {
	case predicted && actual:
		c.TP++
	case predicted:
		c.FP++
	case actual:
		c.FN++
	default:
		c.TN++
	}
}

// String formats the counts for logs.
func (c Confusion) String() string {
	return fmt.Sprintf("TP=%d FP=%d TN=%d FN=%d cost=%d", c.TP, c.FP, c.TN, c.FN, c.Cost())
}

// Evaluate predicts positive where score >= threshold and counts the
// outcome against labels. It panics if the lengths differ.
func Evaluate(scores []float32, labels []bool, threshold float64) Confusion {
	if len(scores) != len(labels) {
		panic(fmt.Sprintf("aps.Evaluate: %d scores for %d labels", len(scores), len(labels)))
	}
	var c Confusion
	for i, s := range scores {
		c.Add(float64(s) >= threshold, labels[i])
	}
	return c
}
