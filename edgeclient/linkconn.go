package edgeclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// fleetDialer opens the fleet connection for tcp:// and ssl:// brokers (paho
// opens ws:// and wss:// itself). It differs from paho's in two ways that
// cost or save bytes on a metered link:
//
//   - TCP keepalive probes are off. Go's default sends one every 15 s on
//     every connection (about 18 MB a month on the wire); the MQTT
//     keep-alive already proves the link alive, end to end, at a rate the
//     truck's configuration chooses.
//   - It reads the CONNACK's session-present flag as it goes by (paho v1.5.1
//     drops it on reconnects), so that the agent re-subscribes only when the
//     broker lost its session: a re-subscribe makes the broker send every
//     retained release again.
type fleetDialer struct {
	// sessionPresent is the flag of the last CONNACK read.
	sessionPresent atomic.Bool
	// fullHandshakes and resumed count the TLS handshakes: a resumed one
	// (a session ticket) costs a few hundred bytes instead of several KB.
	fullHandshakes, resumed atomic.Int64
	// jitter is the most a reconnect waits before it dials (see
	// FleetConfig.ReconnectJitter); stop cuts the wait short when the
	// agent closes.
	jitter time.Duration
	stop   <-chan struct{}
	// connected is set by the first accepted CONNACK: later dials are
	// reconnects.
	connected atomic.Bool
	// refused, if set, is called with the return code of a CONNACK that
	// refuses the login: paho retries such a connect without a word.
	refused func(code byte)
}

// delay is how long the next dial waits: nothing before the first
// connection, a random share of jitter before a reconnect.
func (d *fleetDialer) delay() time.Duration {
	if d.jitter <= 0 || !d.connected.Load() {
		return 0
	}
	return rand.N(d.jitter)
}

// errDialerStopped is returned by a dial that the agent's Close cut short.
var errDialerStopped = errors.New("fleet dialer: agent closing")

// wait sleeps a random time up to jitter before a reconnect, so that a
// fleet that lost its broker at one moment does not come back at one
// moment.
func (d *fleetDialer) wait() error {
	pause := d.delay()
	if pause <= 0 {
		return nil
	}
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-d.stop:
		return errDialerStopped
	}
}

// open implements paho.OpenConnectionFunc.
func (d *fleetDialer) open(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	if err := d.wait(); err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: -1}
	d.sessionPresent.Store(false)
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "tcp", "mqtt":
		conn, err = dialer.Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "tcps":
		cfg := o.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{}
		}
		conn, err = d.dialTLS(dialer, uri.Host, cfg)
	default:
		return nil, fmt.Errorf("fleet dialer: scheme %q is not dialled here", uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return &connackConn{Conn: conn, d: d}, nil
}

// connackConn watches the first four bytes the broker sends: the CONNACK
// (0x20, remaining length 2, flags, return code).
type connackConn struct {
	net.Conn
	d    *fleetDialer
	head [4]byte
	n    int
}

func (c *connackConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.n < len(c.head) {
		k := copy(c.head[c.n:], p[:n])
		c.n += k
		if c.n == len(c.head) {
			c.d.sessionPresent.Store(c.head[0] == 0x20 && c.head[1] == 2 && c.head[2]&1 == 1 && c.head[3] == 0)
			if c.head[0] == 0x20 && c.head[1] == 2 && c.head[3] == 0 {
				c.d.connected.Store(true)
			}
			if c.head[0] == 0x20 && c.head[1] == 2 && c.head[3] != 0 && c.d.refused != nil {
				c.d.refused(c.head[3])
			}
		}
	}
	return n, err
}

// dialsItself reports whether fleetDialer opens connections to broker.
func dialsItself(broker string) bool {
	u, err := url.Parse(broker)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps":
		return true
	}
	return false
}

// dialTLS opens a TLS connection and counts whether it resumed a session.
//
// crypto/tls drops the cached session ticket whenever a handshake that
// tried it fails, whatever the cause (RFC 5077's advice, for a ticket the
// server refused). On a truck most failures are the link: a connection
// that a returning cellular link accepts and resets mid-handshake. The
// ticket is fine then, and dropping it makes the next reconnect a full
// handshake, several KB instead of a few hundred bytes. So after a failure
// of the transport (EOF, reset, timeout) the ticket is put back; after any
// other failure (an alert, a certificate) it stays dropped.
func (d *fleetDialer) dialTLS(dialer *net.Dialer, addr string, cfg *tls.Config) (net.Conn, error) {
	cache, key := cfg.ClientSessionCache, cfg.ServerName
	if key == "" {
		// tls.Dial names the server by the address's host, which is
		// also the cache key then.
		key, _, _ = net.SplitHostPort(addr)
	}
	var kept *tls.ClientSessionState
	if cache != nil {
		kept, _ = cache.Get(key)
	}
	c, err := tls.DialWithDialer(dialer, "tcp", addr, cfg)
	if err != nil {
		if kept != nil && transportFailure(err) {
			cache.Put(key, kept)
		}
		return nil, err
	}
	if c.ConnectionState().DidResume {
		d.resumed.Add(1)
	} else {
		d.fullHandshakes.Add(1)
	}
	return c, nil
}

// transportFailure reports whether err is the connection failing rather
// than the TLS peer refusing something.
func transportFailure(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		(errors.As(err, &ne) && ne.Timeout())
}
