package bench

import (
	"slices"
	"sync"
	"time"

	"github.com/linkedge/linkedge/internal/netsim"
)

// The link bench counts what a truck's link carries with a user-space TCP
// proxy (package netsim). A proxy sees byte streams, not packets, so the
// bytes on the wire are estimated from what it sees, with the model below.
// `bench link --tcpdump` captures the real packets on the loopback
// interface alongside, to check the estimate (see capture.go).

// WireModel turns the bursts a proxy passes into IP bytes on a link with a
// 1500-byte MTU. Directions are netsim's: Up is from the client (the truck)
// to the target (the cloud).
type WireModel struct {
	// MSS is the payload of a full segment: 1448 bytes, a 1500-byte MTU
	// less 20 bytes of IPv4, 20 of TCP and 12 of the timestamps option
	// (Linux's default on both ends, net.ipv4.tcp_timestamps = 1).
	MSS int
	// Header is the IPv4 + TCP header of every segment but the SYNs: 52.
	Header int
	// SYN is the size of a SYN or SYN-ACK, whose options (MSS, SACK
	// permitted, timestamps, window scale) take 20 bytes: 60.
	SYN int
	// DelayedAck is how long a receiver waits before it acknowledges a lone
	// segment on its own: Linux's minimum, 40 ms. Data it sends in the
	// other direction meanwhile carries the acknowledgement instead.
	DelayedAck time.Duration
	// QuickAcks is how many bursts each side receives at the start of a
	// connection that it acknowledges at once, whatever it sends next
	// (Linux's quick-ACK mode on a new connection): 3 matches what
	// tcpdump shows of the truck's reconnects on lo.
	QuickAcks int
	// ClientKeepAlive and ServerKeepAlive are the TCP keepalive idle time
	// and probe interval of each end (Go's default for both dialled and
	// accepted connections is 15 s for both); zero means no probes.
	ClientKeepAlive, ServerKeepAlive time.Duration
	// KeepAliveSlack is how late a keepalive timer fires: Linux's timer
	// wheel rounds a 4–32 s timeout up to its 512 ms granularity (at
	// HZ=1000), so a silence only a little longer than the keepalive time
	// has no probe. 500 ms.
	KeepAliveSlack time.Duration
	// IdleClose, if not zero, closes a connection that is still open at the
	// end of the log, in order and from the client's side, once it has been
	// idle this long (net/http's client closes idle connections after
	// 90 s). The estimate then includes those keepalive probes and FINs,
	// and says so (Wire.Tail).
	IdleClose time.Duration
}

// DefaultWireModel is the model of a connection between two Go programs on
// Linux: 1500-byte MTU, timestamps, 40 ms delayed ACKs, 15 s keepalives.
func DefaultWireModel() WireModel {
	return WireModel{MSS: netsim.SegmentPayload, Header: 52, SYN: 60, DelayedAck: 40 * time.Millisecond, QuickAcks: 3,
		ClientKeepAlive: 15 * time.Second, ServerKeepAlive: 15 * time.Second, KeepAliveSlack: 500 * time.Millisecond}
}

// Wire is an estimate of the IP bytes of some traffic, by direction
// (indexed by netsim.Direction) and by what they were for.
type Wire struct {
	// Payload is what the applications wrote: MQTT packets, HTTP, TLS
	// records.
	Payload [2]int64
	// Headers are the IP and TCP headers of the segments carrying Payload.
	Headers [2]int64
	// Acks are pure acknowledgements (no payload) sent in each direction.
	Acks [2]int64
	// Control are the handshakes' SYNs and ACKs, FINs and their ACKs, and
	// resets.
	Control [2]int64
	// Keepalive are TCP keepalive probes and their answers.
	Keepalive [2]int64
	// Segments is the number of segments behind all of the above.
	Segments [2]int64
	// Conns is the number of connections opened.
	Conns int
	// Tail is set when a connection's end was not seen and its idle time
	// and closing were added from WireModel.IdleClose.
	Tail bool
}

// Bytes is the IP bytes in direction d.
func (w Wire) Bytes(d netsim.Direction) int64 {
	return w.Payload[d] + w.Headers[d] + w.Acks[d] + w.Control[d] + w.Keepalive[d]
}

// Total is the IP bytes both ways.
func (w Wire) Total() int64 { return w.Bytes(netsim.Up) + w.Bytes(netsim.Down) }

// Add adds o to w.
func (w *Wire) Add(o Wire) {
	for d := range 2 {
		w.Payload[d] += o.Payload[d]
		w.Headers[d] += o.Headers[d]
		w.Acks[d] += o.Acks[d]
		w.Control[d] += o.Control[d]
		w.Keepalive[d] += o.Keepalive[d]
		w.Segments[d] += o.Segments[d]
	}
	w.Conns += o.Conns
	w.Tail = w.Tail || o.Tail
}

// ConnLog is everything a proxy reported about one connection.
type ConnLog struct {
	ID     uint64
	Events []netsim.Event
}

// opened is when the connection was opened (or refused); zero if the log
// does not show it.
func (c ConnLog) opened() time.Time {
	for _, e := range c.Events {
		if e.Kind == netsim.EventOpen || e.Kind == netsim.EventRefused {
			return e.Time
		}
	}
	return time.Time{}
}

// ended reports whether the log shows the connection's end.
func (c ConnLog) ended() bool {
	for _, e := range c.Events {
		switch e.Kind {
		case netsim.EventClose, netsim.EventReset, netsim.EventRefused:
			return true
		}
	}
	return false
}

// Recorder keeps every event of a proxy, by connection. It is safe for
// concurrent use.
type Recorder struct {
	mu    sync.Mutex
	conns map[uint64]*ConnLog
	order []uint64
	last  time.Time
}

// Record starts recording p's events.
func Record(p *netsim.Proxy) *Recorder {
	r := &Recorder{conns: make(map[uint64]*ConnLog)}
	p.Observe(r.add)
	return r
}

func (r *Recorder) add(e netsim.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conns[e.Conn]
	if c == nil {
		c = &ConnLog{ID: e.Conn}
		r.conns[e.Conn] = c
		r.order = append(r.order, e.Conn)
	}
	c.Events = append(c.Events, e)
	if e.Time.After(r.last) {
		r.last = e.Time
	}
}

// Logs returns a copy of every connection's log, in the order the
// connections were first seen.
func (r *Recorder) Logs() []ConnLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ConnLog, 0, len(r.order))
	for _, id := range r.order {
		c := r.conns[id]
		out = append(out, ConnLog{ID: id, Events: slices.Clone(c.Events)})
	}
	return out
}

// Last is the time of the latest event (zero before the first).
func (r *Recorder) Last() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Open is the number of connections opened and not yet ended.
func (r *Recorder) Open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.conns {
		if !c.ended() {
			n++
		}
	}
	return n
}

// Selection picks what an estimate covers.
type Selection struct {
	From, To time.Time
	// Whole selects the connections opened in [From, To) with everything
	// they carried, whenever it was; otherwise only what happened in
	// [From, To) on any connection counts.
	Whole bool
}

func (s Selection) covers(t time.Time) bool { return !t.Before(s.From) && t.Before(s.To) }

// Estimate estimates the IP bytes of the selected traffic. end is when the
// log ends (connections still open are counted up to it, or closed by
// IdleClose when the selection is Whole).
func (m WireModel) Estimate(logs []ConnLog, sel Selection, end time.Time) Wire {
	var w Wire
	for _, c := range logs {
		if sel.Whole {
			if o := c.opened(); o.IsZero() || !sel.covers(o) {
				continue
			}
		}
		w.Add(m.estimateConn(c, sel, end))
	}
	return w
}

// estimateConn estimates one connection.
//
// Data: each burst of n bytes is ceil(n/MSS) segments of Header bytes
// each, plus its payload.
//
// Acknowledgements: a receiver acknowledges every second full segment at
// once; a remaining odd segment is acknowledged DelayedAck later by a pure
// ACK, unless the receiver sends data (or a FIN) first, which carries the
// acknowledgement. The first QuickAcks bursts each side receives are
// acknowledged at once.
//
// Connections: a handshake is a SYN and an ACK up and a SYN-ACK down; each
// side's FIN is answered by an ACK; a reset is one segment.
//
// Keepalive: after each side has received nothing for its keepalive time
// (plus KeepAliveSlack), it sends a probe, answered by an ACK, and again
// every keepalive interval (taken equal to the idle time, as Go sets both)
// while the silence lasts.
func (m WireModel) estimateConn(c ConnLog, sel Selection, end time.Time) Wire {
	var w Wire
	in := func(t time.Time) bool { return sel.Whole || sel.covers(t) }
	h := int64(m.Header)
	seg := func(field *[2]int64, d netsim.Direction, t time.Time, bytes int64, n int64) {
		if in(t) {
			field[d] += bytes
			w.Segments[d] += n
		}
	}
	ev := slices.Clone(c.Events)
	slices.SortStableFunc(ev, func(a, b netsim.Event) int { return a.Time.Compare(b.Time) })

	// pending[d]: segments sent in direction d that their receiver has not
	// acknowledged yet (0 or 1 after each step), since[d] when the odd one
	// came.
	var pending [2]int64
	var since [2]time.Time
	var received [2]int // bursts received in each direction (by its receiver)
	// flush sends the delayed ACKs whose timer ran out before t.
	flush := func(t time.Time) {
		for d := range netsim.Direction(2) {
			if pending[d] > 0 && !t.Before(since[d].Add(m.DelayedAck)) {
				seg(&w.Acks, d.Opposite(), since[d].Add(m.DelayedAck), h, 1)
				pending[d] = 0
			}
		}
	}
	// sent accounts for k segments sent in d at t: they carry the
	// acknowledgement of what d's sender had received, and are themselves
	// acknowledged every second one.
	sent := func(d netsim.Direction, t time.Time, k int64) {
		pending[d.Opposite()] = 0
		pending[d] += k
		if received[d]++; received[d] <= m.QuickAcks && pending[d]%2 == 1 {
			pending[d]++ // the odd segment too, at once
		}
		if full := pending[d] / 2; full > 0 {
			seg(&w.Acks, d.Opposite(), t, full*h, full)
		}
		if pending[d] %= 2; pending[d] == 1 {
			since[d] = t
		}
	}

	var active []time.Time // when either side last sent something
	var closed time.Time
	for _, e := range ev {
		flush(e.Time)
		switch e.Kind {
		case netsim.EventOpen:
			if in(e.Time) {
				w.Conns++
			}
			seg(&w.Control, netsim.Up, e.Time, int64(m.SYN)+h, 2) // SYN, ACK
			seg(&w.Control, netsim.Down, e.Time, int64(m.SYN), 1) // SYN-ACK
			active = append(active, e.Time)
		case netsim.EventData:
			k := int64((e.Bytes + m.MSS - 1) / m.MSS)
			seg(&w.Payload, e.Dir, e.Time, int64(e.Bytes), 0)
			seg(&w.Headers, e.Dir, e.Time, k*h, k)
			sent(e.Dir, e.Time, k)
			active = append(active, e.Time)
		case netsim.EventEOF:
			// The FIN carries any pending acknowledgement and is
			// acknowledged at once.
			pending[e.Dir.Opposite()] = 0
			seg(&w.Control, e.Dir, e.Time, h, 1)
			seg(&w.Control, e.Dir.Opposite(), e.Time, h, 1)
			active = append(active, e.Time)
		case netsim.EventClose:
			closed = e.Time
		case netsim.EventReset:
			seg(&w.Control, netsim.Down, e.Time, h, 1)
			closed = e.Time
		case netsim.EventRefused:
			if in(e.Time) {
				w.Conns++
			}
			seg(&w.Control, netsim.Up, e.Time, int64(m.SYN)+h, 2)
			seg(&w.Control, netsim.Down, e.Time, int64(m.SYN)+h, 2) // SYN-ACK, RST
			closed = e.Time
		}
	}
	stop := closed
	if stop.IsZero() {
		stop = end
		if sel.Whole && m.IdleClose > 0 && len(active) > 0 {
			stop = active[len(active)-1].Add(m.IdleClose)
			flush(stop)
			// The client's FIN and the server's, each acknowledged.
			seg(&w.Control, netsim.Up, stop, 2*h, 2)
			seg(&w.Control, netsim.Down, stop, 2*h, 2)
			w.Tail = true
		}
	}
	flush(stop)

	// Keepalive probes in each silence, by each side.
	for i, a := range active {
		b := stop
		if i+1 < len(active) {
			b = active[i+1]
		}
		for _, side := range []struct {
			d  netsim.Direction
			ka time.Duration
		}{{netsim.Up, m.ClientKeepAlive}, {netsim.Down, m.ServerKeepAlive}} {
			if side.ka <= 0 {
				continue
			}
			every := side.ka + m.KeepAliveSlack
			for t := a.Add(every); t.Before(b); t = t.Add(every) {
				seg(&w.Keepalive, side.d, t, h, 1)
				seg(&w.Keepalive, side.d.Opposite(), t, h, 1)
			}
		}
	}
	return w
}
