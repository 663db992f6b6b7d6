package netsim

import (
	"sync/atomic"
	"time"
)

// Direction is the way bytes travel through the proxy.
type Direction int

const (
	// Up is from the client that connected to the proxy towards the target
	// (a truck's bytes towards the cloud).
	Up Direction = iota
	// Down is from the target back to the client.
	Down
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Opposite is the other direction.
func (d Direction) Opposite() Direction { return 1 - d }

// EventKind says what happened on a proxied connection.
type EventKind int

const (
	// EventOpen: a client connected and the target was dialled.
	EventOpen EventKind = iota
	// EventData: Bytes passed in Dir in one read and one write.
	EventData
	// EventEOF: the sender in Dir ended its side in order (a FIN), and the
	// proxy passed the half-close on.
	EventEOF
	// EventClose: the connection ended after both sides had ended in order.
	EventClose
	// EventReset: the connection was torn down otherwise (a cut, an error
	// on either side, Close); the proxy aborts its sockets.
	EventReset
	// EventRefused: a client connected while the link was cut and was
	// reset at once; nothing reached the target.
	EventRefused
)

func (k EventKind) String() string {
	switch k {
	case EventOpen:
		return "open"
	case EventData:
		return "data"
	case EventEOF:
		return "eof"
	case EventClose:
		return "close"
	case EventReset:
		return "reset"
	case EventRefused:
		return "refused"
	}
	return "unknown"
}

// Event is one thing an observer sees. Conn numbers the proxy's
// connections from 1 in the order they were accepted.
type Event struct {
	Conn  uint64
	Time  time.Time
	Kind  EventKind
	Dir   Direction // EventData, EventEOF
	Bytes int       // EventData
}

// SegmentPayload is the payload of a full TCP segment on a 1500-byte-MTU
// path with the timestamps option (1500 - 20 IPv4 - 20 TCP - 12 options),
// the unit of [Counters.Segments].
const SegmentPayload = 1448

// Counters are a proxy's totals since it started, indexed by [Direction].
// The proxy sees byte streams, not packets, so Segments is an estimate: each
// burst (one read from one side, written as one write to the other) counts
// as ceil(bytes/SegmentPayload) segments. Several packets that arrive
// before the proxy reads are one burst, so for the sender's side it is a
// lower bound; pure ACKs, handshakes and keepalive probes are not counted.
type Counters struct {
	Bytes    [2]int64
	Bursts   [2]int64
	Segments [2]int64
	// Conns were opened to the target; Refused were reset while the link was
	// cut; Resets ended other than in order (both sides ending with EOF).
	Conns, Refused, Resets int64
}

// counters is the live, atomic form of Counters.
type counters struct {
	bytes, bursts, segments [2]atomic.Int64
	conns, refused, resets  atomic.Int64
}

func (c *counters) snapshot() Counters {
	var s Counters
	for d := range 2 {
		s.Bytes[d] = c.bytes[d].Load()
		s.Bursts[d] = c.bursts[d].Load()
		s.Segments[d] = c.segments[d].Load()
	}
	s.Conns, s.Refused, s.Resets = c.conns.Load(), c.refused.Load(), c.resets.Load()
	return s
}

// Counters returns the proxy's totals so far.
func (p *Proxy) Counters() Counters { return p.count.snapshot() }

// Observe calls fn for every event from now on; nil stops. fn runs on the
// proxy's goroutines, sometimes while the proxy holds its lock, so it must
// be quick and must not call the proxy's methods. Events of one connection
// arrive in order, except that a burst whose write completed just as the
// connection was torn down may be reported right after its EventReset;
// events of different connections interleave.
func (p *Proxy) Observe(fn func(Event)) {
	if fn == nil {
		p.observer.Store(nil)
		return
	}
	p.observer.Store(&fn)
}

func (p *Proxy) emit(e Event) {
	switch e.Kind {
	case EventOpen:
		p.count.conns.Add(1)
	case EventData:
		p.count.bytes[e.Dir].Add(int64(e.Bytes))
		p.count.bursts[e.Dir].Add(1)
		p.count.segments[e.Dir].Add(int64((e.Bytes + SegmentPayload - 1) / SegmentPayload))
	case EventReset:
		p.count.resets.Add(1)
	case EventRefused:
		p.count.refused.Add(1)
	}
	if fn := p.observer.Load(); fn != nil {
		(*fn)(e)
	}
}
