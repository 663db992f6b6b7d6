package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// rawClient speaks MQTT 5 with mochi's packet codec, since paho.mqtt.golang
// only speaks 3.1.1.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	if err := c.write(pk); err != nil {
		c.t.Fatal(err)
	}
}

// write sends pk; for goroutines, which must not call t.Fatal.
func (c *rawClient) write(pk packets.Packet) error {
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1 // required flags of SUBSCRIBE
		err = pk.SubscribeEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		return fmt.Errorf("send: unsupported packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (c *rawClient) recv() packets.Packet {
	c.t.Helper()
	pk, err := c.read()
	if err != nil {
		c.t.Fatal(err)
	}
	return pk
}

// read reads one packet; for goroutines, which must not call t.Fatal.
func (c *rawClient) read() (packets.Packet, error) {
	pk, err := readPacket(c.r, 5)
	if errors.Is(err, errUnknownPacket) {
		return pk, fmt.Errorf("recv: unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// errUnknownPacket: readPacket read a whole packet of a type it does not
// decode (its fixed header is set).
var errUnknownPacket = errors.New("packet type not decoded")

// readPacket reads one MQTT packet from r and decodes the types the broker
// tests receive; the raw clients of these tests share it.
func readPacket(r *bufio.Reader, version byte) (packets.Packet, error) {
	pk := packets.Packet{ProtocolVersion: version}
	hb, err := r.ReadByte()
	if err != nil {
		return pk, fmt.Errorf("read: %w", err)
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, fmt.Errorf("fixed header: %w", err)
	}
	if pk.FixedHeader.Remaining, _, err = packets.DecodeLength(r); err != nil {
		return pk, fmt.Errorf("length: %w", err)
	}
	body := make([]byte, pk.FixedHeader.Remaining)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, fmt.Errorf("body: %w", err)
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pingresp:
		err = pk.PingrespDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		return pk, errUnknownPacket
	}
	if err != nil {
		return pk, fmt.Errorf("decode: %w", err)
	}
	return pk, nil
}

// TestMQTT5 connects a v5 client and checks that the configured expiry
// reaches the wire: the session expiry it asks for is capped at
// MaxMessageExpiry, and delivered messages carry the remaining expiry.
func TestMQTT5(t *testing.T) {
	const expiry = 7 * 24 * time.Hour
	b := startBroker(t, func(c *Config) { c.MaxMessageExpiry = expiry })
	c := dialRaw(t, b.Addr())

	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        30,
			ClientIdentifier: "v5-truck",
		},
		Properties: packets.Properties{SessionExpiryInterval: math.MaxUint32, SessionExpiryIntervalFlag: true},
	})
	ack := c.recv()
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != packets.CodeSuccess.Code {
		t.Fatalf("CONNACK = type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	if want := uint32(expiry / time.Second); !ack.Properties.SessionExpiryIntervalFlag || ack.Properties.SessionExpiryInterval != want {
		t.Errorf("CONNACK session expiry = %d (flag %v), want %d",
			ack.Properties.SessionExpiryInterval, ack.Properties.SessionExpiryIntervalFlag, want)
	}

	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: "linkedge/v1/models/#", Qos: 1}},
	})
	if suback := c.recv(); !bytes.Equal(suback.ReasonCodes, []byte{1}) {
		t.Fatalf("SUBACK reason codes = %v, want [1]", suback.ReasonCodes)
	}

	if err := b.Server().Publish("linkedge/v1/models/detector", []byte("v9"), false, 1); err != nil {
		t.Fatal(err)
	}
	pub := c.recv()
	if pub.FixedHeader.Type != packets.Publish || string(pub.Payload) != "v9" || pub.FixedHeader.Qos != 1 {
		t.Fatalf("PUBLISH = %+v", pub)
	}
	got := time.Duration(pub.Properties.MessageExpiryInterval) * time.Second
	if got > expiry || got < expiry-time.Minute {
		t.Errorf("delivered message expiry = %s, want about %s", got, expiry)
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pub.PacketID})
}

// connectV5 opens an MQTT 5 session that outlives the connection by an hour
// and subscribes it to filter at QoS 1.
func connectV5(t *testing.T, addr, id, filter string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, ClientIdentifier: id},
		Properties:  packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true},
	})
	if ack := c.recv(); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}})
	c.recv() // SUBACK
	return c
}

// TestOwnPublishKeepsQueuedMessage: a client that publishes at QoS 1 with
// the packet id of a message the broker sent it and is still waiting to have
// acknowledged must not make the broker forget that message (mochi took the
// publish for a retransmission and deleted the entry).
func TestOwnPublishKeepsQueuedMessage(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.DataDir = t.TempDir() })
	c := connectV5(t, b.Addr(), "truck-r", "linkedge/v1/models/#")

	if err := b.Server().Publish("linkedge/v1/models/m/release", []byte("v3"), false, 1); err != nil {
		t.Fatal(err)
	}
	out := c.recv() // not acknowledged yet
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		PacketID:    out.PacketID, // same id, other direction: legal
		TopicName:   "linkedge/v1/trucks/truck-r/status",
		Payload:     []byte("online"),
	})
	if ack := c.recv(); ack.FixedHeader.Type != packets.Puback || ack.PacketID != out.PacketID {
		t.Fatalf("got type %d id %d, want PUBACK %d", ack.FixedHeader.Type, ack.PacketID, out.PacketID)
	}
	// mochi sends PUBACK halfway through handling the publish; a ping is
	// answered only once that handling is complete.
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	if p := c.recv(); p.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("got type %d, want PINGRESP", p.FixedHeader.Type)
	}

	cl, _ := b.Server().Clients.Get("truck-r")
	held, ok := cl.State.Inflight.Get(out.PacketID)
	if !ok || string(held.Payload) != "v3" {
		t.Fatalf("broker forgot the unacknowledged message (entry %v, %q)", ok, held.Payload)
	}
	stored, err := b.store.kvHook.StoredInflightMessages()
	if err != nil || len(stored) != 1 || string(stored[0].Payload) != "v3" {
		t.Errorf("stored records = %d (%v), want the unacknowledged message", len(stored), err)
	}
	if n := b.Server().Info.Clone().Inflight; n != 1 {
		t.Errorf("in-flight gauge = %d, want 1", n)
	}

	// The acknowledgement still completes it.
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: out.PacketID})
	waitInflightZero(t, b)
}

// TestSubscribeWhileRetainedUnacknowledged: a client may reuse a packet id
// for its SUBSCRIBE while a message the broker sent it under the same id is
// still unacknowledged; the ids of the two directions are separate. mochi
// refused the subscription ("packet identifier in use"), which a 3.1.1
// client takes as a plain failure: the truck agent subscribing to its pin
// right after its release's retained message arrived lost the pin.
func TestSubscribeWhileRetainedUnacknowledged(t *testing.T) {
	b := startBroker(t, nil)
	for _, topic := range []string{"linkedge/v1/models/a/release", "linkedge/v1/trucks/t1/desired"} {
		if err := b.Server().Publish(topic, []byte(topic), true, 1); err != nil {
			t.Fatal(err)
		}
	}
	c := connectV5(t, b.Addr(), "truck-s", "linkedge/v1/models/+/release")
	pub := c.recv() // the retained release, id 1, left unacknowledged
	if pub.FixedHeader.Type != packets.Publish || pub.PacketID != 1 {
		t.Fatalf("retained release: %+v", pub)
	}
	// Id 1 is free on the client's side (its first SUBSCRIBE was answered).
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "linkedge/v1/trucks/t1/desired", Qos: 1}}})
	if suback := c.recv(); suback.FixedHeader.Type != packets.Suback || !bytes.Equal(suback.ReasonCodes, []byte{1}) {
		t.Fatalf("SUBACK = type %d codes %#v, want granted QoS 1", suback.FixedHeader.Type, suback.ReasonCodes)
	}
	if pin := c.recv(); pin.FixedHeader.Type != packets.Publish || string(pin.Payload) != "linkedge/v1/trucks/t1/desired" {
		t.Fatalf("retained pin not delivered: %+v", pin)
	}
	// The release is still owed an acknowledgement, and still tracked. (It
	// is back in the table once the SUBSCRIBE is processed, which may be
	// just after the client has its SUBACK: hence the short wait.)
	cl, ok := b.Server().Clients.Get("truck-s")
	if !ok {
		t.Fatal("client gone")
	}
	for deadline := time.Now().Add(waitFor); ; time.Sleep(time.Millisecond) {
		if held, ok := cl.State.Inflight.Get(1); ok && held.TopicName == "linkedge/v1/models/a/release" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the unacknowledged release was forgotten")
		}
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1})
}

// Issue 12 #13: an MQTT 5 client that publishes at QoS 1 with user
// properties gets a PUBACK without them. (mochi copies the publish's
// properties onto the ack by default, which strict clients, Paho's among
// them, refuse as a malformed PUBACK.)
func TestPubackCarriesNoInheritedProperties(t *testing.T) {
	b := startBroker(t, nil)
	c := dialRaw(t, b.Addr())
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "v5-sensor"},
	})
	if ack := c.recv(); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "linkedge/v1/local/aps-failure/readings",
		PacketID:    7,
		Payload:     []byte("1,2,3"),
		Properties:  packets.Properties{User: []packets.UserProperty{{Key: "sensor", Val: "aps-12"}}},
	})
	ack := c.recv()
	if ack.FixedHeader.Type != packets.Puback || ack.PacketID != 7 {
		t.Fatalf("got type %d id %d, want the PUBACK of 7", ack.FixedHeader.Type, ack.PacketID)
	}
	if len(ack.Properties.User) != 0 {
		t.Fatalf("PUBACK carries the publish's user properties %v", ack.Properties.User)
	}
}
