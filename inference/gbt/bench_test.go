package gbt

import (
	"testing"

	"github.com/linkedge/linkedge/inference/aps"
)

// BenchmarkTrainAPS trains a v2-sized model (120 trees, depth 5) on 60,000
// SYNTHETIC APS rows.
func BenchmarkTrainAPS(b *testing.B) {
	ds := aps.GenerateTrain(1)
	p := DefaultParams()
	p.Trees, p.MaxDepth, p.PosWeight, p.Workers = 120, 5, 5, 2
	b.ResetTimer()
	for range b.N {
		if _, err := Train(ds, p); err != nil {
			b.Fatal(err)
		}
	}
}
