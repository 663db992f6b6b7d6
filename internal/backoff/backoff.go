// Package backoff yields exponentially growing waits with "equal jitter":
// half of each wait is fixed, half random. The fixed half really slows a
// client down when a server is struggling or throttling; the random half
// spreads out a fleet of clients that all failed at the same moment (trucks
// leaving a tunnel together, publishers sharing an account's quota).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is one retry sequence. The zero value is not useful: set Min and
// Max (Min > 0, Max >= Min).
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the wait before the next try: Min, 2·Min, 4·Min… capped at
// Max, each reduced by a random amount of up to half.
func (b *Backoff) Next() time.Duration {
	d := b.Max
	if b.n < 32 {
		if e := b.Min << b.n; e > 0 && e < b.Max {
			d = e
		}
	}
	b.n++
	half := d / 2
	return d - half + rand.N(half+1)
}

// Reset starts the sequence again from Min, after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Nth is the wait before retry n (1 for the first retry) of a sequence that
// is not kept in memory, such as one counted in a state file that survives
// restarts: the same as the nth call of Next on a fresh Backoff.
func Nth(min, max time.Duration, n int) time.Duration {
	b := Backoff{Min: min, Max: max, n: max0(n - 1)}
	return b.Next()
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
