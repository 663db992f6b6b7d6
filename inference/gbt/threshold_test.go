package gbt

import (
	"testing"

	"github.com/linkedge/linkedge/inference/aps"
)

func TestChooseThreshold(t *testing.T) {
	// 60 negatives at a given score, for the trade-off cases.
	crowd := func(score float32, n int) ([]float32, []bool) {
		s := make([]float32, n)
		for i := range s {
			s[i] = score
		}
		return s, make([]bool, n)
	}
	tradeScores, tradeLabels := crowd(0.3, 60)
	tradeScores = append(tradeScores, 0.3, 0.9)
	tradeLabels = append(tradeLabels, true, true)

	cheapScores, cheapLabels := crowd(0.3, 40)
	cheapScores = append(cheapScores, 0.3, 0.9)
	cheapLabels = append(cheapLabels, true, true)

	tests := []struct {
		name     string
		scores   []float32
		labels   []bool
		want     float64
		wantCost int64
	}{
		{"perfect separation: halfway between the classes",
			[]float32{0.1, 0.2, 0.8, 0.9}, []bool{false, false, true, true}, 0.5, 0},
		{"no positives: call nothing positive",
			[]float32{0.1, 0.4}, []bool{false, false}, 0.4 + 1e-7, 0},
		{"only positives: call everything positive",
			[]float32{0.1, 0.4}, []bool{true, true}, 0, 0},
		{"missing a positive is cheaper than 60 false alarms",
			tradeScores, tradeLabels, (0.3 + 0.9) / 2, 500},
		{"40 false alarms are cheaper than a miss",
			cheapScores, cheapLabels, 0, 400},
		{"ties between the classes are called together",
			[]float32{0.2, 0.5, 0.5, 0.7}, []bool{false, true, false, true}, (0.2 + 0.5) / 2, 10},
		{"inverted scores: the cheapest cut may be everything",
			[]float32{0.9, 0.8, 0.1}, []bool{false, false, true}, 0, 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, cost, err := ChooseThreshold(tc.scores, tc.labels)
			if err != nil {
				t.Fatal(err)
			}
			if float32(got) != float32(tc.want) || cost != tc.wantCost {
				t.Errorf("got threshold %v cost %d, want %v cost %d", got, cost, tc.want, tc.wantCost)
			}
			if c := aps.Evaluate(tc.scores, tc.labels, got).Cost(); c != cost {
				t.Errorf("reported cost %d, but the threshold gives %d", cost, c)
			}
		})
	}
}

func TestChooseThresholdRejects(t *testing.T) {
	for name, c := range map[string]struct {
		s []float32
		l []bool
	}{
		"empty":     {nil, nil},
		"length":    {[]float32{0.1}, []bool{true, false}},
		"NaN score": {[]float32{nan}, []bool{true}},
	} {
		if _, _, err := ChooseThreshold(c.s, c.l); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
