package aps

import (
	"math"
	"testing"
)

func TestGenerateDeterministic(t *testing.T) {
	a, b := Generate(42, 300, 0.1), Generate(42, 300, 0.1)
	assertSameData(t, a, b)
	c := Generate(43, 300, 0.1)
	same := true
	for i := range a.X {
		if math.Float32bits(a.X[i][0]) != math.Float32bits(c.X[i][0]) {
			same = false
			break
		}
	}
	if same {
		t.Error("different seeds gave the same first column")
	}
}

func TestGenerateCounts(t *testing.T) {
	tests := []struct {
		n       int
		rate    float64
		wantPos int
	}{
		{100, 0.1, 10}, {7, 0.5, 4}, {10, 0, 0}, {10, 1, 10}, {10, 2, 10}, {10, -1, 0}, {0, 0.5, 0},
	}
	for _, tc := range tests {
		ds := Generate(1, tc.n, tc.rate)
		if ds.Len() != tc.n || ds.Positives() != tc.wantPos {
			t.Errorf("Generate(n=%d, rate=%v): %d rows, %d positive; want %d positive", tc.n, tc.rate, ds.Len(), ds.Positives(), tc.wantPos)
		}
		if err := ds.Validate(); err != nil {
			t.Error(err)
		}
	}
}

func TestDefaultSetsMatchRealSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 76,000 rows")
	}
	tr, te := GenerateTrain(1), GenerateTest(2)
	if tr.Len() != 60000 || tr.Positives() != 1000 || te.Len() != 16000 || te.Positives() != 375 {
		t.Errorf("train %d/%d, test %d/%d", tr.Len(), tr.Positives(), te.Len(), te.Positives())
	}
}

// TestGenerateShape checks the properties the SYNTHETIC data promises:
// non-negative values, heavy tails, mostly-missing columns, correlated
// histogram bins, a constant column, decimals, and informative columns.
func TestGenerateShape(t *testing.T) {
	ds := Generate(1, 8000, 0.05)
	col := func(name string) []float64 {
		j := ColumnIndex(name)
		out := make([]float64, ds.Len())
		for i, r := range ds.X {
			out[i] = float64(r[j])
		}
		return out
	}
	missRate := func(name string) float64 {
		n := 0
		for _, v := range col(name) {
			if math.IsNaN(v) {
				n++
			}
		}
		return float64(n) / float64(ds.Len())
	}
	var maxVal float64
	for j := range Columns {
		for _, r := range ds.X {
			v := float64(r[j])
			if v < 0 {
				t.Fatalf("%s has negative value %v", Columns[j], v)
			}
			if !math.IsNaN(v) {
				maxVal = math.Max(maxVal, v)
			}
		}
	}
	if maxVal < 1e9 {
		t.Errorf("largest value %g; want heavy tails reaching 1e9", maxVal)
	}
	for _, name := range []string{"br_000", "bq_000", "bp_000", "ab_000", "cr_000"} {
		if r := missRate(name); r < 0.65 || r > 0.85 {
			t.Errorf("%s missing rate %.3f, want 0.65-0.85", name, r)
		}
	}
	typical := 0
	for _, name := range Columns {
		if r := missRate(name); r > 0 && r < 0.1 {
			typical++
		}
	}
	if typical < 120 {
		t.Errorf("only %d columns have a small, non-zero missing rate", typical)
	}
	for _, v := range col("cd_000") {
		if !math.IsNaN(v) && v != 1209600 {
			t.Fatalf("cd_000 = %v, want the constant 1209600", v)
		}
	}
	decimals := 0
	for _, v := range col("ec_00") {
		if !math.IsNaN(v) && v != math.Trunc(v) {
			decimals++
		}
	}
	if decimals < ds.Len()/2 {
		t.Errorf("ec_00 has %d non-integer values, want most", decimals)
	}
	if r := corrLog(col("ag_004"), col("ag_005")); r < 0.5 {
		t.Errorf("neighbouring histogram bins ag_004/ag_005 correlate at %.2f, want > 0.5", r)
	}
	// Informative column: positives run higher.
	var pos, neg []float64
	for i, v := range col("ci_000") {
		if math.IsNaN(v) {
			continue
		}
		if ds.Y[i] {
			pos = append(pos, math.Log1p(v))
		} else {
			neg = append(neg, math.Log1p(v))
		}
	}
	if mean(pos)-mean(neg) < 1 {
		t.Errorf("ci_000 log-mean: pos %.2f, neg %.2f; want positives clearly higher", mean(pos), mean(neg))
	}
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// corrLog is the correlation of log1p(a) and log1p(b) over rows where both
// are present.
func corrLog(a, b []float64) float64 {
	var xs, ys []float64
	for i := range a {
		if !math.IsNaN(a[i]) && !math.IsNaN(b[i]) {
			xs, ys = append(xs, math.Log1p(a[i])), append(ys, math.Log1p(b[i]))
		}
	}
	mx, my := mean(xs), mean(ys)
	var sxy, sxx, syy float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
		syy += (ys[i] - my) * (ys[i] - my)
	}
	return sxy / math.Sqrt(sxx*syy)
}
