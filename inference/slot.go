package inference

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoModel means the slot has no model to serve yet.
var ErrNoModel = errors.New("no model loaded")

// Slot holds the engine that serves right now and swaps it for another
// without failing a request: calls that started on the old engine finish on
// it, new calls go to the new one, and the old engine closes only when its
// last call has returned. The HTTP and MQTT front ends and the truck agent
// share one Slot.
type Slot struct {
	cur atomic.Pointer[slotEntry]
	mu  sync.Mutex // serialises Swap
}

type slotEntry struct {
	eng  Backend
	refs atomic.Int64
	// retired is closed once the entry has left the slot.
	retired chan struct{}
	drained chan struct{}
	once    sync.Once
}

// Lease is a caller's hold on an engine; Release must be called once.
type Lease struct {
	e *slotEntry
}

// Backend is the leased backend.
func (l Lease) Backend() Backend { return l.e.eng }

// Release gives the engine back; the last release of a retired engine lets
// its Swap go on to close it.
func (l Lease) Release() {
	if l.e.refs.Add(-1) == 0 {
		select {
		case <-l.e.retired:
			l.e.once.Do(func() { close(l.e.drained) })
		default:
		}
	}
}

// Acquire leases the current engine, or returns ErrNoModel.
func (s *Slot) Acquire() (Lease, error) {
	for {
		e := s.cur.Load()
		if e == nil {
			return Lease{}, ErrNoModel
		}
		e.refs.Add(1)
		// Swap may have retired e between the Load and the Add; then drop it
		// and take the new one, so nobody ever runs on a closing engine.
		if s.cur.Load() == e {
			return Lease{e: e}, nil
		}
		Lease{e: e}.Release()
	}
}

// Current returns the serving backend without leasing it, for metadata only
// (name, version); nil when empty.
func (s *Slot) Current() Backend {
	if e := s.cur.Load(); e != nil {
		return e.eng
	}
	return nil
}

// Ready reports whether an engine is serving.
func (s *Slot) Ready() bool { return s.cur.Load() != nil }

// HealthReporter is a Backend that can stop answering on its own, apart from
// this process: a model server in a container, reached over the network.
// Without it a slot holding such a backend looks ready for as long as the
// backend sits in it, even when every call to it fails.
type HealthReporter interface {
	// Healthy reports whether the backend can answer now, from what it has
	// seen recently. /ping calls it on every request, so it must be cheap:
	// no network call on the caller's path.
	Healthy() bool
}

// Healthy reports whether a backend is serving and, if it reports its
// health, says it can answer. The readiness endpoints (/ping,
// /v2/health/ready) use it, so that a dead model container shows there and
// not only as failed predictions.
func (s *Slot) Healthy() bool {
	e := s.cur.Load()
	if e == nil {
		return false
	}
	if h, ok := e.eng.(HealthReporter); ok {
		return h.Healthy()
	}
	return true
}

// Swap installs next (nil empties the slot) and returns once every call on
// the previous engine has finished, or drainTimeout passed. It returns the
// previous engine, still open, so the caller decides whether to close it or
// keep it warm for a rollback.
func (s *Slot) Swap(next Backend, drainTimeout time.Duration) (prev Backend, drained bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ne *slotEntry
	if next != nil {
		ne = &slotEntry{eng: next, retired: make(chan struct{}), drained: make(chan struct{})}
	}
	old := s.cur.Swap(ne)
	if old == nil {
		return nil, true
	}
	close(old.retired)
	if old.refs.Load() == 0 {
		old.once.Do(func() { close(old.drained) })
	}
	if drainTimeout <= 0 {
		drainTimeout = 30 * time.Second
	}
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-old.drained:
		return old.eng, true
	case <-t.C:
		return old.eng, false
	}
}

// Close empties the slot and closes the engine it held.
func (s *Slot) Close() error {
	prev, _ := s.Swap(nil, 0)
	if prev != nil {
		return prev.Close()
	}
	return nil
}
