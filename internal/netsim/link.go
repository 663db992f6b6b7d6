package netsim

import (
	"errors"
	"io"
	"net"
	"sync"
)

// link is one proxied connection: the accepted client side and the dialled
// target side.
type link struct {
	client   net.Conn
	upstream net.Conn // nil until dialled; guarded by Proxy.mu
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
func (p *Proxy) pipe(l *link, dst, src net.Conn, lim *limiter) {
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
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite() // the peer may be gone already; then so is the point
			}
			return
		}
		if err != nil {
			p.drop(l)
			return
		}
	}
}
