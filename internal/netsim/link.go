package netsim

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// link is one proxied connection: the accepted client side and the dialled
// target side.
type link struct {
	p        *Proxy
	id       uint64
	client   net.Conn
	upstream net.Conn // nil until dialled; guarded by Proxy.mu
	// eof records, per Direction, that its sender ended in order.
	eof [2]atomic.Bool
	// done is closed when the link is torn down; it interrupts rate waits.
	done      chan struct{}
	closeOnce sync.Once
}

// close aborts both sides. Callers hold Proxy.mu (for upstream).
func (l *link) close() {
	l.closeOnce.Do(func() {
		close(l.done)
		reset(l.client)
		if l.upstream != nil {
			reset(l.upstream)
			kind := EventReset
			if l.eof[Up].Load() && l.eof[Down].Load() {
				kind = EventClose
			}
			l.p.emit(Event{Conn: l.id, Time: time.Now(), Kind: kind})
		}
	})
}

// copyBuf is the largest read; with a rate limit, reads are smaller so the
// limit is applied smoothly rather than in bursts.
const copyBuf = 32 << 10

// pipe copies src to dst, paced by lim. An orderly end (EOF) is passed on
// as a half-close, so request/response protocols that shut down their
// sending side still work; any other error tears the whole link down so
// that the opposite direction does not hang.
func (p *Proxy) pipe(l *link, dst, src net.Conn, lim *limiter, dir Direction) {
	buf := make([]byte, copyBuf)
	for {
		n := len(buf)
		rate := p.rate.Load()
		if rate > 0 {
			n = int(min(max(rate/20, 1), int64(len(buf)))) // ~20 chunks per second
		}
		m, err := src.Read(buf[:n])
		if m > 0 {
			if !lim.wait(m, rate, l.done) {
				return
			}
			if _, werr := dst.Write(buf[:m]); werr != nil {
				p.drop(l)
				return
			}
			p.emit(Event{Conn: l.id, Time: time.Now(), Kind: EventData, Dir: dir, Bytes: m})
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite() // the peer may be gone already; then so is the point
			}
			l.eof[dir].Store(true)
			p.emit(Event{Conn: l.id, Time: time.Now(), Kind: EventEOF, Dir: dir})
			return
		}
		if err != nil {
			p.drop(l)
			return
		}
	}
}
