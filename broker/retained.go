package broker

import (
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The broker delivers retained messages to a new subscription itself
// instead of leaving it to mochi (v2.7.9).
//
// Why: mochi queues a subscription's retained messages in the client's
// buffer of pending writes (MaximumClientWritesPending, 1,024 here to keep
// a connected truck near 100 KB) as fast as it can loop over them, and
// drops whatever does not fit, QoS 1 included, without telling the
// client. Subscribing to every truck's status of a 10,000-truck fleet
// (the publisher starting clean, `linkedge fleet`, the bench's observer)
// lost thousands of them. Here each retained message is written to the
// connection directly, on the subscriber's own goroutine after its SUBACK
// as mochi does, so a slow reader slows its own subscription down rather
// than losing messages. Messages published meanwhile still go through
// mochi's buffer.

// retainedFilter is one filter of a SUBSCRIBE whose retained messages
// sendRetained delivers.
type retainedFilter struct {
	filter string
	skip   bool // the client's Retain Handling asked for none
}

// OnSubscribe implements mqtt.Hook: it tells mochi to send no retained
// messages for pk's filters (Retain Handling 2) and notes which ones the
// client wants, by its own Retain Handling, for OnPacketProcessed.
func (h *sessionHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	wanted := make([]retainedFilter, 0, len(pk.Filters))
	filters := make(packets.Subscriptions, len(pk.Filters))
	for i, sub := range pk.Filters {
		filters[i] = sub
		if strings.HasPrefix(sub.Filter, "$share/") {
			continue // mochi sends none for these
		}
		_, existed := cl.State.Subscriptions.Get(sub.Filter)
		skip := sub.RetainHandling == 2 || sub.RetainHandling == 1 && existed
		wanted = append(wanted, retainedFilter{filter: sub.Filter, skip: skip})
		filters[i].RetainHandling = 2
	}
	pk.Filters = filters
	h.subscribing.Store(displacedKey{cl, pk.PacketID}, wanted)
	return pk
}

// deliverRetained sends the retained messages of the filters of pk that
// were granted (see OnSubscribe).
func (h *sessionHook) deliverRetained(cl *mqtt.Client, pk packets.Packet) {
	v, ok := h.subscribing.LoadAndDelete(displacedKey{cl, pk.PacketID})
	if !ok {
		return
	}
	for _, f := range v.([]retainedFilter) {
		if f.skip {
			continue
		}
		sub, granted := cl.State.Subscriptions.Get(f.filter)
		if !granted {
			continue // refused
		}
		for _, msg := range h.retained(f.filter) {
			if !h.sendRetained(cl, sub, msg) {
				return // the connection is gone; its session gets them on resubscribing
			}
		}
	}
}

// retained returns the retained messages matching filter. mochi's scan
// reads the topic tree without the locks its retained writes take, so it
// runs under the retain guard's read side, as mochi's own delivery does
// (retainGuard); the messages are copies, sent after it is let go.
func (h *sessionHook) retained(filter string) []packets.Packet {
	if h.guard != nil {
		h.guard.mu.RLock()
		defer h.guard.mu.RUnlock()
	}
	return h.srv.Topics.Messages(filter)
}

// queuedKey names a message queued for a client: a retained message's copy
// has the same topic and creation time.
type queuedKey struct {
	topic   string
	created int64
}

// queuedFor returns the messages already queued for cl (sent to it and not
// yet acknowledged), read once so that checking each retained message
// against them costs a lookup, not a scan of the whole table: a session
// resumed after a crash can hold thousands of both.
func queuedFor(cl *mqtt.Client) map[queuedKey]bool {
	q := map[queuedKey]bool{}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if outgoing(pk) {
			q[queuedKey{pk.TopicName, pk.Created}] = true
		}
	}
	return q
}

// sendRetained writes the retained message msg to cl for its subscription
// sub as mochi's own delivery would (retain flag set, the lower QoS of the
// two, the subscription identifier, recorded in the session until
// acknowledged), and reports false once the connection is closed. It
// blocks while the connection's buffers are full.
func (h *sessionHook) sendRetained(cl *mqtt.Client, sub packets.Subscription, msg packets.Packet) bool {
	if cl.Closed() {
		return false
	}
	if h.acl != nil && !h.acl(cl, msg.TopicName, false) {
		return true
	}
	out := msg.Copy(false)
	out.FixedHeader.Retain = true
	out.FixedHeader.Qos = min(out.FixedHeader.Qos, sub.Qos, h.srv.Options.Capabilities.MaximumQos)
	if sub.Identifier > 0 {
		out.Properties.SubscriptionIdentifier = []int{sub.Identifier}
	}
	if out.FixedHeader.Qos > 0 {
		if cl.State.Inflight.Len() >= int(h.srv.Options.Capabilities.MaximumInflight) {
			h.retainedOverQuota.Add(1)
			return true // as mochi: over the client's quota of unacknowledged messages
		}
		id, err := cl.NextPacketID()
		if err != nil {
			h.retainedOverQuota.Add(1)
			return true
		}
		out.PacketID = uint16(id)
		if cl.State.Inflight.Set(out) {
			atomic.AddInt64(&h.srv.Info.Inflight, 1)
			if h.store != nil {
				h.store.OnQosPublish(cl, out, time.Now().Unix(), 0)
			}
		}
	}
	if err := cl.WritePacket(out); err != nil {
		// A QoS 1 copy stays in the session and is sent again when the
		// client resumes it.
		return !cl.Closed()
	}
	return true
}
