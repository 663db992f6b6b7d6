package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

var _ listeners.Listener = (*listener)(nil)

// listener is the broker's MQTT TCP listener. It replaces mochi's
// listeners.TCP (v2.7.9), whose Close could block for ever, which is how a
// CI run hung 20 minutes in Agent.Close. mochi's server Close closes each
// listener and then waits for every connection's goroutine to end, but:
//
//   - it only disconnects the clients in its client table, which a
//     connection joins once its CONNECT has been read. A connection that
//     has not sent CONNECT yet (a client reconnecting at that moment, a
//     TLS handshake on a slow link, a port probe) is never closed: its
//     read has no deadline, so the wait lasts as long as the peer keeps the
//     socket open. If the peer then sends CONNECT it is served as usual,
//     keep-alive pings and all, and the wait never ends;
//   - it disconnects clients before it closes the socket, so a client
//     reconnecting meanwhile is accepted and then left hanging (mochi
//     neither serves nor closes it);
//   - the DISCONNECT it writes to each client has no write deadline: a
//     client that stopped reading (its socket buffer full) blocks Close for
//     ever, and with it the socket close, so Accept never returns either;
//   - its accept loop adds to the wait group that Close waits on from the
//     connection's own goroutine, which can race with the Wait (a misuse the
//     race detector reports);
//   - its accept loop gives up for good on the first Accept error (too many
//     open files, say): the broker then silently stops taking connections.
//
// This listener stops accepting first, bounds every write from the moment
// Close starts, lets mochi disconnect the clients it knows, closes every
// other connection itself, and waits (for a bounded time) until every
// connection's goroutine has returned, so that mochi's own wait finds
// nothing left.
type listener struct {
	id   string
	addr string
	tls  *tls.Config
	log  *slog.Logger
	srv  *mqtt.Server // to name the clients of connections still open
	ln   net.Listener
	stop chan struct{} // closed when Close starts; interrupts the accept back-off

	// writeBy is, once Close has started, the latest write deadline any
	// connection may have (unix nanoseconds; 0 before).
	writeBy atomic.Int64

	mu        sync.Mutex
	closing   bool
	drainBy   time.Time // set by setCloseDeadlines; see there
	waitUntil time.Time
	conns     map[*conn]struct{} // connections whose goroutine is running
	serving   sync.WaitGroup     // the accept loop; Add only under mu, before closing
	handlers  sync.WaitGroup     // one per entry in conns; Add only under mu, before closing
}

func newListener(id, addr string, tlsCfg *tls.Config, srv *mqtt.Server, log *slog.Logger) *listener {
	return &listener{id: id, addr: addr, tls: tlsCfg, srv: srv, log: log,
		stop: make(chan struct{}), conns: map[*conn]struct{}{}}
}

// ID implements listeners.Listener.
func (l *listener) ID() string { return l.id }

// Protocol implements listeners.Listener.
func (l *listener) Protocol() string { return "tcp" }

// Address implements listeners.Listener: the bound address once Init has
// run.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init implements listeners.Listener; mochi calls it from AddListener, so
// the port is bound before Serve.
func (l *listener) Init(*slog.Logger) error {
	// No TCP keepalive probes on accepted connections (Go's default is one
	// every 15 s): a truck pays for each on its cellular link, and the MQTT
	// keep-alive, which mochi enforces at 1.5× the client's, already finds
	// a dead link.
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// setCloseDeadlines tells the coming Close how long it may take: every
// write (the DISCONNECTs included) fails after drainBy, and Close stops
// waiting for connections to end at waitUntil.
func (l *listener) setCloseDeadlines(drainBy, waitUntil time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drainBy, l.waitUntil = drainBy, waitUntil
}

// Serve implements listeners.Listener. mochi starts it on a goroutine of
// its own, which may run only after Close: then it returns at once.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	l.serving.Add(1)
	l.mu.Unlock()
	defer l.serving.Done()

	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.isClosing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, say: keep the broker reachable once
			// they are back, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt listener cannot accept; retrying", "error", err, "retry_in", backoff)
			select {
			case <-l.stop:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		c := &conn{Conn: nc, l: l}
		l.mu.Lock()
		if l.closing {
			l.mu.Unlock()
			_ = nc.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.handlers.Add(1)
		l.mu.Unlock()
		go l.handle(c, establish)
	}
}

// handle runs one connection through mochi until it ends.
func (l *listener) handle(c *conn, establish listeners.EstablishFn) {
	defer l.handlers.Done()
	defer func() {
		c.finish() // see closeLinger
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	var nc net.Conn = c
	if l.tls != nil {
		// The handshake runs on mochi's first read, on this goroutine, and
		// its writes go through c, so they are bounded at Close too.
		nc = tls.Server(c, l.tls)
	}
	if err := establish(l.id, nc); err != nil {
		// Trucks drop off the network all the time; it is not news.
		l.log.Debug("mqtt connection ended", "remote", c.RemoteAddr().String(), "error", err)
	}
}

func (l *listener) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// disconnectClients disconnects the clients of this listener that mochi
// knows, as mochi's own closeClients would, but without it: mochi
// (v2.7.9) finds them with Clients.GetByListener, which takes the clients
// table's read lock a second time while holding it, so a client leaving
// at that moment (Clients.Delete waits for the write lock, and holds back
// new readers meanwhile) deadlocks both for ever. A broker Close never
// returned that way in CI (publisher TestReannouncesWhenBrokerLosesRetained,
// on a loaded machine). GetAll takes the read lock once.
func (l *listener) disconnectClients(closeClients listeners.CloseFn) {
	if l.srv == nil {
		closeClients(l.id)
		return
	}
	for _, cl := range l.srv.Clients.GetAll() {
		if cl.Net.Listener == l.id && !cl.Closed() {
			_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// Close implements listeners.Listener. mochi's server Close calls it and
// then waits for every connection's goroutine, so Close returns only once
// they have all ended, or at the wait deadline (the broker then reports
// the connections left; see pending).
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	l.closing = true
	close(l.stop)
	drainBy, waitUntil := l.drainBy, l.waitUntil
	if drainBy.IsZero() {
		now := time.Now()
		drainBy, waitUntil = now.Add(DefaultCloseTimeout/4), now.Add(DefaultCloseTimeout/2)
	}
	l.writeBy.Store(drainBy.UnixNano())
	conns := l.snapshot()
	l.mu.Unlock()

	// Stop accepting first: a client reconnecting during the shutdown is
	// refused, not accepted and left hanging.
	if l.ln != nil {
		_ = l.ln.Close()
	}
	for _, c := range conns {
		c.bound()
	}
	l.serving.Wait() // returns at once: Accept fails on a closed socket

	// The clients mochi knows get a DISCONNECT (server shutting down) and
	// are closed; the writes fail at drainBy at the latest.
	l.disconnectClients(closeClients)
	// Whatever is left mochi does not know of: connections that have not
	// sent CONNECT yet, or that joined its table after it looked.
	l.mu.Lock()
	rest := l.snapshot()
	l.mu.Unlock()
	for _, c := range rest {
		_ = c.Close()
	}

	done := make(chan struct{})
	go func() {
		l.handlers.Wait() // no Add can come any more: closing is set
		close(done)
	}()
	t := time.NewTimer(time.Until(waitUntil))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		l.log.Warn("mqtt connections did not end in time; leaving them", "connections", strings.Join(l.pending(), ", "))
	}
}

// snapshot lists the open connections; l.mu must be held.
func (l *listener) snapshot() []*conn {
	out := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		out = append(out, c)
	}
	return out
}

// pending describes the connections whose goroutine is still running:
// remote address, and client id when mochi knows one.
func (l *listener) pending() []string {
	l.mu.Lock()
	conns := l.snapshot()
	l.mu.Unlock()
	if len(conns) == 0 {
		return nil
	}
	ids := map[string]string{}
	for _, cl := range l.srv.Clients.GetAll() {
		if cl.Net.Listener == l.id {
			ids[cl.Net.Remote] = cl.ID
		}
	}
	out := make([]string, 0, len(conns))
	for _, c := range conns {
		remote := c.RemoteAddr().String()
		if id, ok := ids[remote]; ok {
			out = append(out, fmt.Sprintf("%s (client %q)", remote, id))
		} else {
			out = append(out, remote+" (no CONNECT processed)")
		}
	}
	slices.Sort(out)
	return out
}

// conn is an accepted connection. Once Close has started, no write deadline
// can be set past the listener's writeBy: mochi resets the deadlines on
// every packet it reads (keep-alive) and clears them for keep-alive 0,
// which would otherwise undo the bound.
type conn struct {
	net.Conn
	l  *listener
	mu sync.Mutex // makes "read writeBy, set the deadline" atomic against bound and Close
	// closed: Close has run, so reads stay stopped whatever deadline mochi
	// sets; halfClosed: the write side is shut and finish drains the rest
	// (linger.go).
	closed, halfClosed bool
}

// SetDeadline implements net.Conn.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn. After Close it changes nothing:
// mochi refreshes the deadline before each read, which would otherwise
// let a read started after Close wait for the client.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if by := c.l.writeBy.Load(); by != 0 {
		if limit := time.Unix(0, by); t.IsZero() || t.After(limit) {
			t = limit
		}
	}
	return c.Conn.SetWriteDeadline(t)
}

// bound applies the listener's writeBy to a write that may be blocked now.
func (c *conn) bound() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.Conn.SetWriteDeadline(time.Unix(0, c.l.writeBy.Load()))
}
