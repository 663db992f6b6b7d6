package broker

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ mqtt.Hook = (*backpressure)(nil)

// backpressure makes publishers wait, briefly, for a subscriber that has
// fallen behind, instead of letting mochi drop what it cannot queue.
//
// Why: mochi (v2.7.9) drops a message, QoS 1 included, when the
// subscriber's buffer of pending writes (MaximumClientWritesPending,
// 1,024 here) is full. The clients that subscribe to every truck's status
// and events (the publisher, an operator's tool, the console) take a whole
// fleet's burst through one connection: at 10,000 trucks an update's
// reports outran the publisher and the broker dropped 8,298 of them
// (`linkedge bench fleet --trucks 10000`, 2026-12-06), so a staged rollout
// decided on a partial view. Here a QoS 1 publish that such a subscriber
// would receive waits while that subscriber holds highWater or more
// unacknowledged messages, so its buffer never fills, and the trucks'
// publishes are paced by its reading. A subscriber over the mark that
// acknowledges nothing for stallAfter is treated as stalled (a laptop gone
// to sleep with its connection open) and nobody waits for it until it
// catches up: one stuck tool must not slow a fleet for the minutes its
// keep-alive takes to expire. A subscriber that reads, however slowly, is
// not stalled: paced to its reading, it sits at the mark for as long as the
// fleet reports faster than it reads. (Judging by time over the mark alone
// took the publisher, CPU-starved beside 10,000 simulated trucks, for
// stalled after 15 s, and the broker then dropped 4,444 reports to it.)
//
// Only subscribers with a wildcard filter are watched: a truck subscribes
// to its own few topics, and the check then costs a publish nothing but a
// look at a handful of clients.
type backpressure struct {
	mqtt.HookBase
	srv        *mqtt.Server
	log        *slog.Logger
	highWater  int
	stallAfter time.Duration
	done       <-chan struct{} // closed when the broker closes

	mu      sync.Mutex
	watched map[string]*watch   // client id → state
	pending map[string][]*watch // publisher's client id → the admissions of its publish in progress

	waits   atomic.Int64 // publishes that waited
	waited  atomic.Int64 // nanoseconds waited in all
	stalls  atomic.Int64 // subscribers taken for stalled
	inAdmit atomic.Int64 // publishes waiting in admit now
}

// watch is one watched subscriber's state.
type watch struct {
	id        string // the subscriber's client id
	mu        sync.Mutex
	overSince time.Time // when it went over the mark; zero while under
	warned    time.Time
	stalled   bool         // taken for stalled, until it is under the mark again
	ackAt     atomic.Int64 // Unix nanoseconds of its last acknowledgement
	// admitted counts the copies for it of publishes let through and not
	// yet published (between OnPublish and OnPublished): they are on their
	// way to its in-flight table.
	admitted int
	// queue holds the waiting publishes in arrival order. Each is woken by
	// pump, which admits it, when there is room: one per free place, not
	// all at once (a fleet's thousands of waiting trucks polling for room
	// had burnt the broker's CPU and overshot the mark when they found it).
	queue []chan struct{}
}

// pump admits waiting publishes, oldest first, while the subscriber has
// room under the mark for them; w.mu held. It reports whether there is room
// left.
func (w *watch) pump(inflight, highWater int) bool {
	for inflight+w.admitted < highWater {
		if len(w.queue) == 0 {
			w.overSince, w.stalled = time.Time{}, false
			return true
		}
		w.admitted++
		close(w.queue[0])
		w.queue = w.queue[1:]
	}
	return false
}

// releaseAll admits every waiting publish (the subscriber is stalled or
// gone); w.mu held.
func (w *watch) releaseAll() {
	for _, ch := range w.queue {
		w.admitted++
		close(ch)
	}
	w.queue = nil
}

const (
	backpressureHighWater = 512 // half the write buffer: QoS 0 copies and the rest fit beside
	backpressureStall     = 15 * time.Second
	// backpressureCheck is how often a waiting publish looks whether the
	// subscriber it waits for is gone or stalled; room under the mark
	// wakes it at once (watch.pump).
	backpressureCheck = time.Second
)

func newBackpressure(srv *mqtt.Server, log *slog.Logger, done <-chan struct{}) *backpressure {
	return &backpressure{srv: srv, log: log, highWater: backpressureHighWater, stallAfter: backpressureStall,
		done: done, watched: map[string]*watch{}, pending: map[string][]*watch{}}
}

// ID implements mqtt.Hook.
func (b *backpressure) ID() string { return "linkedge-backpressure" }

// Provides implements mqtt.Hook.
func (b *backpressure) Provides(x byte) bool {
	switch x {
	case mqtt.OnPublish, mqtt.OnPublished, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnPacketRead, mqtt.OnQosComplete:
		return true
	}
	return false
}

// OnSubscribed implements mqtt.Hook.
func (b *backpressure) OnSubscribed(cl *mqtt.Client, _ packets.Packet, _ []byte) { b.review(cl) }

// OnUnsubscribed implements mqtt.Hook.
func (b *backpressure) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) { b.review(cl) }

// OnSessionEstablished implements mqtt.Hook: a resumed session keeps its
// subscriptions without subscribing again.
func (b *backpressure) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { b.review(cl) }

// OnPacketRead implements mqtt.Hook: an acknowledgement from a watched
// subscriber is its progress (see admit). Read here, not in OnQosComplete,
// which mochi also calls when the broker acknowledges the client's own
// QoS 1 publish: a subscriber that publishes but reads nothing is stalled.
func (b *backpressure) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
	default:
		return pk, nil
	}
	b.mu.Lock()
	w := b.watched[cl.ID]
	b.mu.Unlock()
	if w != nil {
		now := time.Now()
		w.ackAt.Store(now.UnixNano())
		w.mu.Lock()
		if w.stalled {
			// Reading again: publishes wait for it again, and it is
			// judged stalled again only after stallAfter of silence.
			w.stalled, w.overSince = false, now
		}
		w.mu.Unlock()
	}
	return pk, nil
}

// OnQosComplete implements mqtt.Hook: a message it acknowledged has left a
// watched subscriber's in-flight table, which may make room for the
// publishes waiting for it.
func (b *backpressure) OnQosComplete(cl *mqtt.Client, _ packets.Packet) {
	b.mu.Lock()
	w := b.watched[cl.ID]
	b.mu.Unlock()
	if w != nil {
		w.mu.Lock()
		w.pump(cl.State.Inflight.Len(), b.highWater)
		w.mu.Unlock()
	}
}

// OnDisconnect implements mqtt.Hook: a session that ends is forgotten (one
// that stays is skipped while its client is away).
func (b *backpressure) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(cl.ID)
	if expire && !cl.IsTakenOver() {
		delete(b.watched, cl.ID)
	}
}

// review watches cl if one of its subscriptions has a wildcard.
func (b *backpressure) review(cl *mqtt.Client) {
	if cl.Net.Inline {
		return
	}
	wild := false
	for _, sub := range cl.State.Subscriptions.GetAll() {
		if strings.ContainsAny(sub.Filter, "+#") && sub.Qos > 0 {
			wild = true
			break
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.watched[cl.ID]; ok == wild {
		return
	}
	if wild {
		b.watched[cl.ID] = &watch{id: cl.ID}
	} else {
		delete(b.watched, cl.ID)
	}
}

// OnPublish implements mqtt.Hook: it waits while a watched subscriber of
// pk's topic is at the mark and not stalled, then counts the copy it will
// get as admitted until OnPublished (see watch.admitted).
func (b *backpressure) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	b.mu.Lock()
	b.release(cl.ID) // a publish a later hook refused never reached OnPublished
	if _, ok := b.watched[cl.ID]; ok {
		// A watched subscriber is never made to wait: this wait would
		// stop the broker reading its connection, and with it the
		// acknowledgements others wait for. (The publisher, announcing
		// while the observer of a 10,000-truck bench was behind, went
		// 15 s without an acknowledgement that way, was taken for
		// stalled, and the broker dropped thousands of reports to it.)
		b.mu.Unlock()
		return pk, nil
	}
	if len(b.watched) == 0 {
		b.mu.Unlock()
		return pk, nil
	}
	b.mu.Unlock()
	// The subscribers are taken in the order of their ids: a publish holds
	// its places with the first while it waits for the next, and in
	// another order two publishes could each hold what the other waits
	// for. (Taken in map order, the publisher's and the bench observer's
	// places filled with publishes waiting for the other, and neither got
	// anything to acknowledge until one was taken for stalled.)
	var ids []string
	for id, s := range b.srv.Topics.Subscribers(pk.TopicName).Subscriptions {
		if s.Qos > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var admitted []*watch
	for _, id := range ids {
		b.mu.Lock()
		w := b.watched[id]
		b.mu.Unlock()
		if w != nil && b.admit(id, w) {
			admitted = append(admitted, w)
		}
	}
	if len(admitted) > 0 {
		b.mu.Lock()
		b.pending[cl.ID] = admitted
		b.mu.Unlock()
	}
	return pk, nil
}

// waiting counts the publishes waiting in admit now (for tests).
func (b *backpressure) waiting() int { return int(b.inAdmit.Load()) }

// OnPublished implements mqtt.Hook: the copies are now in the subscribers'
// in-flight tables, so they no longer count as admitted.
func (b *backpressure) OnPublished(cl *mqtt.Client, _ packets.Packet) {
	b.mu.Lock()
	b.release(cl.ID)
	b.mu.Unlock()
}

// release ends the admissions of publisher id's last publish; b.mu held.
func (b *backpressure) release(id string) {
	for _, w := range b.pending[id] {
		w.mu.Lock()
		w.admitted--
		if len(w.queue) > 0 {
			// Usually no room: the copy is in the in-flight table now.
			// A publish a later hook refused has left some.
			if sub, ok := b.srv.Clients.Get(w.id); ok {
				w.pump(sub.State.Inflight.Len(), b.highWater)
			}
		}
		w.mu.Unlock()
	}
	delete(b.pending, id)
}

// admit waits until watched subscriber id has room under the mark for one
// more copy, counting the copies already admitted and not yet queued, or is
// gone, or is stalled: over the mark with no acknowledgement for stallAfter.
// It reports whether it counted the copy as admitted (it does unless the
// subscriber is gone). The count is what keeps a fleet from overshooting:
// judged by the in-flight table alone, thousands of trucks waiting for the
// publisher all saw it under the mark in the same instant and went at once,
// 6,000 over it, and its buffer of writes overflowed.
func (b *backpressure) admit(id string, w *watch) bool {
	sub, ok := b.srv.Clients.Get(id)
	if !ok || sub.Closed() {
		return false
	}
	w.mu.Lock()
	if w.stalled || (len(w.queue) == 0 && sub.State.Inflight.Len()+w.admitted < b.highWater) {
		w.admitted++
		w.mu.Unlock()
		return true
	}
	if w.overSince.IsZero() {
		w.overSince = time.Now()
	}
	ch := make(chan struct{})
	w.queue = append(w.queue, ch)
	w.mu.Unlock()

	start := time.Now()
	b.inAdmit.Add(1)
	defer func() {
		b.inAdmit.Add(-1)
		b.waits.Add(1)
		b.waited.Add(int64(time.Since(start)))
	}()
	tick := time.NewTicker(backpressureCheck)
	defer tick.Stop()
	for {
		select {
		case <-ch:
			return true // admitted by pump or releaseAll
		case <-b.done:
			b.leave(w, ch)
			return false
		case <-tick.C:
		}
		sub, ok := b.srv.Clients.Get(id)
		gone := !ok || sub.Closed()
		now := time.Now()
		w.mu.Lock()
		// Read under the lock: read before it, the count could predate
		// publishes another waiter's pump let through meanwhile, and this
		// pump would let through as many again (seen under -race).
		n := 0
		if !gone {
			n = sub.State.Inflight.Len()
		}
		if !gone && w.pump(n, b.highWater) {
			// Room came without an acknowledgement (a session cleared).
			w.mu.Unlock()
			continue // ch is closed: taken at the top
		}
		progress := w.overSince
		if ack := time.Unix(0, w.ackAt.Load()); ack.After(progress) {
			progress = ack
		}
		// Over the mark by its own unacknowledged messages: places held
		// by publishes that wait for another subscriber are not its
		// silence.
		stalled := gone || (n >= b.highWater && now.Sub(progress) >= b.stallAfter)
		warn := false
		if stalled {
			if !gone && !w.stalled {
				b.stalls.Add(1)
				warn = now.Sub(w.warned) >= dropReportEvery
				if warn {
					w.warned = now
				}
				w.stalled = true
			}
			w.releaseAll()
		}
		w.mu.Unlock()
		if warn {
			b.log.Warn("a subscriber has acknowledged nothing for a while; publishers no longer wait for it, and what does not fit its queue is dropped",
				"client", id, "unacknowledged", n, "silent_for", now.Sub(progress).Round(time.Second))
		}
	}
}

// leave takes a waiting publish out of w's queue, or gives back its
// admission if pump admitted it meanwhile.
func (b *backpressure) leave(w *watch, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, c := range w.queue {
		if c == ch {
			w.queue = append(w.queue[:i], w.queue[i+1:]...)
			return
		}
	}
	w.admitted--
}
