package broker

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ mqtt.Hook = (*truckBudget)(nil)

// truckBudget holds each truck login to a budget of publishes: token
// buckets in messages and in bytes per second, each with a burst
// (Config.TruckMessagesPerSecond and the three keys beside it). A truck
// over its budget is slowed down, not cut off and not dropped from: the
// hook waits, in the goroutine that reads that client's connection, until
// the budget covers the publish, so the broker reads nothing more from that
// truck meanwhile and what it sends waits in its own socket buffers and
// send queue. A legitimate truck's burst (statuses and events of an update,
// a backlog of forwarded predictions after a day offline) thus loses
// nothing and is at most paced; a flood costs the broker one packet of
// memory and a throttled read. Dropping would lose a real truck's
// update_failed event after a burst, and disconnecting would turn one
// burst into reconnects and resends.
//
// The buckets are per username, so reconnecting does not refill them.
// Each wait is counted (linkedge_broker_truck_throttled_total and
// linkedge_broker_truck_throttled_seconds_total) and a throttled truck is
// logged at Warn by name at most every budgetWarnEvery.
type truckBudget struct {
	mqtt.HookBase
	users map[string]User
	// Rates per second and bursts; a rate of zero leaves that dimension
	// unbounded.
	msgRate, msgBurst   float64
	byteRate, byteBurst float64
	done                <-chan struct{} // closed when the broker closes
	log                 *slog.Logger
	now                 func() time.Time

	throttled atomic.Int64 // publishes that waited
	waited    atomic.Int64 // nanoseconds waited in all

	mu      sync.Mutex
	buckets map[string]*bucket // by username
}

// bucket is one truck's balance. Balances may go below zero: a publish
// larger than the burst is taken whole, and the next one waits until the
// balance is back at zero.
type bucket struct {
	mu          sync.Mutex
	msgs, bytes float64
	last        time.Time
	// For the Warn: throttled publishes not yet logged, and when the
	// last log was.
	pending  int64
	lastWarn time.Time
}

// budgetWarnEvery is how often one throttled truck is logged at most.
const budgetWarnEvery = 10 * time.Second

// budgetPoll is how often a waiting publish checks that its client is still
// connected.
const budgetPoll = 250 * time.Millisecond

func newTruckBudget(cfg *Config, users map[string]User, done <-chan struct{}) *truckBudget {
	b := &truckBudget{users: users, done: done, log: cfg.Logger, now: time.Now, buckets: map[string]*bucket{}}
	if cfg.TruckMessagesPerSecond > 0 {
		b.msgRate, b.msgBurst = cfg.TruckMessagesPerSecond, float64(cfg.TruckMessageBurst)
	}
	if cfg.TruckBytesPerSecond > 0 {
		b.byteRate, b.byteBurst = float64(cfg.TruckBytesPerSecond), float64(cfg.TruckByteBurst)
	}
	return b
}

// ID implements mqtt.Hook.
func (b *truckBudget) ID() string { return "linkedge-truck-budget" }

// Provides implements mqtt.Hook.
func (b *truckBudget) Provides(x byte) bool { return x == mqtt.OnPublish }

// OnPublish implements mqtt.Hook.
func (b *truckBudget) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	name := string(cl.Properties.Username)
	if u, ok := b.users[name]; !ok || u.Role != RoleTruck {
		return pk, nil
	}
	wait := b.take(name, float64(len(pk.Payload)+len(pk.TopicName)))
	if wait <= 0 {
		return pk, nil
	}
	b.throttled.Add(1)
	b.waited.Add(int64(wait))
	b.warn(cl, name, wait)
	if !b.sleep(cl, wait) {
		// The broker or the connection is closing: the client resends an
		// unacknowledged QoS 1/2 publish with its session.
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// take charges one publish of size bytes to name's buckets and returns how
// long it must wait for them to cover it.
func (b *truckBudget) take(name string, size float64) time.Duration {
	b.mu.Lock()
	bk, ok := b.buckets[name]
	if !ok {
		bk = &bucket{msgs: b.msgBurst, bytes: b.byteBurst, last: b.now()}
		b.buckets[name] = bk // at most one per truck of the users file
	}
	b.mu.Unlock()

	bk.mu.Lock()
	defer bk.mu.Unlock()
	now := b.now()
	dt := now.Sub(bk.last).Seconds()
	bk.last = now
	var wait float64
	if b.msgRate > 0 {
		bk.msgs = min(b.msgBurst, bk.msgs+dt*b.msgRate) - 1
		wait = max(wait, -bk.msgs/b.msgRate)
	}
	if b.byteRate > 0 {
		bk.bytes = min(b.byteBurst, bk.bytes+dt*b.byteRate) - size
		wait = max(wait, -bk.bytes/b.byteRate)
	}
	return time.Duration(wait * float64(time.Second))
}

// warn logs a throttled truck, at most every budgetWarnEvery.
func (b *truckBudget) warn(cl *mqtt.Client, name string, wait time.Duration) {
	b.mu.Lock()
	bk := b.buckets[name]
	b.mu.Unlock()
	bk.mu.Lock()
	bk.pending++
	now := b.now()
	if now.Sub(bk.lastWarn) < budgetWarnEvery {
		bk.mu.Unlock()
		return
	}
	n := bk.pending
	bk.pending, bk.lastWarn = 0, now
	bk.mu.Unlock()
	b.log.Warn("truck publishes over its budget: reading from it is slowed down (truck_messages_per_second, truck_bytes_per_second)",
		"username", name, "client", cl.ID, "throttled", n, "wait", wait.Round(time.Millisecond),
		"messages_per_second", b.msgRate, "bytes_per_second", b.byteRate)
}

// sleep waits d, and reports false if the broker or cl's connection closed
// first.
func (b *truckBudget) sleep(cl *mqtt.Client, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	poll := time.NewTicker(budgetPoll)
	defer poll.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-b.done:
			return false
		case <-poll.C:
			if cl.Closed() {
				return false
			}
		}
	}
}
