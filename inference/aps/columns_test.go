package aps

import (
	"strings"
	"testing"
)

func TestColumns(t *testing.T) {
	if len(Columns) != 170 {
		t.Fatalf("%d columns, want 170", len(Columns))
	}
	if Columns[0] != "aa_000" || Columns[len(Columns)-1] != "eg_000" {
		t.Errorf("first %q last %q, want aa_000 and eg_000", Columns[0], Columns[len(Columns)-1])
	}
	seen := map[string]bool{}
	for _, c := range Columns {
		if seen[c] {
			t.Errorf("%s listed twice", c)
		}
		seen[c] = true
		if c == ClassColumn {
			t.Error("class listed as a feature")
		}
	}
	// The real header's quirks.
	for _, c := range []string{"am_0", "ec_00", "ag_009", "ee_000", "cd_000", "bt_000"} {
		if !seen[c] {
			t.Errorf("missing %s", c)
		}
	}
	for _, c := range []string{"aw_000", "bw_000", "cw_000", "dw_000", "am_000", "ec_000"} {
		if seen[c] {
			t.Errorf("%s is not in the real header", c)
		}
	}
	for _, g := range HistogramGroups {
		n := 0
		for _, c := range Columns {
			if strings.HasPrefix(c, g+"_") {
				n++
			}
		}
		if n != 10 {
			t.Errorf("histogram %s has %d bins, want 10", g, n)
		}
	}
	if i := ColumnIndex("am_0"); i < 0 || Columns[i] != "am_0" {
		t.Errorf("ColumnIndex(am_0) = %d", i)
	}
	if ColumnIndex("zz_000") != -1 {
		t.Error("ColumnIndex found an unknown column")
	}
}

func TestCostAndConfusion(t *testing.T) {
	if got := Cost(3, 2); got != 1030 {
		t.Errorf("Cost(3, 2) = %d, want 1030", got)
	}
	c := Evaluate([]float32{0.9, 0.6, 0.2, 0.1, 0.5}, []bool{true, false, true, false, true}, 0.5)
	want := Confusion{TP: 2, FP: 1, TN: 1, FN: 1}
	if c != want || c.Cost() != 510 {
		t.Errorf("got %v, want %v with cost 510", c, want)
	}
	if s := c.String(); !strings.Contains(s, "cost=510") {
		t.Errorf("String() = %q", s)
	}
}

func TestStratifiedSplit(t *testing.T) {
	ds := Generate(5, 1000, 0.1)
	rest, held := ds.StratifiedSplit(0.2, 3)
	if held.Len() != 200 || rest.Len() != 800 || held.Positives() != 20 || rest.Positives() != 80 {
		t.Errorf("split %d/%d rows, %d/%d positives", rest.Len(), held.Len(), rest.Positives(), held.Positives())
	}
	again, _ := ds.StratifiedSplit(0.2, 3)
	for i := range again.X {
		if &again.X[i][0] != &rest.X[i][0] {
			t.Fatal("same seed, different split")
		}
	}
}
