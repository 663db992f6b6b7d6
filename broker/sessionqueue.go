package broker

import (
	"cmp"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ mqtt.Hook = (*sessionQueues)(nil)

// sessionQueues caps the bytes of the QoS 1/2 messages queued for one
// session (Config.MaxQueuedBytes) and, within it, those about one truck
// (Config.MaxQueuedBytesPerTruck). mochi bounds a session's queue only in
// messages (MaximumInflight, 65,535), and a message may be as large as
// max_packet_size: one truck login flooding its events topic, which the
// publisher reads with a persistent session, took the broker to 0.8 GB of
// RSS with the publisher reading and 1.4 GB with it offline.
//
// A message counts for the truck its topic names (linkedge/v1/trucks/{id}/…,
// which only that truck, or the publisher for its desired and grant topics,
// may write), so one truck fills no more than its share of another client's
// queue and cannot crowd out the events of the other trucks, such as the
// update_failed that halts a rollout. Other topics count for the session
// alone.
//
// A message over either cap is not queued for that session: the other
// subscribers still get it, it is counted in
// linkedge_broker_session_queue_dropped_total, and the session is logged at
// Warn with the topic and the trucks of what it lost, and again with the
// total once its queue is below half its caps (roomAgain): at most once
// every queueWarnEvery, so a reader that keeps falling behind does not
// flood the log.
//
// The accounting mirrors mochi's in-flight table, keyed by client id and
// packet id: OnQosPublish records a queued message, OnQosComplete and
// OnQosDropped forget it, and a session first seen (one restored from the
// store) is counted from its table. The check is made in authHook.OnACLCheck,
// the only call mochi makes for each subscriber of a message before it
// queues it; it does not see the message's size, so a session may go over
// its cap by one message. A subscription request passes the same check, so
// a filter being subscribed is let through (subscribing).
type sessionQueues struct {
	mqtt.HookBase
	max, perTruck int64 // 0: no cap
	log           *slog.Logger
	warnEvery     time.Duration // queueWarnEvery; tests shorten it before Start

	queues  sync.Map // client id -> *sessionQueue
	dropped atomic.Int64
}

// sessionQueue is one session's accounting.
type sessionQueue struct {
	mu          sync.Mutex
	sizes       map[uint16]queuedMessage
	bytes       int64
	byTruck     map[string]int64
	subscribing map[string]int // filters of SUBSCRIBE packets being handled

	// Drops not yet logged at Warn, when that was last done, and the drops
	// since the queue was last below half its cap, by truck ("" for other
	// topics), for the Info when it is.
	pending  int64
	lastWarn time.Time
	lost     int64
	lostBy   map[string]int64
}

// maxLostTrucks bounds sessionQueue.lostBy; further trucks count under "…".
const maxLostTrucks = 1000

type queuedMessage struct {
	size  int64
	truck string
}

// queueWarnEvery is how often one session losing messages is logged at most.
const queueWarnEvery = 10 * time.Second

func newSessionQueues(max, perTruck int64, log *slog.Logger) *sessionQueues {
	return &sessionQueues{max: max, perTruck: perTruck, log: log, warnEvery: queueWarnEvery}
}

// ID implements mqtt.Hook.
func (s *sessionQueues) ID() string { return "linkedge-session-queues" }

// Provides implements mqtt.Hook.
func (s *sessionQueues) Provides(b byte) bool {
	switch b {
	case mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnClientExpired,
		mqtt.OnDisconnect, mqtt.OnSubscribe, mqtt.OnSubscribed:
		return true
	}
	return false
}

// queuedSize is what a message counts for: its payload and topic.
func queuedSize(pk packets.Packet) int64 {
	if pk.FixedHeader.Type != packets.Publish {
		return 0 // an acknowledgement mochi keeps in the same table
	}
	return int64(len(pk.Payload) + len(pk.TopicName))
}

// truckOf returns the truck a topic is about, or "".
func truckOf(topic string) string {
	rest, ok := strings.CutPrefix(topic, topicTrucks)
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return id
}

// queue returns cl's accounting, counted from its in-flight table when it
// is first seen.
func (s *sessionQueues) queue(cl *mqtt.Client) *sessionQueue {
	if q, ok := s.queues.Load(cl.ID); ok {
		return q.(*sessionQueue)
	}
	q := &sessionQueue{sizes: map[uint16]queuedMessage{}, byTruck: map[string]int64{}, subscribing: map[string]int{}, lostBy: map[string]int64{}}
	q.mu.Lock()
	defer q.mu.Unlock()
	if prev, loaded := s.queues.LoadOrStore(cl.ID, q); loaded {
		return prev.(*sessionQueue)
	}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		q.set(pk)
	}
	return q
}

// set records pk under its packet id, replacing what was there, as mochi's
// table does. The caller holds q.mu.
func (q *sessionQueue) set(pk packets.Packet) {
	q.forget(pk.PacketID)
	m := queuedMessage{size: queuedSize(pk), truck: truckOf(pk.TopicName)}
	q.sizes[pk.PacketID] = m
	q.bytes += m.size
	if m.truck != "" {
		q.byTruck[m.truck] += m.size
	}
}

// forget removes the message under id. The caller holds q.mu.
func (q *sessionQueue) forget(id uint16) {
	m, ok := q.sizes[id]
	if !ok {
		return
	}
	delete(q.sizes, id)
	q.bytes -= m.size
	if m.truck != "" {
		if q.byTruck[m.truck] -= m.size; q.byTruck[m.truck] <= 0 {
			delete(q.byTruck, m.truck)
		}
	}
}

// admit reports whether a message on topic may be queued for cl (or, while
// cl subscribes to topic, whether the subscription may be made).
func (s *sessionQueues) admit(cl *mqtt.Client, topic string) bool {
	if cl.Net.Inline {
		return true
	}
	q := s.queue(cl)
	q.mu.Lock()
	truck := truckOf(topic)
	over := s.max > 0 && q.bytes >= s.max
	overTruck := truck != "" && s.perTruck > 0 && q.byTruck[truck] >= s.perTruck
	if (!over && !overTruck) || q.subscribing[topic] > 0 {
		q.mu.Unlock()
		return true
	}
	s.dropped.Add(1)
	q.pending++
	q.lost++
	if _, ok := q.lostBy[truck]; ok || len(q.lostBy) < maxLostTrucks {
		q.lostBy[truck]++
	} else {
		q.lostBy["…"]++
	}
	now := time.Now()
	if now.Sub(q.lastWarn) < s.warnEvery {
		q.mu.Unlock()
		return false
	}
	n, bytes, truckBytes, by := q.pending, q.bytes, q.byTruck[truck], summarizeLost(q.lostBy)
	q.pending, q.lastWarn = 0, now
	q.mu.Unlock()
	reason := "the session's queue is full (max_queued_bytes)"
	if !over {
		reason = "the session's queue holds its share for this truck (max_queued_bytes_per_truck)"
	}
	s.log.Warn("messages not queued for a client that is offline or reads too slowly: "+reason,
		"client", cl.ID, "username", string(cl.Properties.Username), "dropped", n, "topic", topic, "truck", truck,
		"queued_bytes", bytes, "queued_bytes_truck", truckBytes, "max_queued_bytes", s.max, "max_queued_bytes_per_truck", s.perTruck,
		"lost_by_truck", by)
	return false
}

// OnQosPublish implements mqtt.Hook: a message queued for cl, or sent again.
func (s *sessionQueues) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if cl.Net.Inline {
		return
	}
	q := s.queue(cl)
	q.mu.Lock()
	q.set(pk)
	q.mu.Unlock()
}

// OnQosComplete implements mqtt.Hook.
func (s *sessionQueues) OnQosComplete(cl *mqtt.Client, pk packets.Packet) { s.done(cl, pk.PacketID) }

// OnQosDropped implements mqtt.Hook.
func (s *sessionQueues) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { s.done(cl, pk.PacketID) }

func (s *sessionQueues) done(cl *mqtt.Client, id uint16) {
	v, ok := s.queues.Load(cl.ID)
	if !ok {
		return
	}
	q := v.(*sessionQueue)
	q.mu.Lock()
	q.forget(id)
	var lost int64
	var by string
	if now := time.Now(); q.lost > 0 && q.roomAgain(s.max, s.perTruck) && now.Sub(q.lastWarn) >= s.warnEvery {
		// The client reads again: say what it missed, at most as often as
		// the drops themselves are logged.
		lost, by = q.lost, summarizeLost(q.lostBy)
		q.lost, q.pending, q.lostBy, q.lastWarn = 0, 0, map[string]int64{}, now
	}
	q.mu.Unlock()
	if lost > 0 {
		s.log.Warn("a client's queue has room again; messages were not queued for it while it was full",
			"client", cl.ID, "username", string(cl.Properties.Username), "lost", lost, "lost_by_truck", by)
	}
}

// roomAgain reports whether the queue is below half its caps, the total
// and those of the trucks it lost messages of. The caller holds q.mu.
func (q *sessionQueue) roomAgain(max, perTruck int64) bool {
	if max > 0 && q.bytes >= max/2 {
		return false
	}
	for truck := range q.lostBy {
		if truck != "" && perTruck > 0 && q.byTruck[truck] >= perTruck/2 {
			return false
		}
	}
	return true
}

// summarizeLost lists the trucks of lost messages with their counts, the
// most first, ten at most: "t1:16 t3:3 (other topics):2 and 4 more".
func summarizeLost(by map[string]int64) string {
	trucks := slices.Collect(maps.Keys(by))
	slices.SortFunc(trucks, func(a, b string) int {
		if c := cmp.Compare(by[b], by[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var sb strings.Builder
	for i, tr := range trucks {
		if i == 10 {
			fmt.Fprintf(&sb, " and %d more", len(trucks)-i)
			break
		}
		if i > 0 {
			sb.WriteByte(' ')
		}
		name := tr
		if name == "" {
			name = "(other topics)"
		}
		fmt.Fprintf(&sb, "%s:%d", name, by[tr])
	}
	return sb.String()
}

// OnClientExpired implements mqtt.Hook: the session is gone.
func (s *sessionQueues) OnClientExpired(cl *mqtt.Client) { s.queues.Delete(cl.ID) }

// OnDisconnect implements mqtt.Hook: a session that ends with its
// connection is gone (its in-flight table is cleared next).
func (s *sessionQueues) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && !cl.IsTakenOver() {
		s.queues.Delete(cl.ID)
	}
}

// OnSubscribe implements mqtt.Hook: the filters being subscribed pass the
// queue check, which mochi makes for them as for a delivery.
func (s *sessionQueues) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	q := s.queue(cl)
	q.mu.Lock()
	for _, f := range pk.Filters {
		q.subscribing[f.Filter]++
	}
	q.mu.Unlock()
	return pk
}

// OnSubscribed implements mqtt.Hook.
func (s *sessionQueues) OnSubscribed(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if cl.Net.Inline {
		return
	}
	q := s.queue(cl)
	q.mu.Lock()
	for _, f := range pk.Filters {
		if q.subscribing[f.Filter]--; q.subscribing[f.Filter] <= 0 {
			delete(q.subscribing, f.Filter)
		}
	}
	q.mu.Unlock()
}

// queuedBytes sums the bytes queued for every session.
func (s *sessionQueues) queuedBytes() int64 {
	var n int64
	s.queues.Range(func(_, v any) bool {
		q := v.(*sessionQueue)
		q.mu.Lock()
		n += q.bytes
		q.mu.Unlock()
		return true
	})
	return n
}
