package sagemaker

import (
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing waits with "equal jitter": half of
// each wait fixed, half random. The fixed half really slows us down when
// SageMaker throttles the account (the quota is shared with the training
// pipelines, so backing off protects them too); the random half keeps
// several publishers from retrying in step.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.max
	if b.n < 32 {
		if e := b.min << b.n; e > 0 && e < b.max {
			d = e
		}
	}
	b.n++
	half := d / 2
	return d - half + rand.N(half+1)
}

func (b *backoff) reset() { b.n = 0 }
