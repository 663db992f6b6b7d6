package broker

import (
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ mqtt.Hook = (*sessionHook)(nil)

// sessionHook repairs gaps in mochi's (v2.7.9) session handling that a fleet
// of intermittently connected trucks hits all the time.
type sessionHook struct {
	mqtt.HookBase
	srv   *mqtt.Server
	store *boltStore // set by Start when there is a DataDir
	// acl is the broker's read/write check, asked again before a retained
	// message is replayed (see OnSessionEstablished).
	acl func(cl *mqtt.Client, topic string, write bool) bool
	// guard keeps the scan of retained messages apart from retained
	// writes (see retainGuard); nil in tests that build the hook alone.
	guard *retainGuard

	displaced sync.Map // displacedKey -> packets.Packet; see OnPacketRead
	// subscribing holds, between OnSubscribe and OnPacketProcessed, the
	// filters of a SUBSCRIBE whose retained messages are ours to send.
	subscribing sync.Map // displacedKey -> []retainedFilter

	// retainedOverQuota counts retained messages not sent because the
	// subscriber's session held MaximumInflight unacknowledged ones.
	retainedOverQuota atomic.Int64
}

// displacedKey names an outgoing message that a client's own publish is
// about to push out of the client's in-flight table.
type displacedKey struct {
	cl *mqtt.Client
	id uint16
}

// ID implements mqtt.Hook.
func (h *sessionHook) ID() string { return "linkedge-sessions" }

// Provides implements mqtt.Hook.
func (h *sessionHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnClientExpired, mqtt.OnQosDropped, mqtt.OnPacketRead, mqtt.OnPacketProcessed, mqtt.OnSessionEstablished, mqtt.OnSubscribe:
		return true
	}
	return false
}

// OnClientExpired implements mqtt.Hook. When a disconnected persistent
// session expires, mochi forgets the client but keeps its subscriptions in
// the topic index and its queued messages in memory and in storage; every
// retired or re-imaged truck would leak them forever. Unsubscribing and
// clearing the queue here also deletes the stored records through the storage
// hook's usual callbacks.
func (h *sessionHook) OnClientExpired(cl *mqtt.Client) {
	h.srv.UnsubscribeClient(cl)
	cl.ClearInflights()
}

// OnSessionEstablished implements mqtt.Hook. After a start that followed a
// crash (the store was not closed by Stop), a session restored from disk
// gets the retained messages of its subscriptions again when its client
// first resumes it, as if it had subscribed; a message already queued for
// it is not sent twice.
//
// Why: the records of messages queued for a session are committed a few
// milliseconds after mochi queues them (kvHook.queue), and mochi acknowledges
// the publish before it queues the copies at all, so a broker that loses
// power just after a release was announced can come back without some
// offline trucks' copies of it. Those trucks resume their sessions and do not
// subscribe again (that is the point of a persistent session), so without
// this they would not hear of the release until the next one. A truck that
// did get it reads the same serial again and ignores it; the cost is one
// retained release per truck per broker crash.
func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if h.store == nil || pk.Connect.Clean || !h.store.firstSinceRestore(cl.ID) {
		return
	}
	queued := queuedFor(cl)
	for _, sub := range cl.State.Subscriptions.GetAll() {
		if strings.HasPrefix(sub.Filter, "$share/") {
			continue // never brings retained messages
		}
		for _, msg := range h.retained(sub.Filter) {
			if k := (queuedKey{msg.TopicName, msg.Created}); !queued[k] {
				queued[k] = true // two filters may match it: one copy
				h.sendRetained(cl, sub, msg)
			}
		}
	}
}

// OnQosDropped implements mqtt.Hook. When a reconnecting client resumes its
// session, mochi moves the queued messages to the new connection and then
// "clears" them from the old one, which decrements the in-flight gauge a
// second time for every message moved (they are decremented again when
// acknowledged). Only such moves reach here with a taken-over client, so the
// decrement is undone.
func (h *sessionHook) OnQosDropped(cl *mqtt.Client, _ packets.Packet) {
	if cl.IsTakenOver() {
		atomic.AddInt64(&h.srv.Info.Inflight, 1)
	}
}

// OnPacketRead implements mqtt.Hook. mochi keeps one in-flight table per
// client for both directions, keyed by packet id, and treats an incoming
// QoS 1/2 PUBLISH whose id is in the table as a retransmission: it deletes
// the entry. But packet ids are chosen independently by each side, so the
// entry is often an unacknowledged message the broker sent to the client, as
// when a truck publishes its status while the broker is resending its queue
// after a reconnect. That message would be forgotten (in memory and on disk)
// and never redelivered if the link dropped before the truck processed it.
// The message is set aside here and put back in OnPacketProcessed.
//
// SUBSCRIBE and UNSUBSCRIBE meet the same confusion: mochi refuses one whose
// packet id is in the table ("packet identifier in use", 0x91, which an MQTT
// 3.1.1 client reads as a failed subscription and drops without a word). A
// client subscribing to its second topic while the retained messages of its
// first are still unacknowledged hit it every time: the publisher (releases,
// then statuses, then events), `linkedge fleet` (statuses, then releases).
func (h *sessionHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !usesPacketID(pk) {
		return pk, nil
	}
	if held, ok := cl.State.Inflight.Get(pk.PacketID); ok && outgoing(held) {
		h.displaced.Store(displacedKey{cl, pk.PacketID}, held)
		if pk.FixedHeader.Type != packets.Publish && cl.State.Inflight.Delete(pk.PacketID) {
			// mochi only looks the id up for these; out of its way, the
			// message is back in the table once the packet is processed.
			// (A PUBLISH it deletes itself.)
			atomic.AddInt64(&h.srv.Info.Inflight, -1)
			// The retained messages this SUBSCRIBE brings must not take
			// the id meanwhile, which they would after a reconnect (mochi
			// counts ids from 0 per connection): move the counter past it.
			for range 1 << 16 {
				if id, err := cl.NextPacketID(); err != nil || uint16(id) >= pk.PacketID {
					break
				}
			}
		}
	}
	return pk, nil
}

// OnPacketProcessed implements mqtt.Hook: it puts back a message set aside
// by OnPacketRead, then, for a SUBSCRIBE, delivers the retained messages
// that OnSubscribe kept mochi from sending (see retained.go).
func (h *sessionHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if !usesPacketID(pk) {
		return
	}
	h.restoreDisplaced(cl, pk)
	if pk.FixedHeader.Type == packets.Subscribe {
		h.deliverRetained(cl, pk)
	}
}

// restoreDisplaced puts back the message OnPacketRead set aside for pk.
func (h *sessionHook) restoreDisplaced(cl *mqtt.Client, pk packets.Packet) {
	v, ok := h.displaced.LoadAndDelete(displacedKey{cl, pk.PacketID})
	if !ok {
		return
	}
	if cur, taken := cl.State.Inflight.Get(pk.PacketID); taken {
		if outgoing(cur) {
			if cur.Created == v.(packets.Packet).Created && cur.TopicName == v.(packets.Packet).TopicName {
				return // mochi returned early (say, ACL refusal) and kept it
			}
			// The id went round all 65,535 values during one packet and
			// a new message took it: the older one is lost as before.
			h.Log.Warn("queued message displaced by a newer one with the same packet id", "client", cl.ID, "packet_id", pk.PacketID)
			return
		}
		// An incoming QoS 2 exchange now holds the id, and mochi's table
		// cannot track both; the outgoing message is lost as before.
		h.Log.Warn("queued message displaced by an incoming QoS 2 publish", "client", cl.ID, "packet_id", pk.PacketID)
		return
	}
	held := v.(packets.Packet)
	if cl.State.Inflight.Set(held) {
		atomic.AddInt64(&h.srv.Info.Inflight, 1)
	}
	if h.store != nil {
		h.store.OnQosPublish(cl, held, held.Created, 0)
	}
}

// usesPacketID reports whether an incoming packet carries a packet id that
// mochi looks up in the client's in-flight table.
func usesPacketID(pk packets.Packet) bool {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		return pk.FixedHeader.Qos > 0
	case packets.Subscribe, packets.Unsubscribe:
		return true
	}
	return false
}

// outgoing reports whether an in-flight entry belongs to a message the broker
// sent (awaiting PUBACK/PUBREC, or PUBCOMP after its PUBREL).
func outgoing(pk packets.Packet) bool {
	return pk.FixedHeader.Type == packets.Publish || pk.FixedHeader.Type == packets.Pubrel
}
