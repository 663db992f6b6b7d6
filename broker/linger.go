package broker

import (
	"io"
	"net"
	"time"
)

// How a connection the broker ends is closed. A plain close of a TCP socket
// whose receive buffer still holds bytes makes the kernel send RST and throw
// away what was still queued for the peer, on both sides. A client that
// pipelines publishes past the Receive Maximum it was given is cut while
// its next publishes are in the broker's buffer, and so never read the
// DISCONNECT 0x93 that says why (nor the acks before it), only "connection
// reset by peer". The same goes for every DISCONNECT the broker sends to a
// client that is still writing (packet too large, not authorized, taken
// over, shutting down).
//
// So a connection is closed in two steps: Close shuts the write side (the
// peer gets every byte queued, then end of stream) and stops mochi's
// reads; then the connection's goroutine reads and discards what the peer
// still sends, until the peer closes, closeLinger passes, closeDrainMax
// bytes arrive or the broker's Close deadline comes, and only then closes
// the socket. A client that never closes holds it for closeLinger at most.
var (
	closeLinger   = 2 * time.Second
	closeDrainMax = int64(4 << 20)
)

// longAgo is a deadline in the past: it fails a blocked read at once.
var longAgo = time.Unix(1, 0)

// Close implements net.Conn: the first step of the close (see closeLinger).
// The socket itself is closed by finish, on the connection's goroutine.
func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	// Stop mochi's reads now: whatever the client sends from here on is
	// discarded unread, never processed.
	_ = c.Conn.SetReadDeadline(longAgo)
	if tcp, ok := c.Conn.(*net.TCPConn); ok {
		if err := tcp.CloseWrite(); err == nil {
			c.halfClosed = true
			return nil
		}
	}
	return c.Conn.Close()
}

// finish ends the connection once its goroutine is done with it: the
// second step of the close (see closeLinger). It returns within
// closeLinger.
func (c *conn) finish() {
	_ = c.Close()
	c.mu.Lock()
	half := c.halfClosed
	c.mu.Unlock()
	if half {
		by := time.Now().Add(closeLinger)
		if w := c.l.writeBy.Load(); w != 0 && time.Unix(0, w).Before(by) {
			by = time.Unix(0, w) // the broker is closing: keep to its deadline
		}
		if c.Conn.SetReadDeadline(by) == nil {
			_, _ = io.CopyN(io.Discard, c.Conn, closeDrainMax)
		}
	}
	_ = c.Conn.Close()
}
