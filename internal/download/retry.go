package download

import (
	"context"
	"io"
	"time"
)

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
