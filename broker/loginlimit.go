package broker

import (
	"net"
	"sync"
	"time"
)

// loginLimiter counts failed logins per client address, and per address
// and username, over a sliding minute. Past the limits, a login from that
// address (for that username) is refused before its password is checked:
// a password guess costs the broker a bcrypt comparison, tens of
// milliseconds of CPU, and a flood of them slows every truck's login.
//
// The limits are generous for a fleet behind carrier-grade NAT, where many
// trucks share an address: a truck with a wrong password retries every
// few seconds at most (fleet.max_reconnect_interval), well under either.
type loginLimiter struct {
	mu      sync.Mutex
	perAddr map[string]*failWindow
	perUser map[[2]string]*failWindow
	now     func() time.Time
}

// Failed logins allowed per minute before the next ones are refused
// unchecked.
const (
	maxFailsPerAddrUser = 10
	maxFailsPerAddr     = 100
	failWindowLen       = time.Minute
	// maxTracked bounds the memory: past it the oldest half is dropped.
	maxTracked = 10_000
)

type failWindow struct {
	start time.Time
	n     int
}

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{perAddr: map[string]*failWindow{}, perUser: map[[2]string]*failWindow{}, now: time.Now}
}

// host is the address part of a remote address ("ip:port").
func host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// blocked reports whether a login from remote as user is refused unchecked.
func (l *loginLimiter) blocked(remote, user string) bool {
	a := host(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	return count(l.perAddr[a], now) >= maxFailsPerAddr || count(l.perUser[[2]string{a, user}], now) >= maxFailsPerAddrUser
}

// failed records a failed login.
func (l *loginLimiter) failed(remote, user string) {
	a := host(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if len(l.perAddr)+len(l.perUser) > maxTracked {
		l.prune(now)
	}
	bump(l.perAddr, a, now)
	bump(l.perUser, [2]string{a, user}, now)
}

func count(w *failWindow, now time.Time) int {
	if w == nil || now.Sub(w.start) >= failWindowLen {
		return 0
	}
	return w.n
}

func bump[K comparable](m map[K]*failWindow, k K, now time.Time) {
	w := m[k]
	if w == nil || now.Sub(w.start) >= failWindowLen {
		m[k] = &failWindow{start: now, n: 1}
		return
	}
	w.n++
}

// prune drops the windows that are over.
func (l *loginLimiter) prune(now time.Time) {
	for k, w := range l.perAddr {
		if now.Sub(w.start) >= failWindowLen {
			delete(l.perAddr, k)
		}
	}
	for k, w := range l.perUser {
		if now.Sub(w.start) >= failWindowLen {
			delete(l.perUser, k)
		}
	}
}
