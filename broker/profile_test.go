package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// iotClient is a raw MQTT client of either version, so the tests control
// every field and every acknowledgement.
type iotClient struct {
	t       *testing.T
	version byte
	conn    net.Conn
	r       *bufio.Reader
}

func dialIoT(t *testing.T, addr string, version byte) *iotClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &iotClient{t: t, version: version, conn: conn, r: bufio.NewReader(conn)}
}

func (c *iotClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.Connect.ProtocolName = []byte("MQTT")
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	}
	if err != nil {
		c.t.Fatalf("encode: %v", err)
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(waitFor))
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// recvWithin returns the next packet, or an error if none comes within d
// (os.ErrDeadlineExceeded) or the connection ends (io.EOF and the like).
func (c *iotClient) recvWithin(d time.Duration) (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	pk, err := readPacket(c.r, c.version)
	if errors.Is(err, errUnknownPacket) {
		err = nil // the caller looks at the type
	}
	return pk, err
}

func (c *iotClient) recv() packets.Packet {
	c.t.Helper()
	pk, err := c.recvWithin(waitFor)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return pk
}

// closed asserts that the broker closes the connection, reading past
// anything it sends first, and returns the DISCONNECT if it sent one.
func (c *iotClient) closed() *packets.Packet {
	c.t.Helper()
	var disc *packets.Packet
	for {
		pk, err := c.recvWithin(waitFor)
		if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || err != nil && strings.Contains(err.Error(), "reset") {
			return disc
		}
		if err != nil {
			c.t.Fatalf("want the connection closed, got %v", err)
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			disc = &pk
		}
	}
}

func (c *iotClient) connect(id string, keepalive uint16, clean bool) packets.Packet {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: id, Keepalive: keepalive, Clean: clean}})
	ack := c.recv()
	if ack.FixedHeader.Type != packets.Connack {
		c.t.Fatalf("want CONNACK, got type %d", ack.FixedHeader.Type)
	}
	return ack
}

func (c *iotClient) subscribe(id uint16, qos byte, filters ...string) packets.Packet {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: id}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: qos})
	}
	c.send(pk)
	return pk
}

func (c *iotClient) publish(topic string, qos byte, id uint16, payload []byte) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: id, Payload: payload})
}

func (c *iotClient) ack(id uint16) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
}

func startIoTCore(t *testing.T, mod func(*Config)) *Broker {
	t.Helper()
	return startBroker(t, func(c *Config) {
		c.Profile = ProfileAWSIoTCore
		if mod != nil {
			mod(c)
		}
	})
}

func deepTopic(slashes int) string {
	return "linkedge" + strings.Repeat("/x", slashes)
}

// TestIoTCoreLimitsOnPackets: each of IoT Core's limits on what a client
// sends, at the limit (accepted) and past it (the connection closed; an
// MQTT 5 client told why), against the real broker with the profile, and
// the same packets accepted by the broker without it.
func TestIoTCoreLimitsOnPackets(t *testing.T) {
	filters := func(n int) []string {
		var fs []string
		for i := range n {
			fs = append(fs, fmt.Sprintf("linkedge/v1/models/m%d/release", i))
		}
		return fs
	}
	tests := []struct {
		name string
		// send sends one packet on a connected client and reports, for an
		// accepted one, whether the answer that came is right.
		send    func(c *iotClient)
		ok      bool
		v5Code  byte // the DISCONNECT's reason for an MQTT 5 client
		checkOK func(t *testing.T, c *iotClient)
	}{
		{name: "8 filters in one SUBSCRIBE", ok: true,
			send: func(c *iotClient) { c.subscribe(1, 1, filters(IoTCoreMaxFilters)...) },
			checkOK: func(t *testing.T, c *iotClient) {
				if ack := c.recv(); len(ack.ReasonCodes) != IoTCoreMaxFilters || ack.ReasonCodes[0] != 1 {
					t.Fatalf("SUBACK %v", ack.ReasonCodes)
				}
			}},
		{name: "9 filters in one SUBSCRIBE", v5Code: packets.ErrQuotaExceeded.Code,
			send: func(c *iotClient) { c.subscribe(1, 1, filters(IoTCoreMaxFilters+1)...) }},
		{name: "filter with 7 slashes", ok: true,
			send: func(c *iotClient) { c.subscribe(1, 1, deepTopic(IoTCoreMaxSlashes)) },
			checkOK: func(t *testing.T, c *iotClient) {
				if ack := c.recv(); ack.FixedHeader.Type != packets.Suback || ack.ReasonCodes[0] != 1 {
					t.Fatalf("SUBACK %v", ack.ReasonCodes)
				}
			}},
		{name: "filter with 8 slashes", v5Code: packets.ErrTopicFilterInvalid.Code,
			send: func(c *iotClient) { c.subscribe(1, 1, deepTopic(IoTCoreMaxSlashes+1)) }},
		{name: "filter of 257 bytes", v5Code: packets.ErrTopicFilterInvalid.Code,
			send: func(c *iotClient) { c.subscribe(1, 1, strings.Repeat("a", IoTCoreMaxTopicBytes+1)) }},
		{name: "subscribe at QoS 2", v5Code: packets.ErrQosNotSupported.Code,
			send: func(c *iotClient) { c.subscribe(1, 2, "linkedge/v1/models/+/release") }},
		{name: "publish to 7 slashes", ok: true,
			send:    func(c *iotClient) { c.publish(deepTopic(IoTCoreMaxSlashes), 1, 7, []byte("x")) },
			checkOK: wantPuback(7)},
		{name: "publish to 8 slashes", v5Code: packets.ErrTopicNameInvalid.Code,
			send: func(c *iotClient) { c.publish(deepTopic(IoTCoreMaxSlashes+1), 1, 7, []byte("x")) }},
		{name: "payload of 128 KB", ok: true,
			send:    func(c *iotClient) { c.publish("linkedge/v1/x", 1, 8, make([]byte, IoTCoreMaxPayload)) },
			checkOK: wantPuback(8)},
		{name: "payload of 128 KB + 1", v5Code: packets.ErrPacketTooLarge.Code,
			send: func(c *iotClient) { c.publish("linkedge/v1/x", 1, 8, make([]byte, IoTCoreMaxPayload+1)) }},
		{name: "publish at QoS 2 (MQTT 5)", v5Code: packets.ErrQosNotSupported.Code,
			send: func(c *iotClient) { c.publish("linkedge/v1/x", 2, 9, []byte("x")) }},
	}
	for _, version := range []byte{4, 5} {
		b := startIoTCore(t, nil)
		plain := startBroker(t, nil)
		for i, tt := range tests {
			if version == 4 && tt.name == "publish at QoS 2 (MQTT 5)" {
				continue // TestIoTCoreQoS2PublishUnacknowledged
			}
			t.Run(fmt.Sprintf("v%d/%s", version, tt.name), func(t *testing.T) {
				id := fmt.Sprintf("lim-%d-%d", version, i)
				c := dialIoT(t, b.Addr(), version)
				c.connect(id, 60, true)
				tt.send(c)
				if tt.ok {
					tt.checkOK(t, c)
					return
				}
				disc := c.closed()
				switch {
				case version == 5 && (disc == nil || disc.ReasonCode != tt.v5Code):
					t.Fatalf("DISCONNECT %+v, want reason %#x", disc, tt.v5Code)
				case version == 4 && disc != nil:
					t.Fatal("an MQTT 3.1.1 client was sent a DISCONNECT")
				}
				// Without the profile the same packet is no problem.
				p := dialIoT(t, plain.Addr(), version)
				p.connect(id, 60, true)
				tt.send(p)
				if pk, err := p.recvWithin(waitFor); err != nil || pk.FixedHeader.Type == packets.Disconnect {
					t.Fatalf("the broker without the profile answered %+v, %v", pk, err)
				}
			})
		}
	}
}

func wantPuback(id uint16) func(*testing.T, *iotClient) {
	return func(t *testing.T, c *iotClient) {
		t.Helper()
		if ack := c.recv(); ack.FixedHeader.Type != packets.Puback || ack.PacketID != id {
			t.Fatalf("want PUBACK %d, got type %d id %d", id, ack.FixedHeader.Type, ack.PacketID)
		}
	}
}

// TestIoTCoreQoS2PublishUnacknowledged: an MQTT 3.1.1 client's QoS 2
// publish is neither acknowledged nor delivered, as on IoT Core, and the
// connection carries on.
func TestIoTCoreQoS2PublishUnacknowledged(t *testing.T) {
	b := startIoTCore(t, nil)
	sub := dialIoT(t, b.Addr(), 4)
	sub.connect("qos2-sub", 60, true)
	sub.subscribe(1, 1, "linkedge/v1/#")
	sub.recv() // SUBACK
	c := dialIoT(t, b.Addr(), 4)
	c.connect("qos2-pub", 60, true)
	c.publish("linkedge/v1/a", 2, 5, []byte("two"))
	c.publish("linkedge/v1/b", 1, 6, []byte("one"))
	if ack := c.recv(); ack.FixedHeader.Type != packets.Puback || ack.PacketID != 6 {
		t.Fatalf("want only the QoS 1 publish acknowledged, got type %d id %d", ack.FixedHeader.Type, ack.PacketID)
	}
	if m := sub.recv(); string(m.Payload) != "one" {
		t.Fatalf("subscriber got %q first, want only %q", m.Payload, "one")
	}
}

// TestIoTCoreKeepAlive: the keep-alive is served as IoT Core serves it,
// clamped to 30-1,200 s (0 meaning 1,200), and an MQTT 5 client is told.
func TestIoTCoreKeepAlive(t *testing.T) {
	b := startIoTCore(t, nil)
	for i, tt := range []struct{ ask, want uint16 }{{5, 30}, {30, 30}, {600, 600}, {1200, 1200}, {1201, 1200}, {0, 1200}} {
		for _, v := range []byte{4, 5} {
			id := fmt.Sprintf("ka-%d-%d", i, v)
			c := dialIoT(t, b.Addr(), v)
			ack := c.connect(id, tt.ask, true)
			cl, ok := b.Server().Clients.Get(id)
			if !ok {
				t.Fatalf("%s not connected", id)
			}
			if cl.State.Keepalive != tt.want {
				t.Errorf("v%d keep-alive %d served as %d, want %d", v, tt.ask, cl.State.Keepalive, tt.want)
			}
			told := ack.Properties.ServerKeepAliveFlag
			if v == 5 && (told != (tt.ask != tt.want) || told && ack.Properties.ServerKeepAlive != tt.want) {
				t.Errorf("v5 keep-alive %d: CONNACK server keep-alive %v %d", tt.ask, told, ack.Properties.ServerKeepAlive)
			}
		}
	}
}

// TestIoTCoreClientIDs: under the profile a truck connects with its thing
// name (its username) as client id; the default mode's
// linkedge-truck-{truck} is refused, and nobody else may use a truck's id.
func TestIoTCoreClientIDs(t *testing.T) {
	users := writeUsersFile(t, map[string]string{"truck-1": "truck:pw1", "truck-2": "truck:pw2", "pub": "publisher:pwp"})
	b := startIoTCore(t, func(c *Config) { c.UsersFile = users })
	tests := []struct {
		user, pass, id string
		ok             bool
	}{
		{"truck-1", "pw1", "truck-1", true},
		{"truck-1", "pw1", "linkedge-truck-truck-1", false},
		{"truck-1", "pw1", "truck-2", false},
		{"pub", "pwp", "truck-1", false},
		{"pub", "pwp", "linkedge-truck-x", false},
		{"pub", "pwp", "linkedge-publisher", true},
		{"truck-1", "pw1", strings.Repeat("t", IoTCoreMaxClientID+1), false},
	}
	for _, tt := range tests {
		_, err := tryConnect(t, clientOpts(b.Addr()).SetClientID(tt.id).SetUsername(tt.user).SetPassword(tt.pass))
		if (err == nil) != tt.ok {
			t.Errorf("%s as %.40s: err %v, want ok=%v", tt.user, tt.id, err, tt.ok)
		}
	}
	// Anonymous (the end-to-end fleets): the old truck ids are refused.
	anon := startIoTCore(t, nil)
	if _, err := tryConnect(t, clientOpts(anon.Addr()).SetClientID("linkedge-truck-truck-1")); err == nil {
		t.Error("anonymous linkedge-truck-truck-1 admitted under the profile")
	}
	// A truck whose name cannot be a thing name is refused at start.
	dotted := writeUsersFile(t, map[string]string{"truck.1": "truck:pw"})
	if _, err := New(Config{Listen: "127.0.0.1:0", UsersFile: dotted, Profile: ProfileAWSIoTCore}); !errors.Is(err, ErrInvalidUsersFile) {
		t.Errorf("a truck named truck.1 under the profile: %v, want ErrInvalidUsersFile", err)
	}
}

// TestIoTCoreInflightLimit: at most 100 QoS 1 messages go out to a client
// unacknowledged; the rest wait and go, in turn, as PUBACKs come. The ones
// sent that way stay in the session until acknowledged (resent after a
// reconnect), and their PUBACKs give the quota back, so a second burst
// goes out 100 at a time again. mochi v2.7.9's own release lost both.
func TestIoTCoreInflightLimit(t *testing.T) {
	b := startIoTCore(t, func(c *Config) { c.DataDir = t.TempDir() })
	sub := dialIoT(t, b.Addr(), 4)
	sub.connect("slow-reader", 60, false)
	sub.subscribe(1, 1, "linkedge/v1/trucks/+/status")
	sub.recv() // SUBACK
	burst := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			if err := b.Server().Publish(fmt.Sprintf("linkedge/v1/trucks/t%d/status", i), []byte(fmt.Sprint(i)), false, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	// recvN reads n publishes and then checks that no more come.
	recvN := func(c *iotClient, n int) []packets.Packet {
		t.Helper()
		var got []packets.Packet
		for len(got) < n {
			pk := c.recv()
			if pk.FixedHeader.Type == packets.Publish {
				got = append(got, pk)
			}
		}
		if pk, err := c.recvWithin(300 * time.Millisecond); err == nil {
			t.Fatalf("more than %d unacknowledged: also got %q", n, pk.Payload)
		}
		return got
	}

	burst(0, 150)
	first := recvN(sub, IoTCoreMaxInflight)
	// Ten PUBACKs: ten of the 50 waiting go out.
	for _, m := range first[:10] {
		sub.ack(m.PacketID)
	}
	released := recvN(sub, 10)

	// The link drops before those ten are acknowledged: the session still
	// holds them, and the other 90 sent and 40 waiting.
	sub.conn.Close()
	sub = dialIoT(t, b.Addr(), 4)
	if ack := sub.connect("slow-reader", 60, false); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	seen := map[string]bool{}
	var resent []packets.Packet
	for len(seen) < 140 {
		pk, err := sub.recvWithin(waitFor)
		if err != nil {
			t.Fatalf("after the reconnect, %d of 140 messages came: %v", len(seen), err)
		}
		if pk.FixedHeader.Type == packets.Publish {
			seen[string(pk.Payload)] = true
			resent = append(resent, pk)
		}
	}
	for _, m := range released {
		if !seen[string(m.Payload)] {
			t.Errorf("message %s, sent when quota freed up and never acknowledged, was not resent", m.Payload)
		}
	}
	for _, m := range resent {
		sub.ack(m.PacketID)
	}
	if pk, err := sub.recvWithin(300 * time.Millisecond); err == nil && pk.FixedHeader.Type == packets.Publish {
		t.Fatalf("after the resend, %q came too", pk.Payload)
	}

	// Every PUBACK gave its quota back: the next burst goes out 100 at a
	// time again.
	burst(1000, 120)
	second := recvN(sub, IoTCoreMaxInflight)
	for _, m := range second {
		sub.ack(m.PacketID)
	}
	recvN(sub, 20)
}

// TestIoTCoreSessionExpiry: a persistent session is dropped an hour (here,
// the configured session_expiry) after its client left, and a truck back
// later still catches up through the retained release when it subscribes
// again, which it does because the CONNACK says the session is gone.
func TestIoTCoreSessionExpiry(t *testing.T) {
	if got := (&Config{Profile: ProfileAWSIoTCore, MaxMessageExpiry: DefaultMaxMessageExpiry}).sessionExpiry(); got != IoTCoreSessionExpiry {
		t.Fatalf("profile's default session expiry %s, want %s", got, IoTCoreSessionExpiry)
	}
	if got := (&Config{MaxMessageExpiry: DefaultMaxMessageExpiry}).sessionExpiry(); got != DefaultMaxMessageExpiry {
		t.Fatalf("default session expiry %s, want %s", got, DefaultMaxMessageExpiry)
	}
	b := startIoTCore(t, func(c *Config) { c.SessionExpiry = time.Second; c.DataDir = t.TempDir() })
	const release = "linkedge/v1/models/m/release"
	truck := dialIoT(t, b.Addr(), 4)
	truck.connect("truck-9", 60, false)
	truck.subscribe(1, 1, release)
	truck.recv()
	truck.conn.Close()
	if err := b.Server().Publish(release, []byte("v2"), true, 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitFor)
	for {
		if _, ok := b.Server().Clients.Get("truck-9"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session not expired")
		}
		time.Sleep(100 * time.Millisecond)
	}
	truck = dialIoT(t, b.Addr(), 4)
	if ack := truck.connect("truck-9", 60, false); ack.SessionPresent {
		t.Fatal("expired session reported present")
	}
	truck.subscribe(2, 1, release)
	for {
		pk := truck.recv()
		if pk.FixedHeader.Type == packets.Publish {
			if string(pk.Payload) != "v2" || !pk.FixedHeader.Retain {
				t.Fatalf("got %q retain=%v, want the retained release", pk.Payload, pk.FixedHeader.Retain)
			}
			return
		}
	}
}

func TestIoTCoreConfig(t *testing.T) {
	tests := []struct {
		yaml string
		ok   bool
	}{
		{"profile: aws-iot-core\n", true},
		{"profile: aws-iot-core\nsession_expiry: 168h\n", true},
		{"profile: aws-iot-core\nsession_expiry: 169h\n", false},
		{"profile: hivemq\n", false},
		{"session_expiry: 0.5s\n", false},
		{"session_expiry: 2160h\n", true},
	}
	for _, tt := range tests {
		cfg, err := ParseConfig([]byte(tt.yaml))
		if err == nil {
			err = cfg.Validate()
		}
		if (err == nil) != tt.ok {
			t.Errorf("%q: %v, want ok=%v", tt.yaml, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: %v does not wrap ErrInvalidConfig", tt.yaml, err)
		}
	}
}
