package apsmodels

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/aps"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/gbt"
	"github.com/linkedge/linkedge/inference/ortlib"
)

func needORT(t *testing.T) {
	t.Helper()
	if _, err := ortlib.Find(); err != nil {
		t.Skipf("ONNX Runtime not available: %v", err)
	}
	if err := inference.Init(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
}

// checkGolden runs a bundle's golden samples through ONNX Runtime.
func checkGolden(t *testing.T, b *bundle.Bundle) {
	t.Helper()
	m := b.Meta
	rows := make([][]float32, len(m.Golden))
	for i, g := range m.Golden {
		rows[i] = g.Features
	}
	scores, err := ortScores(b.ONNX, m.Input, m.Output, rows)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range m.Golden {
		if d := math.Abs(float64(scores[i]) - g.Score); d > m.EffectiveTolerance() {
			t.Errorf("%s v%d golden %s: onnx runtime %v, want %v", m.Name, m.Version, g.ID, scores[i], g.Score)
		}
		if l := m.Label(scores[i]); l != g.Label {
			t.Errorf("%s v%d golden %s: label %s, want %s", m.Name, m.Version, g.ID, l, g.Label)
		}
	}
}

func TestCommittedBundles(t *testing.T) {
	needORT(t)
	var costs []int64
	for i, data := range [][]byte{V1(), V2()} {
		b, err := bundle.Read(bytes.NewReader(data), bundle.Limits{})
		if err != nil {
			t.Fatalf("committed bundle v%d: %v", i+1, err)
		}
		m := b.Meta
		if m.Name != Name || m.Version != int64(i+1) {
			t.Errorf("bundle %d is %s v%d", i+1, m.Name, m.Version)
		}
		if !strings.HasPrefix(m.Description, "SYNTHETIC") || m.Training == nil || !m.Training.Synthetic {
			t.Errorf("v%d does not say plainly that it is SYNTHETIC: %q", m.Version, m.Description)
		}
		if m.Training.Dataset != "synthetic-aps(train seed=1,test seed=2)" || m.Training.Algorithm != "gbt" {
			t.Errorf("v%d training = %+v", m.Version, m.Training)
		}
		if len(m.Features) != 170 || m.Labels != aps.Labels || m.Input != gbt.InputName || m.Output != gbt.OutputName {
			t.Errorf("v%d has the wrong interface: %d features, labels %v, %s -> %s", m.Version, len(m.Features), m.Labels, m.Input, m.Output)
		}
		if m.Training.Cost != aps.Cost(m.Training.FP, m.Training.FN) {
			t.Errorf("v%d cost %d does not match FP %d / FN %d", m.Version, m.Training.Cost, m.Training.FP, m.Training.FN)
		}
		var pos, withNaN int
		for _, g := range m.Golden {
			if g.Label == aps.LabelPos {
				pos++
			}
			for _, v := range g.Features {
				if math.IsNaN(float64(v)) {
					withNaN++
					break
				}
			}
		}
		if len(m.Golden) < 10 || pos < 2 || withNaN < 2 {
			t.Errorf("v%d golden set: %d samples, %d labelled pos, %d with missing values", m.Version, len(m.Golden), pos, withNaN)
		}
		checkGolden(t, b)
		costs = append(costs, m.Training.Cost)
	}
	if len(costs) == 2 && costs[1] >= costs[0] {
		t.Errorf("v2 test cost %d is not below v1's %d", costs[1], costs[0])
	}
}

// TestBuildReproducible rebuilds both bundles from scratch (about 20-40 s
// on two cores, so not in -short mode) and requires the committed files to
// be byte-identical. On failure regenerate with `linkedge toolkit
// train-aps` and commit the result.
func TestBuildReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("full build of both demo models; run without -short")
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the committed bundles were built on amd64; other architectures may fuse float operations differently")
	}
	needORT(t)
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	v1, v2, rep, err := Build(context.Background(), Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	rep.WriteTable(&table)
	t.Logf("\n%s", table.String())
	if !bytes.Equal(v1, V1()) {
		t.Errorf("fresh v1 (%d bytes) differs from committed %s (%d bytes)", len(v1), V1File, len(V1()))
	}
	if !bytes.Equal(v2, V2()) {
		t.Errorf("fresh v2 (%d bytes) differs from committed %s (%d bytes)", len(v2), V2File, len(V2()))
	}
	if rep.Models[1].Cost >= rep.Models[0].Cost {
		t.Errorf("v2 cost %d is not below v1 cost %d", rep.Models[1].Cost, rep.Models[0].Cost)
	}
}

// TestBuildOnOtherData runs Build on small non-synthetic-labelled data (the
// path real UCI files take) with small models.
func TestBuildOnOtherData(t *testing.T) {
	needORT(t)
	small := func(v int64, trees int) Spec {
		p := gbt.DefaultParams()
		p.Trees, p.MaxDepth = trees, 3
		return Spec{Version: v, Params: p}
	}
	train, test := aps.Generate(21, 3000, 0.05), aps.Generate(22, 1500, 0.05)
	var log strings.Builder
	v1, v2, rep, err := Build(context.Background(), Options{
		Train: train, Test: test, Dataset: "uci-aps", Log: &log,
		Specs: []Spec{small(1, 5), small(2, 15)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "fold 4/4") || !strings.Contains(log.String(), "final model") {
		t.Errorf("progress log lacks fold or final lines:\n%s", log.String())
	}
	for i, data := range [][]byte{v1, v2} {
		b, err := bundle.Read(bytes.NewReader(data), bundle.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		tr := b.Meta.Training
		if tr.Synthetic || tr.Dataset != "uci-aps" || tr.TrainRows != 3000 || tr.TestRows != 1500 {
			t.Errorf("v%d training = %+v", i+1, tr)
		}
		if strings.Contains(b.Meta.Description, "SYNTHETIC") {
			t.Errorf("v%d description claims synthetic data: %q", i+1, b.Meta.Description)
		}
		if rep.Models[i].Cost != tr.Cost || rep.Models[i].LabelFlips != 0 {
			t.Errorf("v%d report %+v disagrees with bundle %+v", i+1, rep.Models[i], tr)
		}
		checkGolden(t, b)
	}
	if _, _, _, err := Build(context.Background(), Options{Train: train}); err == nil {
		t.Error("train without test accepted")
	}
}

func TestPickGolden(t *testing.T) {
	ds := aps.Generate(9, 400, 0.1)
	scores := make([]float32, ds.Len())
	for i, y := range ds.Y {
		// Most rows land on their side of 0.5; every seventh row lands on
		// the wrong side, and row 3 sits right on the threshold.
		s := float32(0.1)
		if y {
			s = 0.9
		}
		if i%7 == 0 {
			s = 1 - s
		}
		scores[i] = s
	}
	scores[3] = 0.5
	picks := pickGolden(ds, scores, 0.5)
	kinds := map[string]int{}
	for i, p := range picks {
		kinds[p.kind]++
		if p.row == 3 {
			t.Error("a row on the threshold was picked")
		}
		if i > 0 && picks[i-1].row >= p.row {
			t.Error("picks are not in row order")
		}
	}
	want := map[string]int{"sparse": 1, "tp": 4, "fn": 2, "fp": 2, "tn": 3}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %s picks, want %d (all: %v)", kinds[k], k, n, kinds)
		}
	}
}
