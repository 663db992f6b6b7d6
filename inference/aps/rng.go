package aps

import (
	"math"
	"math/rand/v2"
)

// rng is a small seeded generator. It draws raw 64-bit words from PCG (an
// algorithm fixed by its definition) and builds uniforms, normals and
// shuffles itself, so the synthetic data depends only on this file and not
// on how math/rand happens to turn words into numbers in a Go release.
type rng struct {
	src      *rand.PCG
	spare    float64
	hasSpare bool
}

func newRNG(seed, stream uint64) *rng {
	return &rng{src: rand.NewPCG(seed, stream)}
}

// float64 is uniform in [0, 1).
func (r *rng) float64() float64 {
	return float64(r.src.Uint64()>>11) / (1 << 53)
}

// intn is uniform in [0, n); the modulo bias is below 2^-40 for the sizes
// used here.
func (r *rng) intn(n int) int {
	return int(r.src.Uint64() % uint64(n))
}

// norm is a standard normal draw (Box-Muller, both values used).
func (r *rng) norm() float64 {
	if r.hasSpare {
		r.hasSpare = false
		return r.spare
	}
	u1 := 1 - r.float64() // (0, 1], so the log is finite
	u2 := r.float64()
	rad := math.Sqrt(-2 * math.Log(u1))
	r.spare = rad * math.Sin(2*math.Pi*u2)
	r.hasSpare = true
	return rad * math.Cos(2*math.Pi*u2)
}

// uniform is uniform in [lo, hi).
func (r *rng) uniform(lo, hi float64) float64 {
	return lo + (hi-lo)*r.float64()
}

// shuffle permutes idx in place (Fisher-Yates).
func (r *rng) shuffle(idx []int) {
	for i := len(idx) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		idx[i], idx[j] = idx[j], idx[i]
	}
}
