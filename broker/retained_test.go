package broker

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestRetainedBurstNotDropped: a subscriber that matches more retained
// messages than its buffer of pending writes holds (the publisher or an
// operator's tool subscribing to every status of a large fleet) gets every
// one of them, after its SUBACK, however slowly it reads. mochi's own
// delivery dropped all but about MaximumClientWritesPending of them.
func TestRetainedBurstNotDropped(t *testing.T) {
	const n = 4000 // 4,000 × 2 KB: more than the loopback socket buffers take
	b := startBroker(t, nil)
	payload := bytes.Repeat([]byte("s"), 2048)
	for i := range n {
		if err := b.Server().Publish(fmt.Sprintf("linkedge/v1/trucks/t%04d/status", i), payload, true, 1); err != nil {
			t.Fatal(err)
		}
	}

	c := dialRaw(t, b.Addr())
	_ = c.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, ClientIdentifier: "ops-view", Clean: true},
	})
	if ack := c.recv(); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters:    packets.Subscriptions{{Filter: "linkedge/v1/trucks/+/status", Qos: 1}},
		Properties: packets.Properties{SubscriptionIdentifier: []int{7}},
	})
	time.Sleep(500 * time.Millisecond) // a slow reader: the broker's buffers fill

	if p := c.recv(); p.FixedHeader.Type != packets.Suback {
		t.Fatalf("first packet after SUBSCRIBE has type %d, want SUBACK", p.FixedHeader.Type)
	}
	seen := map[string]bool{}
	for len(seen) < n {
		p := c.recv()
		if p.FixedHeader.Type != packets.Publish {
			t.Fatalf("got packet type %d, want PUBLISH", p.FixedHeader.Type)
		}
		if !p.FixedHeader.Retain || p.FixedHeader.Qos != 1 || len(p.Properties.SubscriptionIdentifier) != 1 || p.Properties.SubscriptionIdentifier[0] != 7 {
			t.Fatalf("%s: retain %v, QoS %d, subscription ids %v; want retained, QoS 1, [7]",
				p.TopicName, p.FixedHeader.Retain, p.FixedHeader.Qos, p.Properties.SubscriptionIdentifier)
		}
		if seen[p.TopicName] {
			t.Fatalf("%s delivered twice", p.TopicName)
		}
		seen[p.TopicName] = true
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: p.PacketID})
	}
	if dropped := b.Server().Info.Clone().MessagesDropped; dropped != 0 {
		t.Errorf("broker counted %d dropped messages", dropped)
	}
	waitInflightZero(t, b)

	// Retain Handling: 1 on a subscription that exists, and 2, bring none.
	for _, rh := range []byte{1, 2} {
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: uint16(10 + rh),
			Filters: packets.Subscriptions{{Filter: "linkedge/v1/trucks/+/status", Qos: 1, RetainHandling: rh}},
		})
		if p := c.recv(); p.FixedHeader.Type != packets.Suback {
			t.Fatalf("retain handling %d: got packet type %d, want SUBACK", rh, p.FixedHeader.Type)
		}
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	if p := c.recv(); p.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("got packet type %d, want PINGRESP: retained messages sent despite Retain Handling", p.FixedHeader.Type)
	}
}
