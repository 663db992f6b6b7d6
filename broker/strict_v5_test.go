package broker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The tests in this file speak to the broker as a strict MQTT 5 client
// would (issue 12 #13): truck applications bring their own clients to the
// local bus, and some of them (Paho's) refuse a packet a lenient decoder
// accepts. Packets are written with mochi's encoder and read back byte by
// byte here, so that an ack is checked against the specification's layout,
// not against mochi's own decoder.

// strictPacket is a packet as read off the wire: its fixed header and body.
type strictPacket struct {
	typ  byte
	body []byte
}

// strictRead reads one packet, or returns the read error (io.EOF once the
// broker has closed the connection cleanly).
func strictRead(r *bufio.Reader) (strictPacket, error) {
	hb, err := r.ReadByte()
	if err != nil {
		return strictPacket{}, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return strictPacket{}, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return strictPacket{}, err
	}
	return strictPacket{typ: hb >> 4, body: body}, nil
}

// checkAck checks an MQTT 5 PUBACK, PUBREC or PUBCOMP body as a strict
// client does (MQTT 5 §3.4.2): the packet id, then optionally a reason code,
// then optionally a property length that covers exactly the rest. It
// returns the id and reason code, and fails on any user property: the
// broker has none of its own to send.
func checkAck(t *testing.T, p strictPacket) (uint16, byte) {
	t.Helper()
	b := p.body
	if len(b) < 2 {
		t.Fatalf("ack type %d is %d bytes: wrong length", p.typ, len(b))
	}
	id, reason := uint16(b[0])<<8|uint16(b[1]), byte(0)
	if len(b) == 2 {
		return id, reason
	}
	reason = b[2]
	if len(b) == 3 {
		return id, reason
	}
	n, used, err := packets.DecodeLength(bytes.NewReader(b[3:]))
	if err != nil || 3+used+n != len(b) {
		t.Fatalf("ack type %d: property length %d (%v) does not match the %d bytes left: wrong length", p.typ, n, err, len(b)-3-used)
	}
	var props packets.Properties
	if _, err := props.Decode(p.typ, bytes.NewBuffer(b[3:])); err != nil {
		t.Fatalf("ack type %d: properties: %v", p.typ, err)
	}
	if len(props.User) != 0 {
		t.Fatalf("ack type %d carries user properties %v, which are the publish's", p.typ, props.User)
	}
	return id, reason
}

func encode(t *testing.T, pk packets.Packet) []byte {
	t.Helper()
	pk.ProtocolVersion = 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1 // required flags of PUBREL
		err = pk.PubrelEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	default:
		t.Fatalf("encode: unsupported packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// strictConnect opens a v5 connection and returns it with the CONNACK's
// properties.
func strictConnect(t *testing.T, addr, id string, props packets.Properties) (net.Conn, *bufio.Reader, packets.Properties) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	if _, err := conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id},
		Properties: props})); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	p, err := strictRead(r)
	if err != nil || p.typ != packets.Connack {
		t.Fatalf("CONNACK: type %d, %v", p.typ, err)
	}
	ack := packets.Packet{ProtocolVersion: 5, FixedHeader: packets.FixedHeader{Type: packets.Connack}}
	if err := ack.ConnackDecode(p.body); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK reason %#x, %v", ack.ReasonCode, err)
	}
	return conn, r, ack.Properties
}

// TestStrictClientAcks: acknowledgements of QoS 1 and QoS 2 publishes that
// carry user properties are well formed and carry none of them.
func TestStrictClientAcks(t *testing.T) { strictAcks(t, startBroker(t, nil)) }

func strictAcks(t *testing.T, b *Broker) {
	conn, r, _ := strictConnect(t, b.Addr(), "strict-acks", packets.Properties{})
	user := packets.Properties{User: []packets.UserProperty{{Key: "sensor", Val: "aps-12"}, {Key: "unit", Val: "kPa"}}}
	for _, qos := range []byte{1, 2} {
		id := uint16(10 + qos)
		if _, err := conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
			TopicName: "linkedge/v1/local/aps-failure/readings", PacketID: id, Payload: []byte("1,2,3"), Properties: user})); err != nil {
			t.Fatal(err)
		}
		want := []byte{packets.Puback}
		if qos == 2 {
			want = []byte{packets.Pubrec, packets.Pubcomp}
		}
		for _, typ := range want {
			if typ == packets.Pubcomp {
				if _, err := conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: id, Properties: user})); err != nil {
					t.Fatal(err)
				}
			}
			p, err := strictRead(r)
			if err != nil || p.typ != typ {
				t.Fatalf("QoS %d: got type %d (%v), want %d", qos, p.typ, err, typ)
			}
			if got, reason := checkAck(t, p); got != id || reason >= 0x80 {
				t.Fatalf("QoS %d: ack type %d for id %d reason %#x, want id %d", qos, typ, got, reason, id)
			}
		}
	}
}

// TestStrictClientRetainedUserProperties: a retained message keeps its user
// properties, for a subscriber that comes later and after a restart of the
// broker (they are stored with the message).
func TestStrictClientRetainedUserProperties(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, func(c *Config) { c.DataDir = dir })
	user := []packets.UserProperty{{Key: "schema", Val: "aps/v2"}, {Key: "schema", Val: "aps/v3"}}
	conn, r, _ := strictConnect(t, b.Addr(), "strict-pub", packets.Properties{})
	if _, err := conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName: "linkedge/v1/local/aps-failure/config", PacketID: 1, Payload: []byte("{}"),
		Properties: packets.Properties{User: user}})); err != nil {
		t.Fatal(err)
	}
	if p, err := strictRead(r); err != nil || p.typ != packets.Puback {
		t.Fatalf("PUBACK: type %d, %v", p.typ, err)
	}

	check := func(addr, id string) {
		t.Helper()
		conn, r, _ := strictConnect(t, addr, id, packets.Properties{})
		if _, err := conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "linkedge/v1/local/+/config", Qos: 1}}})); err != nil {
			t.Fatal(err)
		}
		if p, err := strictRead(r); err != nil || p.typ != packets.Suback {
			t.Fatalf("SUBACK: type %d, %v", p.typ, err)
		}
		p, err := strictRead(r)
		if err != nil || p.typ != packets.Publish {
			t.Fatalf("retained message: type %d, %v", p.typ, err)
		}
		pub := packets.Packet{ProtocolVersion: 5, FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}}
		if err := pub.PublishDecode(p.body); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(pub.Properties.User, user) {
			t.Fatalf("retained message delivered with user properties %v, want %v", pub.Properties.User, user)
		}
		_, _ = conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pub.PacketID}))
	}
	check(b.Addr(), "strict-sub")

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := startBroker(t, func(c *Config) { c.DataDir = dir })
	check(b2.Addr(), "strict-sub-2")
}

// floodQoS2 sends, in one write, n QoS 2 publishes the client never
// releases: each one holds a place of the broker's Receive Maximum.
func floodQoS2(t *testing.T, conn net.Conn, n int) {
	t.Helper()
	var buf bytes.Buffer
	for i := range n {
		buf.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2},
			TopicName: "linkedge/v1/local/aps-failure/readings", PacketID: uint16(i%65535 + 1), Payload: []byte("1,2,3")}))
	}
	go conn.Write(buf.Bytes()) // the broker may stop reading; the test's deadline ends the write
}

// TestReceiveMaximumExceeded: a client that sends more unacknowledged QoS 2
// publishes than the Receive Maximum its CONNACK gave reads every ack
// due, then DISCONNECT with reason 0x93, then the end of the stream. (The
// broker used to close the socket with the client's next publishes unread,
// which made the kernel reset the connection: the client read "connection
// reset by peer", never the reason, and lost acks already sent.)
func TestReceiveMaximumExceeded(t *testing.T) {
	b := startBroker(t, nil)
	conn, r, props := strictConnect(t, b.Addr(), "greedy", packets.Properties{})
	max := int(props.ReceiveMaximum)
	if max == 0 {
		max = 65535 // absent means no limit below the protocol's
	}
	// Far more than the broker reads ahead: most of them are still in its
	// socket when it gives up on the client.
	floodQoS2(t, conn, max+5000)
	var recs int
	for {
		p, err := strictRead(r)
		if err != nil {
			t.Fatalf("after %d PUBRECs: %v; want DISCONNECT 0x93 first", recs, err)
		}
		if p.typ == packets.Pubrec {
			recs++
			continue
		}
		if p.typ != packets.Disconnect {
			t.Fatalf("got packet type %d after %d PUBRECs", p.typ, recs)
		}
		if len(p.body) == 0 || p.body[0] != packets.ErrReceiveMaximum.Code {
			t.Fatalf("DISCONNECT body %x, want reason %#x", p.body, packets.ErrReceiveMaximum.Code)
		}
		break
	}
	if recs != max {
		t.Errorf("%d PUBRECs before the DISCONNECT, want the Receive Maximum, %d", recs, max)
	}
	if p, err := strictRead(r); !errors.Is(err, io.EOF) {
		t.Fatalf("after the DISCONNECT: packet type %d, %v; want the end of the stream", p.typ, err)
	}
}

// TestDisconnectedClientThatStaysIsClosed: a client that reads the
// DISCONNECT but neither closes its end nor stops writing does not keep
// its connection: the broker closes the socket itself (after closeLinger).
func TestDisconnectedClientThatStaysIsClosed(t *testing.T) {
	b := startBroker(t, nil)
	conn, r, props := strictConnect(t, b.Addr(), "stays", packets.Properties{})
	floodQoS2(t, conn, int(props.ReceiveMaximum)+1)
	for {
		p, err := strictRead(r)
		if err != nil {
			t.Fatalf("before the DISCONNECT: %v", err)
		}
		if p.typ == packets.Disconnect {
			break
		}
	}
	// Keep the connection open and keep writing (pings): the broker must
	// still let it go.
	ping := []byte{packets.Pingreq << 4, 0}
	deadline := time.Now().Add(closeLinger + waitFor)
	for {
		if len(b.mqttLn.pending()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker still holds %v", b.mqttLn.pending())
		}
		_, _ = conn.Write(ping)
		time.Sleep(20 * time.Millisecond)
	}
	// The socket is gone: writing now draws a reset.
	var err error
	for range 50 {
		if _, err = conn.Write(ping); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes still succeed on a connection the broker closed")
	}
}
