package download

import (
	"context"
	"io"
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing waits with "equal jitter": half of
// each wait is fixed, half random. The fixed half keeps a flapping server
// from being hammered; the random half spreads out a fleet of trucks that
// all regained coverage at the same moment (leaving a tunnel, a depot).
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

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// stallReader re-arms the attempt's stall timer whenever bytes arrive. The
// timer cancels the attempt's context, which makes a blocked Read return:
// a read deadline is not reachable through net/http.
type stallReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.d)
	}
	return n, err
}

// progress throttles the caller's Progress callback.
type progress struct {
	fn   func(done, total int64)
	last time.Time
}

func (p *progress) report(done, total int64, force bool) {
	if p.fn == nil {
		return
	}
	now := time.Now()
	if !force && now.Sub(p.last) < progressInterval {
		return
	}
	p.last = now
	p.fn(done, total)
}
