package netsim

import (
	"sync"
	"time"
)

// limiter paces one direction of the proxy. It keeps the time at which the
// bytes granted so far will have "left" at the configured rate; each grant
// waits until its own bytes have left. Idle time is not saved up, so there
// are no bursts after a pause: a cellular link does not get faster for
// having been idle.
type limiter struct {
	mu   sync.Mutex
	next time.Time
}

// wait blocks until n bytes fit the rate. It returns false if done is
// closed first.
func (lim *limiter) wait(n int, bytesPerSecond int64, done <-chan struct{}) bool {
	if bytesPerSecond <= 0 {
		return true
	}
	lim.mu.Lock()
	now := time.Now()
	if lim.next.Before(now) {
		lim.next = now
	}
	lim.next = lim.next.Add(time.Duration(int64(n) * int64(time.Second) / bytesPerSecond))
	d := lim.next.Sub(now)
	lim.mu.Unlock()

	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// reset forgets the schedule, so a new rate applies from now on.
func (lim *limiter) reset() {
	lim.mu.Lock()
	lim.next = time.Time{}
	lim.mu.Unlock()
}
