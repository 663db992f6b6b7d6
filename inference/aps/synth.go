package aps

import (
	"math"
)

// Sizes of the real UCI files; the default synthetic sets copy them.
const (
	TrainRows      = 60000
	TrainPositives = 1000
	TestRows       = 16000
	TestPositives  = 375
)

// GenerateTrain makes a SYNTHETIC training set shaped like the real
// aps_failure_training_set.csv: 60,000 rows, exactly 1,000 positives.
func GenerateTrain(seed int64) *Dataset {
	return Generate(seed, TrainRows, float64(TrainPositives)/TrainRows)
}

// GenerateTest makes a SYNTHETIC test set shaped like the real
// aps_failure_test_set.csv: 16,000 rows, exactly 375 positives.
func GenerateTest(seed int64) *Dataset {
	return Generate(seed, TestRows, float64(TestPositives)/TestRows)
}

// Generate makes n rows of SYNTHETIC, APS-shaped data: exactly
// round(n·posRate) positives (posRate is clamped to [0, 1]) at seeded random
// positions, and the same output for the same arguments on every run.
//
// The data is invented by LinkEdge; it is not, and is not derived from, the
// Scania data. It imitates the real set's shape so the pipeline meets the
// same difficulties: non-negative counters with heavy tails (a few values in
// the billions, an overflow-like sentinel), ten-bin histograms whose bins
// move together, per-column missing rates from under 1% to over 80% in
// nested blocks, a constant column, near-duplicate columns, a few decimal
// columns, and 1.7% positives. Each truck has a hidden usage level and a
// hidden "APS stress" level; positives have a higher stress on average, which
// raises a subset of counters and moves the centre of some histograms. Some
// positives look healthy and a few negatives look stressed, so no model can
// be perfect.
func Generate(seed int64, n int, posRate float64) *Dataset {
	if n < 0 {
		n = 0
	}
	posRate = math.Max(0, math.Min(1, posRate))
	sc := loadSchema()
	r := newRNG(uint64(seed), 0xA95D474)
	npos := int(math.Round(float64(n) * posRate))
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	r.shuffle(perm)
	ds := &Dataset{
		Features: append([]string(nil), Columns...),
		X:        make([][]float32, n),
		Y:        make([]bool, n),
	}
	for _, i := range perm[:npos] {
		ds.Y[i] = true
	}
	f := len(Columns)
	backing := make([]float32, n*f)
	for i := range n {
		row := backing[i*f : (i+1)*f : (i+1)*f]
		sc.row(r, ds.Y[i], row)
		ds.X[i] = row
	}
	return ds
}

// stress draws the hidden failure latent. Most positives are clearly
// stressed; some are not (failures with no warning in these counters). A
// small share of negatives are stressed for other reasons (other component
// failures), which is where false alarms come from.
func stress(r *rng, pos bool) float64 {
	if pos {
		if r.float64() < 0.05 {
			return 2.2 + 0.8*r.norm()
		}
		return 4.0 + 0.7*r.norm()
	}
	if r.float64() < 0.007 {
		return 2.5 + 0.7*r.norm()
	}
	return r.norm()
}

// row fills one row.
func (sc *schema) row(r *rng, pos bool, row []float32) {
	u, v := r.norm(), r.norm() // usage and a nuisance factor
	s := stress(r, pos)
	sparseRate := 0.02
	if pos {
		sparseRate = 0.05
	}
	sparse := r.float64() < sparseRate // a truck that reports few counters
	var gu [numGroups]float64
	for g := range gu {
		gu[g] = r.float64()
	}
	bins, histMissing := sc.histograms(r, u, v, s)
	nan := float32(math.NaN())
	for j, c := range sc.cols {
		var miss bool
		switch {
		case c.kind == kindBin:
			miss = histMissing[c.hist] || r.float64() < 0.002
		case c.kind == kindCopy:
			// A copy is reported by the same sensor as its source.
			miss = math.IsNaN(float64(row[c.src])) || r.float64() < 0.002
		case c.group != groupNone:
			rate := c.missing
			if pos {
				rate *= c.posKeep
			}
			miss = gu[c.group] < rate
		default:
			miss = r.float64() < c.missing || (sparse && r.float64() < 0.6)
		}
		val := c.value(r, u, v, s, row, bins)
		if miss {
			row[j] = nan
			continue
		}
		row[j] = float32(val)
	}
}

// value draws column c's value (always, so the draw sequence does not depend
// on which values end up missing).
func (c *colSpec) value(r *rng, u, v, s float64, row []float32, bins [][10]float64) float64 {
	switch c.kind {
	case kindConst:
		return c.constant
	case kindBin:
		return bins[c.hist][c.bin]
	case kindCopy:
		src := float64(row[c.src])
		noise := math.Exp(0.01 * r.norm())
		if math.IsNaN(src) {
			return 0 // the copy is missing too; the value is thrown away
		}
		if c.scale < 1 {
			return math.Round(src*c.scale*noise*100) / 100
		}
		return math.Floor(src * c.scale * noise)
	}
	eps := r.norm()
	if r.float64() < 0.03 { // heavy tail: an occasional extreme truck
		eps += 2.5 * r.norm()
	}
	z := c.loc + c.usage*u + c.other*v + c.signal*s + c.noise*eps
	p0 := c.zero
	if c.signal > 0 && s > 0 {
		p0 *= math.Exp(-c.signal * s) // stressed systems rarely read zero
	}
	zero := r.float64() < p0
	sentinel := r.float64() < c.sentinel
	switch {
	case sentinel:
		return sentinelValue
	case zero:
		return 0
	case c.kind == kindDecimal:
		return math.Round(math.Exp(math.Min(z-5, 16))*100) / 100
	default:
		return math.Floor(math.Exp(math.Min(z, 21.3)))
	}
}

// histograms draws every histogram of a row: a total (scaled by usage) spread
// over ten bins by a bell-shaped profile whose centre moves with stress, so
// bins of one histogram rise and fall together.
func (sc *schema) histograms(r *rng, u, v, s float64) ([][10]float64, []bool) {
	bins := make([][10]float64, len(sc.hists))
	missing := make([]bool, len(sc.hists))
	for h, hs := range sc.hists {
		missing[h] = r.float64() < hs.missing
		total := math.Exp(hs.loc + hs.usage*u + hs.noise*r.norm())
		centre := hs.center + hs.shift*s + hs.other*v + 0.4*r.norm()
		var w [10]float64
		sum := 0.0
		for k := range w {
			d := (float64(k) - centre) / hs.width
			w[k] = math.Exp(-d*d/2) + 1e-4
			sum += w[k]
		}
		for k := range w {
			bins[h][k] = math.Floor(total * w[k] / sum * math.Exp(0.35*r.norm()))
		}
	}
	return bins, missing
}
