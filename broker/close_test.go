package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The tests below reproduce the ways mochi's (v2.7.9) own TCP listener made
// Broker.Close hang for ever (see listener.go). Each Close is bounded by
// closeWithin, so a regression fails the test instead of hanging it.

// closeSlack is what a loaded machine may add to CloseTimeout.
const closeSlack = 2 * time.Second

// closeWithin calls b.Close and fails the test at once if it has not
// returned within d. It returns Close's error and how long it took.
func closeWithin(t *testing.T, b *Broker, d time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		return err, time.Since(start)
	case <-time.After(d):
		t.Fatalf("Close did not return within %s", d)
		return nil, 0
	}
}

// requireClosedWithin checks a Close that should have had nothing to give
// up on: nil error, within the timeout plus slack.
func requireClosedWithin(t *testing.T, b *Broker, timeout time.Duration) time.Duration {
	t.Helper()
	err, took := closeWithin(t, b, timeout+closeSlack+waitFor)
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took > timeout+closeSlack {
		t.Errorf("Close took %s, CloseTimeout is %s", took, timeout)
	}
	return took
}

// requireRefused checks that addr no longer accepts connections.
func requireRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

// requireDropped checks that the broker closed conn (EOF or reset, not a
// read timeout).
func requireDropped(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	buf := make([]byte, 64<<10)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue // a DISCONNECT, or what was queued before it
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("connection from %s still open %s after Close", conn.LocalAddr(), waitFor)
		}
		return
	}
}

// TestCloseDropsConnectionsBeforeConnect: mochi's listener never closed a
// connection that had not sent CONNECT (nor a TLS handshake in progress), and
// its Close waited for it for ever.
func TestCloseDropsConnectionsBeforeConnect(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			const timeout = 2 * time.Second
			b := startBroker(t, func(c *Config) {
				c.CloseTimeout = timeout
				if useTLS {
					c.TLSCert, c.TLSKey, _ = selfSigned(t, t.TempDir())
				}
			})
			var conns []net.Conn
			for i := range 6 {
				c, err := net.DialTimeout("tcp", b.Addr(), waitFor)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if i%2 == 1 {
					// Half a CONNECT: a fixed header announcing more bytes
					// than ever come.
					if _, err := c.Write([]byte{0x10, 0x20}); err != nil {
						t.Fatal(err)
					}
				}
				conns = append(conns, c)
			}
			waitAccepted(t, b, len(conns))

			requireClosedWithin(t, b, timeout)
			for _, c := range conns {
				requireDropped(t, c)
			}
			requireRefused(t, b.Addr())
		})
	}
}

// waitAccepted waits until the broker's listener runs n connections.
func waitAccepted(t *testing.T, b *Broker, n int) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); ; {
		b.mqttLn.mu.Lock()
		got := len(b.mqttLn.conns)
		b.mqttLn.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener runs %d connections, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCloseWithClientsThatDoNotRead: the DISCONNECT mochi writes at Close
// had no deadline, so one client that stopped reading (its socket buffers
// full) blocked Close, and the listener's socket close behind it, for ever.
// Keep-alive 0 means mochi sets no deadline of its own either.
func TestCloseWithClientsThatDoNotRead(t *testing.T) {
	const timeout = 2 * time.Second
	b := startBroker(t, func(c *Config) { c.CloseTimeout = timeout })
	var stuck []net.Conn
	for i := range 4 {
		c := dialRaw(t, b.Addr())
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 0,
				ClientIdentifier: fmt.Sprintf("deaf-%d", i)},
		})
		if pk := c.recv(); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
			t.Fatalf("connack %+v", pk)
		}
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "flood/#"}}})
		if pk := c.recv(); pk.FixedHeader.Type != packets.Suback {
			t.Fatalf("suback %+v", pk)
		}
		stuck = append(stuck, c.conn)
	}
	// A healthy client alongside: it must be told and dropped as before.
	healthy := connect(t, clientOpts(b.Addr()))

	payload := make([]byte, 256<<10)
	for range 24 { // 6 MiB per client: past the socket buffers (4 MiB + 128 KiB here)
		if err := b.Server().Publish("flood/x", payload, false, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitWritesStalled(t, b)

	requireClosedWithin(t, b, timeout)
	if left := b.mqttLn.pending(); len(left) > 0 {
		t.Errorf("connections left open: %v", left)
	}
	for _, c := range stuck {
		requireDropped(t, c)
	}
	for deadline := time.Now().Add(waitFor); healthy.IsConnectionOpen(); {
		if time.Now().After(deadline) {
			t.Fatal("the healthy client is still connected after Close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	requireRefused(t, b.Addr())
}

// waitWritesStalled waits until the broker's byte counter stops moving:
// the clients' buffers are full and the writes block.
func waitWritesStalled(t *testing.T, b *Broker) {
	t.Helper()
	last := int64(-1)
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		sent := atomic.LoadInt64(&b.Server().Info.BytesSent)
		if sent == last {
			return
		}
		last = sent
	}
	t.Fatal("the broker's writes never stalled")
}

// TestCloseWhileClientsReconnect: under load, clients connecting while
// mochi disconnects the ones it knows were either never closed (accepted,
// but not in its client table yet: they were then served and kept Close
// waiting as long as they pinged) or accepted after it and left hanging.
// Clients that reconnect at once, and raw dialers, hammer the broker while
// it closes.
func TestCloseWhileClientsReconnect(t *testing.T) {
	const timeout = 2 * time.Second
	for round := range 3 {
		b := startBroker(t, func(c *Config) { c.CloseTimeout = timeout })
		addr := b.Addr()
		for i := range 12 {
			opts := clientOpts(addr).SetClientID(fmt.Sprintf("reconnecting-%d-%d", round, i)).
				SetAutoReconnect(true).SetConnectRetry(true).
				SetConnectRetryInterval(5 * time.Millisecond).SetMaxReconnectInterval(20 * time.Millisecond).
				SetConnectTimeout(time.Second).SetKeepAlive(2 * time.Second)
			c := paho.NewClient(opts)
			c.Connect() // retried in the background until Disconnect
			t.Cleanup(func() { c.Disconnect(0) })
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() { dialLoop(stop, addr, i) })
		}
		time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)

		requireClosedWithin(t, b, timeout)
		close(stop)
		wg.Wait()
		requireRefused(t, addr)
	}
}

// dialLoop connects to addr over and over until stop: every other
// connection sends a CONNECT and lingers, the others say nothing.
func dialLoop(stop <-chan struct{}, addr string, n int) {
	connect := mustEncode(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: fmt.Sprintf("dialer-%d", n)},
	})
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			time.Sleep(time.Millisecond)
			continue
		}
		if i%2 == 0 {
			_, _ = c.Write(connect)
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(waitFor))
			_, _ = c.Read(make([]byte, 64))
			c.Close()
		}()
		time.Sleep(time.Millisecond)
	}
}

// mustEncode encodes an MQTT 3.1.1 CONNECT.
func mustEncode(pk packets.Packet) []byte {
	var buf bytes.Buffer
	pk.ProtocolVersion = 4
	if err := pk.ConnectEncode(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// TestCloseRightAfterStart: Close straight after Start, while clients are
// connecting, on a store-backed broker whose DataDir the next round reuses
// (a storage left open would keep its file lock).
func TestCloseRightAfterStart(t *testing.T) {
	const timeout = 2 * time.Second
	dir := t.TempDir()
	for range 5 {
		b := newBroker(t, func(c *Config) { c.CloseTimeout = timeout; c.DataDir = dir })
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err := b.Start(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		addr := b.Addr()
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				c := paho.NewClient(clientOpts(addr).SetClientID(fmt.Sprintf("eager-%d", i)).SetConnectTimeout(time.Second))
				c.Connect().WaitTimeout(waitFor)
				c.Disconnect(0)
			})
		}
		requireClosedWithin(t, b, timeout)
		wg.Wait()
		requireRefused(t, addr)
	}
}

// TestCloseConcurrentWithStart: Close at any point of Start (before it,
// while the storage loads, while the listener starts serving, after it)
// returns in time, leaves nothing open, and Start reports that it was
// closed.
func TestCloseConcurrentWithStart(t *testing.T) {
	const timeout = 2 * time.Second
	dir := t.TempDir()
	for i := range 20 {
		b := newBroker(t, func(c *Config) { c.CloseTimeout = timeout; c.DataDir = dir })
		started := make(chan error, 1)
		go func() { started <- b.Start(context.Background()) }()
		// Dial whatever address is bound, to add connections to the race.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if addr := b.Addr(); addr != "" {
					if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
						c.Close()
					}
				}
				time.Sleep(100 * time.Microsecond)
			}
		})
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		requireClosedWithin(t, b, timeout)
		var err error
		select {
		case err = <-started:
		case <-time.After(waitFor):
			t.Fatal("Start did not return")
		}
		close(stop)
		wg.Wait()
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Fatalf("round %d: Start = %v, want nil or ErrClosed", i, err)
		}
		if b.Ready() {
			t.Fatalf("round %d: Ready after Close", i)
		}
		if addr := b.Addr(); addr != "" {
			requireRefused(t, addr)
		}
	}
	// The storage was closed every time: its lock is free.
	startBroker(t, func(c *Config) { c.DataDir = dir })
}

// stuckHook blocks the end of one client's connection until released: a
// stand-in for anything in mochi or an embedding program that never
// returns.
type stuckHook struct {
	mqtt.HookBase
	client  string
	release chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (h *stuckHook) ID() string { return "test-stuck" }

func (h *stuckHook) Provides(b byte) bool { return b == mqtt.OnDisconnect }

func (h *stuckHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if cl.ID == h.client {
		h.once.Do(func() { close(h.entered) })
		<-h.release
	}
}

// TestCloseGivesUp: when something never returns, Close still returns
// within CloseTimeout, with an error wrapping ErrCloseTimeout that names what
// it left, and closes the storage so the DataDir can be used again.
func TestCloseGivesUp(t *testing.T) {
	const timeout = time.Second
	dir := t.TempDir()
	b, err := New(Config{Listen: "127.0.0.1:0", DataDir: dir, HTTPListen: "127.0.0.1:0", CloseTimeout: timeout, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := &stuckHook{client: "stuck-client", release: make(chan struct{}), entered: make(chan struct{})}
	t.Cleanup(func() { close(h.release) }) // lets mochi finish in the background
	if err := b.Server().AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	connect(t, clientOpts(b.Addr()).SetClientID("stuck-client"))

	err, took := closeWithin(t, b, timeout+closeSlack+waitFor)
	if took > timeout+closeSlack {
		t.Errorf("Close took %s, CloseTimeout is %s", took, timeout)
	}
	if !errors.Is(err, ErrCloseTimeout) {
		t.Fatalf("Close = %v, want ErrCloseTimeout", err)
	}
	for _, want := range []string{`client "stuck-client"`, "mochi's server shutdown"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "not closed") {
		t.Errorf("error %q: the storage should have been closed early", err)
	}
	select {
	case <-h.entered:
	default:
		t.Error("the hook never blocked: the test proves nothing")
	}
	if again := b.Close(); again != err {
		t.Errorf("second Close = %v, want the first result", again)
	}
	requireRefused(t, b.Addr())
	// The storage is closed and its lock free, although mochi is stuck.
	startBroker(t, func(c *Config) { c.DataDir = dir })
}

// flakyListener fails its first Accepts, as a listener out of file
// descriptors does, then hands out one end of a pipe, then blocks until
// closed.
type flakyListener struct {
	fails  atomic.Int32
	once   sync.Once
	served chan net.Conn
	closed chan struct{}
	close  sync.Once
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, errors.New("accept: too many open files")
	}
	var conn net.Conn
	f.once.Do(func() {
		a, b := net.Pipe()
		f.served <- b
		conn = a
	})
	if conn != nil {
		return conn, nil
	}
	<-f.closed
	return nil, net.ErrClosed
}

func (f *flakyListener) Close() error   { f.close.Do(func() { close(f.closed) }); return nil }
func (f *flakyListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// TestListenerRetriesAcceptErrors: mochi's listener stopped accepting for
// good at the first Accept error; this one backs off and goes on, and Close
// still stops it and the connection it serves.
func TestListenerRetriesAcceptErrors(t *testing.T) {
	b := newBroker(t, nil)
	fl := &flakyListener{served: make(chan net.Conn, 1), closed: make(chan struct{})}
	fl.fails.Store(3)
	l := newListener("test", "", nil, b.Server(), testLogger())
	l.ln = fl
	established := make(chan string, 1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		l.Serve(func(id string, c net.Conn) error {
			established <- id
			_, err := c.Read(make([]byte, 1)) // until Close closes it
			return err
		})
	}()
	select {
	case id := <-established:
		if id != "test" {
			t.Errorf("established on listener %q", id)
		}
	case <-time.After(waitFor):
		t.Fatal("no connection established after the Accept errors")
	}
	peer := <-fl.served
	defer peer.Close()

	done := make(chan struct{})
	go func() {
		l.Close(func(string) {})
		close(done)
	}()
	for _, ch := range []chan struct{}{done, served} {
		select {
		case <-ch:
		case <-time.After(waitFor):
			t.Fatal("Close or Serve did not return")
		}
	}
	if left := l.pending(); len(left) != 0 {
		t.Errorf("connections left: %v", left)
	}
}

// TestCloseWhileClientsLeave: a broker closes within its deadline while
// clients keep connecting and leaving, and without mochi's way of finding
// a listener's clients: its Clients.GetByListener takes the clients table's
// read lock twice, and a client leaving in between deadlocked a broker
// Close for ever (seen in CI). The churn makes that interleaving likely;
// the closer mochi hands the listener must not be used at all.
func TestCloseWhileClientsLeave(t *testing.T) {
	for round := range 5 {
		b := startBroker(t, nil)
		b.mu.Lock()
		ln := b.mqttLn
		b.mu.Unlock()
		used := false
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					c := paho.NewClient(clientOpts(b.Addr()).SetClientID(fmt.Sprintf("churn-%d-%d", i, n%3)).
						SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(2 * time.Second))
					if tok := c.Connect(); tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
						c.Disconnect(0)
					}
				}
			})
		}
		time.Sleep(300 * time.Millisecond)
		closed := make(chan struct{})
		go func() {
			ln.Close(func(string) { used = true }) // as mochi's Server.Close calls it
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the listener's Close has not returned after 30 s", round)
		}
		close(stop)
		wg.Wait()
		if used {
			t.Fatal("the listener used mochi's closer, whose GetByListener can deadlock")
		}
		if err := b.Close(); err != nil {
			t.Logf("round %d: close: %v", round, err)
		}
	}
}
