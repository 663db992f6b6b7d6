package bench

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/netsim"
)

// TestEstimate checks the wire model on hand-made connection logs whose IP
// bytes are worked out by hand in each case's comment.
func TestEstimate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ev := func(d time.Duration, kind netsim.EventKind, dir netsim.Direction, n int) netsim.Event {
		return netsim.Event{Conn: 1, Time: at(d), Kind: kind, Dir: dir, Bytes: n}
	}
	open := ev(0, netsim.EventOpen, 0, 0)
	up, down := netsim.Up, netsim.Down
	data := netsim.EventData
	base := DefaultWireModel()
	base.QuickAcks = 0
	type want struct {
		payload, headers, acks, control, keepalive [2]int64
		conns                                      int
		tail                                       bool
	}
	cases := []struct {
		name   string
		model  func(*WireModel)
		events []netsim.Event
		sel    Selection
		end    time.Duration
		want   want
	}{
		{
			// SYN (60) and ACK (52) up, SYN-ACK (60) down.
			name: "handshake", events: []netsim.Event{open}, end: time.Second,
			want: want{control: [2]int64{112, 60}, conns: 1},
		},
		{
			// The answer within 40 ms carries the ACK of the request; the
			// answer's own ACK goes up 40 ms later.
			name:   "answer within the delayed-ACK time",
			events: []netsim.Event{open, ev(time.Second, data, up, 100), ev(time.Second+10*time.Millisecond, data, down, 4)},
			end:    2 * time.Second,
			want:   want{payload: [2]int64{100, 4}, headers: [2]int64{52, 52}, acks: [2]int64{52, 0}, control: [2]int64{112, 60}, conns: 1},
		},
		{
			name:   "answer after the delayed-ACK time",
			events: []netsim.Event{open, ev(time.Second, data, up, 100), ev(time.Second+100*time.Millisecond, data, down, 4)},
			end:    2 * time.Second,
			want:   want{payload: [2]int64{100, 4}, headers: [2]int64{52, 52}, acks: [2]int64{52, 52}, control: [2]int64{112, 60}, conns: 1},
		},
		{
			// Quick ACKs at the start of a connection: the request is
			// acknowledged at once even though the answer comes quickly.
			name: "quick ACKs", model: func(m *WireModel) { m.QuickAcks = 3 },
			events: []netsim.Event{open, ev(time.Second, data, up, 100), ev(time.Second+10*time.Millisecond, data, down, 4)},
			end:    2 * time.Second,
			want:   want{payload: [2]int64{100, 4}, headers: [2]int64{52, 52}, acks: [2]int64{52, 52}, control: [2]int64{112, 60}, conns: 1},
		},
		{
			// 10,000 bytes are 7 segments of at most 1,448: 3 ACKs at once
			// (every second segment) and one delayed for the seventh.
			name:   "bulk",
			events: []netsim.Event{open, ev(time.Second, data, down, 10_000)},
			end:    2 * time.Second,
			want:   want{payload: [2]int64{0, 10_000}, headers: [2]int64{0, 7 * 52}, acks: [2]int64{4 * 52, 0}, control: [2]int64{112, 60}, conns: 1},
		},
		{
			// Silences of 40 s (probes at 15.5 s and 31 s by each side)
			// and 20 s up to the end (at 55.5 s): 6 probes, each answered,
			// 52 B each way.
			name:   "keepalive",
			events: []netsim.Event{open, ev(40*time.Second, data, up, 10)},
			end:    60 * time.Second,
			want: want{payload: [2]int64{10, 0}, headers: [2]int64{52, 0}, acks: [2]int64{0, 52}, control: [2]int64{112, 60},
				keepalive: [2]int64{6 * 52, 6 * 52}, conns: 1},
		},
		{
			// A silence of 15.2 s: the keepalive timer would fire late.
			name:   "silence just past the keepalive time",
			events: []netsim.Event{open, ev(15200*time.Millisecond, data, up, 10)},
			end:    16 * time.Second,
			want:   want{payload: [2]int64{10, 0}, headers: [2]int64{52, 0}, acks: [2]int64{0, 52}, control: [2]int64{112, 60}, conns: 1},
		},
		{
			// The same, seen through a window from 20 s to 50 s: the
			// probes at 31 s and the data; not the handshake.
			name:   "window",
			events: []netsim.Event{open, ev(40*time.Second, data, up, 10)},
			sel:    Selection{From: at(20 * time.Second), To: at(50 * time.Second)},
			end:    60 * time.Second,
			want:   want{payload: [2]int64{10, 0}, headers: [2]int64{52, 0}, acks: [2]int64{0, 52}, keepalive: [2]int64{104, 104}},
		},
		{
			// Each FIN is answered by an ACK: 4 × 52 after the handshake.
			name: "orderly close",
			events: []netsim.Event{open, ev(time.Second, netsim.EventEOF, up, 0), ev(time.Second+time.Millisecond, netsim.EventEOF, down, 0),
				ev(time.Second+2*time.Millisecond, netsim.EventClose, 0, 0)},
			end:  time.Minute,
			want: want{control: [2]int64{112 + 104, 60 + 104}, conns: 1},
		},
		{
			name:   "reset",
			events: []netsim.Event{open, ev(time.Second, netsim.EventReset, 0, 0)},
			end:    time.Minute,
			want:   want{control: [2]int64{112, 60 + 52}, conns: 1},
		},
		{
			// A download connection still open at the end: closed 90 s
			// after its last burst (at 91 s), with the client probing at
			// 31.5 s and 62 s (30 s keepalive) and the server at 16.5, 32,
			// 47.5, 63 and 78.5 s; then two FINs and their ACKs.
			name: "idle close of a whole connection",
			model: func(m *WireModel) {
				m.ClientKeepAlive, m.IdleClose = 30*time.Second, 90*time.Second
			},
			events: []netsim.Event{open, ev(time.Second, data, down, 1000)},
			sel:    Selection{From: at(0), To: at(10 * time.Second), Whole: true},
			end:    5 * time.Second,
			want: want{payload: [2]int64{0, 1000}, headers: [2]int64{0, 52}, acks: [2]int64{52, 0}, control: [2]int64{112 + 104, 60 + 104},
				keepalive: [2]int64{7 * 52, 7 * 52}, conns: 1, tail: true},
		},
		{
			name:   "whole selection skips connections opened outside it",
			events: []netsim.Event{open, ev(time.Second, data, down, 1000)},
			sel:    Selection{From: at(time.Second), To: at(10 * time.Second), Whole: true},
			end:    5 * time.Second,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base
			if tc.model != nil {
				tc.model(&m)
			}
			sel := tc.sel
			if sel.From.IsZero() {
				sel = Selection{From: t0, To: at(tc.end)}
			}
			w := m.Estimate([]ConnLog{{ID: 1, Events: tc.events}}, sel, at(tc.end))
			got := want{payload: w.Payload, headers: w.Headers, acks: w.Acks, control: w.Control, keepalive: w.Keepalive, conns: w.Conns, tail: w.Tail}
			if got != tc.want {
				t.Errorf("\n got %+v\nwant %+v", got, tc.want)
			}
			var sum int64
			for d := range 2 {
				sum += tc.want.payload[d] + tc.want.headers[d] + tc.want.acks[d] + tc.want.control[d] + tc.want.keepalive[d]
			}
			if w.Total() != sum {
				t.Errorf("Total %d, want %d", w.Total(), sum)
			}
		})
	}
}

// TestCaptured reads a hand-made pcap of a truck's connection and checks
// the sums, the re-segmentation of a large loopback packet and the
// recognition of a keepalive probe and its answer.
func TestCaptured(t *testing.T) {
	const proxy, truck = 40000, 50000
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type pkt struct {
		at      time.Duration
		up      bool
		flags   uint8
		seq     uint32
		payload int
	}
	pkts := []pkt{
		{0, true, tcpSYN, 100, 0},
		{0, false, tcpSYN | tcpACK, 900, 0},
		{0, true, tcpACK, 101, 0},
		{time.Second, true, tcpACK, 101, 100},             // request
		{time.Second, false, tcpACK, 901, 10_000},         // a 10,000-byte loopback segment: 7 on a 1500-MTU link
		{time.Second, true, tcpACK, 201, 0},               // its ACK
		{16 * time.Second, true, tcpACK, 200, 0},          // keepalive probe: one below the next sequence number
		{16 * time.Second, false, tcpACK, 10_901, 0},      // its answer
		{20 * time.Second, true, tcpFIN | tcpACK, 201, 0}, // the truck closes
		{20 * time.Second, false, tcpFIN | tcpACK, 10_901, 0},
		{20 * time.Second, true, tcpACK, 202, 0},
	}
	var buf bytes.Buffer
	le := binary.LittleEndian
	gh := make([]byte, 24)
	le.PutUint32(gh[0:], 0xa1b2c3d4)
	le.PutUint16(gh[4:], 2)
	le.PutUint16(gh[6:], 4)
	le.PutUint32(gh[16:], 200)
	le.PutUint32(gh[20:], 1) // Ethernet
	buf.Write(gh)
	for _, p := range pkts {
		frame := make([]byte, 14+20+32) // Ethernet, IPv4, TCP with timestamps
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
		ip := frame[14:]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(min(20+32+p.payload, 65535)))
		ip[9] = 6
		tcp := ip[20:]
		src, dst := uint16(proxy), uint16(truck)
		if p.up {
			src, dst = truck, proxy
		}
		binary.BigEndian.PutUint16(tcp[0:], src)
		binary.BigEndian.PutUint16(tcp[2:], dst)
		binary.BigEndian.PutUint32(tcp[4:], p.seq)
		tcp[12] = 8 << 4
		tcp[13] = p.flags
		ts := t0.Add(p.at)
		rh := make([]byte, 16)
		le.PutUint32(rh[0:], uint32(ts.Unix()))
		le.PutUint32(rh[4:], uint32(ts.Nanosecond()/1000))
		le.PutUint32(rh[8:], uint32(len(frame)))
		le.PutUint32(rh[12:], uint32(len(frame)+p.payload)) // the payload itself is not captured
		buf.Write(rh)
		buf.Write(frame)
	}
	got, err := ReadPcap(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pkts) {
		t.Fatalf("read %d packets, want %d", len(got), len(pkts))
	}
	if p := got[4]; p.Payload != 10_000 || p.IPLen != 10_052 || p.SrcPort != proxy || !p.Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("packet 5 read as %+v", p)
	}
	m := DefaultWireModel()
	ports := map[uint16]bool{proxy: true}
	all := m.Captured(got, ports, Selection{From: t0, To: t0.Add(time.Minute)})
	// Up: SYN 52, ACK 52, request 152, ACK 52, probe 52, FIN 52, ACK 52,
	// and 3 ACKs for the extra segments of the large one (156).
	// Down: SYN-ACK 52, 10,052 + 6 × 52 re-cut headers, answer 52, FIN 52.
	want := Captured{Bytes: [2]int64{52 + 52 + 152 + 52 + 52 + 52 + 52 + 156, 52 + 10_052 + 6*52 + 52 + 52}, Packets: [2]int64{7 + 3, 4 + 6}, Keepalive: 104}
	if all != want {
		t.Errorf("\n got %+v\nwant %+v", all, want)
	}
	// A whole selection of a connection opened in it, and one opened
	// before it.
	if c := m.Captured(got, ports, Selection{From: t0, To: t0.Add(time.Second), Whole: true}); c != want {
		t.Errorf("whole: got %+v, want %+v", c, want)
	}
	if c := m.Captured(got, ports, Selection{From: t0.Add(time.Second), To: t0.Add(time.Minute), Whole: true}); c != (Captured{}) {
		t.Errorf("whole, opened before: got %+v, want nothing", c)
	}
	// A connection whose end the capture did not see is flagged.
	if c := m.Captured(got[:8], ports, Selection{From: t0, To: t0.Add(time.Second), Whole: true}); !c.Open {
		t.Errorf("a connection without its FINs is not flagged open: %+v", c)
	}
}

// TestExpectedIdle checks the analytic idle rate against a hand count.
func TestExpectedIdle(t *testing.T) {
	topic := "linkedge/v1/trucks/YS2R4X20005399401/status" // 43 bytes
	// PUBLISH: 2 + 43 + 2 + 300 = 347 remaining, 2 length bytes, 1 type:
	// 350 + 52; PUBACK 4 + 52; the truck's ACK 52. Silences of 30 s: one
	// probe and its answer by each side (4 × 52).
	want := float64(350+52+4+52+52+4*52) / 30
	if got := ExpectedIdle(300, topic, false, 30*time.Second, 30*time.Second, 15*time.Second, 15*time.Second); got != want {
		t.Errorf("plain: %v B/s, want %v", got, want)
	}
	// TLS adds 22 bytes to each record.
	if got := ExpectedIdle(300, topic, true, 30*time.Second, 30*time.Second, 15*time.Second, 15*time.Second); math.Abs(got-(want+44.0/30)) > 1e-9 {
		t.Errorf("TLS: %v B/s, want %v", got, want+44.0/30)
	}
	// A 60 s status interval with a 30 s MQTT keepalive: one ping
	// exchange (2 + 52 each way, and an ACK) in between, so silences of
	// 30 s again.
	want = float64(350+52+4+52+52+(54+54+52)+2*4*52) / 60
	if got := ExpectedIdle(300, topic, false, time.Minute, 30*time.Second, 15*time.Second, 15*time.Second); got != want {
		t.Errorf("with pings: %v B/s, want %v", got, want)
	}
}
