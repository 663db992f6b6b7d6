// Package netsim is a TCP proxy whose link can be cut, restored and slowed
// down on command. Demos use it to show a truck losing coverage in the
// middle of a model download; end-to-end tests use it to interrupt a
// transfer at a chosen moment without touching the code under test.
//
// The proxy listens on 127.0.0.1 and forwards each accepted connection to
// one target address. It is a test and demo tool: it does no
// authentication. It counts the bytes, bursts and connections it passes
// ([Proxy.Counters]) and can report each of them as it happens
// ([Proxy.Observe]), which is how `linkedge bench link` measures what a
// truck's link carries.
package netsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from [Proxy.Addr] to a target. All methods
// are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	// ctx is cancelled by Close; it aborts dials to the target.
	ctx    context.Context
	cancel context.CancelFunc

	rate     atomic.Int64 // bytes per second per direction, 0 = unlimited
	up, down limiter      // client→target and target→client
	perConn  bool         // each connection has limiters of its own

	count    counters
	observer atomic.Pointer[func(Event)]
	nextID   atomic.Uint64

	mu     sync.Mutex
	online bool
	closed bool
	links  map[*link]struct{}

	wg        sync.WaitGroup // the accept loop and every connection's goroutines
	closeOnce sync.Once
	closeErr  error
}

// dialTimeout bounds connecting to the target; Close aborts it sooner.
const dialTimeout = 10 * time.Second

// Option configures a [Proxy].
type Option func(*options)

type options struct {
	keepAlive time.Duration
	perConn   bool
}

// PerConnection makes [Proxy.SetRate] limit each connection on its own
// instead of all of them together: many trucks, each on its own link,
// behind one proxy.
func PerConnection() Option { return func(o *options) { o.perConn = true } }

// KeepAlive sets the TCP keepalive of the connections the proxy accepts, so
// that the client's side of the link sees the probes the real server would
// send: -1 turns them off (as the LinkEdge broker does), 0 is Go's default
// (15 s).
func KeepAlive(d time.Duration) Option { return func(o *options) { o.keepAlive = d } }

// New starts a proxy to target (host:port) on a free loopback port. The
// target is dialled anew for every accepted connection, so it need not be
// up yet.
func New(target string, opts ...Option) (*Proxy, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	ln, err := (&net.ListenConfig{KeepAlive: o.keepAlive}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netsim: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target:  target,
		ln:      ln,
		ctx:     ctx,
		cancel:  cancel,
		online:  true,
		links:   make(map[*link]struct{}),
		perConn: o.perConn,
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut takes the link down: every live connection is reset (both sides see
// a reset or EOF, and data in flight is lost, as when a modem loses its
// carrier), and new connections are accepted and reset at once until
// [Proxy.Restore]. Accepting and then resetting, rather than closing the
// listener, keeps Addr stable across cuts.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.online = false
	for l := range p.links {
		l.close()
		delete(p.links, l)
	}
}

// Restore brings the link back up after [Proxy.Cut]. Connections cut
// earlier stay dead; clients must reconnect, as they would in the field.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.online = true
	}
}

// Online reports whether the link is up (not cut, not closed).
func (p *Proxy) Online() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.online
}

// SetRate limits the bandwidth to bytesPerSecond in each direction, shared
// by all connections as on one cellular link; 0 or less removes the limit.
// It applies to data read from now on; a transfer already waiting for its
// turn finishes that wait.
func (p *Proxy) SetRate(bytesPerSecond int) {
	p.rate.Store(int64(max(bytesPerSecond, 0)))
	p.up.reset()
	p.down.reset()
}

// Close stops the proxy: the listener and every connection are closed, and
// Close returns once all of the proxy's goroutines have ended. Calling it
// again returns the first result.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.online = false
		for l := range p.links {
			l.close()
			delete(p.links, l)
		}
		p.mu.Unlock()
		p.cancel()
		if err := p.ln.Close(); err != nil {
			p.closeErr = fmt.Errorf("netsim: close listener: %w", err)
		}
		p.wg.Wait()
	})
	return p.closeErr
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: wait rather than spin.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		id := p.nextID.Add(1)
		p.mu.Lock()
		if p.closed || !p.online {
			p.mu.Unlock()
			reset(c)
			p.emit(Event{Conn: id, Time: time.Now(), Kind: EventRefused})
			continue
		}
		l := &link{p: p, id: id, client: c, done: make(chan struct{})}
		p.links[l] = struct{}{}
		p.wg.Add(1) // under mu, while not closed: Close's Wait cannot have started
		p.mu.Unlock()
		go p.serve(l)
	}
}

// serve dials the target for l and shovels bytes both ways until both
// directions end or the link is cut.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer p.drop(l)

	d := net.Dialer{Timeout: dialTimeout}
	up, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		return // the client sees its connection closed, as with a dead target
	}
	p.mu.Lock()
	select {
	case <-l.done: // cut while dialling
		p.mu.Unlock()
		reset(up)
		return
	default:
	}
	l.upstream = up
	p.emit(Event{Conn: l.id, Time: time.Now(), Kind: EventOpen})
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	upLim, downLim := &p.up, &p.down
	if p.perConn {
		upLim, downLim = &limiter{}, &limiter{}
	}
	go func() { defer wg.Done(); p.pipe(l, up, l.client, upLim, Up) }()
	go func() { defer wg.Done(); p.pipe(l, l.client, up, downLim, Down) }()
	wg.Wait()
}

// drop forgets l and closes both its connections.
func (p *Proxy) drop(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.links, l)
	l.close()
}

// reset closes c so that the peer sees a reset rather than an orderly end.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // best effort: a plain close is nearly as good
	}
	_ = c.Close() // nothing useful to do with the error of an abort
}
