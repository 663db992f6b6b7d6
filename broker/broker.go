package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/linkedge/linkedge/internal/tlsconfig"
)

// storeLockTimeout is how long Start waits for the bolt file lock, which is
// held by any other broker using the same DataDir.
const storeLockTimeout = time.Second

type state int

const (
	stateNew state = iota
	stateStarting
	stateRunning
	stateClosed
)

// Broker is one MQTT broker: a mochi server, its optional storage, its
// optional health/metrics HTTP endpoint and its own metrics registry.
// Create it with New, then Start it once and Close it once done; a Broker
// cannot be restarted (create a new one with the same DataDir instead).
type Broker struct {
	cfg   Config
	log   *slog.Logger
	srv   *mqtt.Server
	reg   *prometheus.Registry
	auth  *authHook
	sess  *sessionHook
	store *boltStore   // nil without a DataDir
	quota *retainQuota // nil without a users file or with no retained cap
	tls   *tls.Config
	// agentPassword is LocalAgentUser's on a local bus; see AgentLogin.
	agentPassword string
	budget        *truckBudget   // nil without a users file
	queues        *sessionQueues // nil with neither queue cap
	// closing is closed when Close begins: publishes held back by the
	// truck budget stop waiting.
	closing chan struct{}
	// backpressure paces publishers to wildcard subscribers that fall
	// behind (backpressure.go).
	backpressure *backpressure

	startedAt atomic.Int64 // unix nanoseconds; 0 until Start succeeds
	ready     atomic.Bool

	mu       sync.Mutex // guards the fields below; never held while waiting on mochi
	state    state
	mqttAddr string
	httpAddr string
	mqttLn   *listener
	httpSrv  *http.Server
	httpDone chan struct{} // closed when the HTTP serving goroutine returns
	// startDone is closed when a Start returns; startErr is then what its
	// teardown left behind (see Close during Start).
	startDone chan struct{}
	startErr  error

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg, reads the users file and TLS key pair, and prepares a
// broker without opening any port or file for writing; Start does that.
func New(cfg Config) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var users map[string]User
	if cfg.UsersFile != "" {
		var err error
		if users, err = LoadUsers(cfg.UsersFile); err != nil {
			return nil, err
		}
		if err := checkUsersFor(users, cfg.LocalBus); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.UsersFile, err)
		}
		if cfg.Profile == ProfileAWSIoTCore {
			if err := checkThingNames(users); err != nil {
				return nil, fmt.Errorf("%s: %w", cfg.UsersFile, err)
			}
		}
	}
	var agentPassword string
	if cfg.LocalBus && users != nil {
		var err error
		if agentPassword, err = addLocalAgent(users); err != nil {
			return nil, err
		}
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load tls key pair: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		newTicketStore(maxTickets).install(tlsCfg)
		if cfg.TLSClientCA != "" {
			pool, err := tlsconfig.ClientCAs(cfg.TLSClientCA)
			if err != nil {
				return nil, fmt.Errorf("tls_client_ca: %w", err)
			}
			tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = cfg.expirySeconds()
	// A truck's persistent session must outlive its queued messages' expiry,
	// and mochi's default (no limit) would keep sessions of retired trucks
	// forever.
	caps.MaximumSessionExpiryInterval = uint32(cfg.sessionExpiry() / time.Second)
	// Read before the packet is: a 50 MB publish costs nothing but the cut.
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	// Acks carry no properties of the message they acknowledge: strict
	// MQTT 5 clients (Paho's) refuse an ack with the publish's user
	// properties, and truck applications bring their own clients.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	// QoS 1 messages awaiting a client's acknowledgement, per client: the
	// whole packet-id space. mochi's default (8,192) dropped 15,392 status
	// reports on their way to the publisher when 10,000 trucks updated at
	// once; a truck is sent a handful of documents, so the bound costs only
	// what a busy subscriber really has in flight.
	caps.MaximumInflight = 65535
	// Packets queued for a client's connection. mochi allocates the whole
	// queue with every client: its default (8,192) cost 64 KB per truck,
	// two thirds of the broker's memory with a connected fleet, for trucks
	// that are sent a handful of documents. 1,024 still lets the publisher,
	// the one busy reader, fall a thousand status reports behind on top
	// of what its socket holds; linkedge_broker_messages_dropped_total
	// counts any overflow.
	caps.MaximumClientWritesPending = 1024
	if cfg.Profile == ProfileAWSIoTCore {
		caps.MaximumQos = 1 // see iotCoreHook.OnPacketRead for QoS 2
	}
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true, // the truck agent publishes and subscribes in-process
		Logger:       newMochiLogger(cfg.Logger),
	})

	b := &Broker{cfg: cfg, log: cfg.Logger, srv: srv, tls: tlsCfg, reg: prometheus.NewRegistry(), agentPassword: agentPassword}
	b.auth = newAuthHook(users, srv.Clients, cfg.Logger)
	b.auth.bindCert = cfg.TLSBindUsername
	b.auth.thingNames = cfg.Profile == ProfileAWSIoTCore
	if err := srv.AddHook(b.auth, nil); err != nil {
		return nil, fmt.Errorf("add auth hook: %w", err)
	}
	b.closing = make(chan struct{})
	// Right after the auth hook: a publish held back waits before any
	// later hook (the retain guard) takes a lock for it.
	if users != nil && (cfg.TruckMessagesPerSecond > 0 || cfg.TruckBytesPerSecond > 0) {
		b.budget = newTruckBudget(&cfg, users, b.closing)
		if err := srv.AddHook(b.budget, nil); err != nil {
			return nil, fmt.Errorf("add truck budget hook: %w", err)
		}
	}
	b.backpressure = newBackpressure(srv, cfg.Logger, b.closing)
	if err := srv.AddHook(b.backpressure, nil); err != nil {
		return nil, fmt.Errorf("add backpressure hook: %w", err)
	}
	if cfg.MaxQueuedBytes > 0 || cfg.MaxQueuedBytesPerTruck > 0 {
		b.queues = newSessionQueues(max(cfg.MaxQueuedBytes, 0), max(cfg.MaxQueuedBytesPerTruck, 0), cfg.Logger)
		b.auth.queues = b.queues // asked for each delivery, in OnACLCheck
		if err := srv.AddHook(b.queues, nil); err != nil {
			return nil, fmt.Errorf("add session queue hook: %w", err)
		}
	}
	guard := &retainGuard{}
	if err := srv.AddHook(guard, nil); err != nil {
		return nil, fmt.Errorf("add retain guard hook: %w", err)
	}
	if err := srv.AddHook(newDropReporter(cfg.Logger), nil); err != nil {
		return nil, fmt.Errorf("add drop reporter hook: %w", err)
	}
	// After the auth hook, which takes the retain flag off a truck's
	// publishes beyond its status before they are counted.
	if users != nil && cfg.MaxRetainedPerUser > 0 {
		b.quota = newRetainQuota(cfg.MaxRetainedPerUser, users, &b.auth.retainDropped, cfg.Logger)
		if err := srv.AddHook(b.quota, nil); err != nil {
			return nil, fmt.Errorf("add retained quota hook: %w", err)
		}
	}
	if cfg.Profile == ProfileAWSIoTCore {
		// Before the session hook: a packet this one refuses must not have
		// had a queued message set aside for it (sessionHook.OnPacketRead).
		p := newIoTCoreHook(srv, cfg.Logger)
		if err := srv.AddHook(p, nil); err != nil {
			return nil, fmt.Errorf("add %s profile hook: %w", cfg.Profile, err)
		}
		if err := b.reg.Register(p.refused); err != nil {
			return nil, fmt.Errorf("register profile metrics: %w", err)
		}
	}
	b.sess = &sessionHook{srv: srv, acl: b.auth.OnACLCheck, guard: guard}
	if err := srv.AddHook(b.sess, nil); err != nil {
		return nil, fmt.Errorf("add session hook: %w", err)
	}
	if err := b.reg.Register(newCollector(b)); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return b, nil
}

// Start opens the storage, binds the MQTT and HTTP listeners and returns once
// both accept connections. ctx bounds only the start-up; use Close to stop.
// If Start fails, everything it opened is closed again and the Broker is
// closed (ErrClosed from then on). A Close during Start makes Start undo
// its work and return an error wrapping ErrClosed; that Close waits for it
// (within CloseTimeout).
func (b *Broker) Start(ctx context.Context) (err error) {
	b.mu.Lock()
	switch b.state {
	case stateStarting, stateRunning:
		b.mu.Unlock()
		return ErrAlreadyStarted
	case stateClosed:
		b.mu.Unlock()
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		b.mu.Unlock()
		return fmt.Errorf("start broker: %w", err)
	}
	// The lock is not held for the rest: loading a large store takes a
	// while, and a Close meanwhile must not wait on it unboundedly.
	b.state = stateStarting
	done := make(chan struct{})
	b.startDone = done
	b.mu.Unlock()
	defer close(done)

	var httpLn net.Listener
	defer func() {
		if err == nil {
			return
		}
		if httpLn != nil {
			_ = httpLn.Close()
		}
		b.mu.Lock()
		b.state = stateClosed
		b.mu.Unlock()
		// Closes the MQTT listener and the storage, if opened.
		now := time.Now()
		if cerr := b.stopMQTT(now, now.Add(b.cfg.CloseTimeout)); cerr != nil {
			b.startErr = cerr // read by Close after done is closed
			err = errors.Join(err, cerr)
		}
	}()

	if b.cfg.DataDir != "" {
		if err := b.openStore(); err != nil {
			return err
		}
	}
	ln := newListener("mqtt", b.cfg.Listen, b.tls, b.srv, b.log)
	if err := b.srv.AddListener(ln); err != nil {
		return fmt.Errorf("listen mqtt on %s: %w", b.cfg.Listen, err)
	}
	b.mu.Lock()
	b.mqttLn, b.mqttAddr = ln, ln.Address()
	b.mu.Unlock()
	if b.cfg.HTTPListen != "" {
		if httpLn, err = net.Listen("tcp", b.cfg.HTTPListen); err != nil {
			return fmt.Errorf("listen http on %s: %w", b.cfg.HTTPListen, err)
		}
		b.mu.Lock()
		b.httpAddr = httpLn.Addr().String()
		b.mu.Unlock()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	if err := b.srv.Serve(); err != nil { // loads the store, then accepts
		return fmt.Errorf("serve mqtt: %w", err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == stateClosed {
		return fmt.Errorf("start broker: closed while starting: %w", ErrClosed)
	}
	if httpLn != nil {
		b.httpSrv, b.httpDone = b.newHTTPServer(), make(chan struct{})
		go b.serveHTTP(b.httpSrv, httpLn, b.httpDone)
	}
	b.startedAt.Store(time.Now().UnixNano())
	b.state = stateRunning
	b.ready.Store(true)
	b.warnIfAnonymous()
	b.log.Info("mqtt broker started", "mqtt_addr", b.mqttAddr, "http_addr", b.httpAddr,
		"tls", b.tls != nil, "auth", b.auth.users != nil, "data_dir", b.cfg.DataDir,
		"max_message_expiry", b.cfg.MaxMessageExpiry)
	return nil
}

func (b *Broker) openStore() error {
	if err := os.MkdirAll(b.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(b.cfg.DataDir, storeFile)
	store := newBoltStore(b.srv)
	err := b.srv.AddHook(store, &bolt.Options{
		Path:    path,
		Bucket:  "mochi",
		Options: &bbolt.Options{Timeout: storeLockTimeout},
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("open storage %s: locked by another process: %w", path, err)
	}
	if err != nil {
		return fmt.Errorf("open storage %s: %w", path, err)
	}
	b.store, b.sess.store = store, store
	if b.quota != nil {
		b.quota.store, store.quota = store, b.quota
	}
	return nil
}

func (b *Broker) serveHTTP(srv *http.Server, ln net.Listener, done chan<- struct{}) {
	defer close(done)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		b.log.Error("health/metrics endpoint stopped", "error", err)
	}
}

// warnIfAnonymous flags the one configuration that lets anyone who can reach
// the port steer the fleet.
func (b *Broker) warnIfAnonymous() {
	if b.auth.users != nil {
		return
	}
	host, _, _ := net.SplitHostPort(b.mqttAddr)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		b.log.Warn("mqtt broker allows anonymous access on a non-loopback address; set users_file",
			"mqtt_addr", b.mqttAddr)
	}
}

// Close disconnects all clients, stops the listeners and closes the storage.
// It is idempotent and safe to call concurrently; every call returns the
// first call's result.
//
// Close returns within Config.CloseTimeout whatever the clients and mochi
// do. If it has to give up on something (a connection whose goroutine does
// not end, mochi's shutdown, the storage), it logs and returns an error
// wrapping ErrCloseTimeout that names it; what was given up on goes on in
// the background.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

// How Close shares out its CloseTimeout (as fractions of it): writes to
// clients fail after a quarter (a client that does not read gets no
// DISCONNECT), the wait for connections to end stops at half, the wait for
// mochi at five eighths, a storage closed early gets until three quarters,
// and the HTTP endpoint the rest, its in-flight requests cut off at seven
// eighths.
const (
	closeDrainPart   = 1.0 / 4
	closeConnsPart   = 1.0 / 2
	closeMochiPart   = 5.0 / 8
	closeStorePart   = 3.0 / 4
	closeHTTPPart    = 7.0 / 8
	closeHTTPEndPart = 1.0
)

func (b *Broker) close() error {
	start := time.Now()
	at := func(part float64) time.Time { return start.Add(time.Duration(float64(b.cfg.CloseTimeout) * part)) }
	b.mu.Lock()
	prev := b.state
	b.state = stateClosed
	httpSrv, httpDone, startDone := b.httpSrv, b.httpDone, b.startDone
	b.mu.Unlock()
	close(b.closing) // close runs once (closeOnce)
	b.ready.Store(false)
	switch prev {
	case stateStarting:
		// Start sees the state when mochi is up and undoes its work.
		t := time.NewTimer(time.Until(at(1)))
		defer t.Stop()
		select {
		case <-startDone:
			return b.startErr
		case <-t.C:
			err := fmt.Errorf("close mqtt broker: %w after %s: Start is still running (loading the storage?); it closes what it opened when it returns",
				ErrCloseTimeout, b.cfg.CloseTimeout)
			b.log.Error("mqtt broker close timed out", "error", err)
			return err
		}
	case stateRunning:
	default:
		return nil // never started, or a failed Start already cleaned up
	}

	var errs []error
	// MQTT first: /healthz keeps answering 503 while clients are drained.
	if err := b.stopMQTT(start, at(closeStorePart)); err != nil {
		errs = append(errs, err)
	}
	if httpSrv != nil {
		ctx, cancel := context.WithDeadline(context.Background(), at(closeHTTPPart))
		defer cancel()
		if err := httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shut down http endpoint: %w", err))
			_ = httpSrv.Close()
		}
		t := time.NewTimer(time.Until(at(closeHTTPEndPart)))
		defer t.Stop()
		select {
		case <-httpDone:
		case <-t.C:
			errs = append(errs, fmt.Errorf("close http endpoint %s: %w: its server goroutine has not returned", b.HTTPAddr(), ErrCloseTimeout))
		}
	}
	b.log.Info("mqtt broker stopped", "mqtt_addr", b.Addr(), "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// stopMQTT closes mochi's server, which closes the listener, every client
// and the storage, and gives up waiting at the shares of the CloseTimeout
// that started at start; storeBy is when the storage must be closed by.
// Past mochi's share it closes the storage itself: the storage hook turns
// every later call into a no-op, so mochi finishing late does no harm.
func (b *Broker) stopMQTT(start, storeBy time.Time) error {
	timeout := b.cfg.CloseTimeout
	at := func(part float64) time.Time { return start.Add(time.Duration(float64(timeout) * part)) }
	b.mu.Lock()
	ln := b.mqttLn
	b.mu.Unlock()
	if ln != nil {
		ln.setCloseDeadlines(at(closeDrainPart), at(closeConnsPart))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.srv.Close() // always nil in mochi v2.7.9
	}()
	t := time.NewTimer(time.Until(at(closeMochiPart)))
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	}

	var left []string
	if ln != nil {
		if conns := ln.pending(); len(conns) > 0 {
			left = append(left, fmt.Sprintf("%d client connection(s) still open: %s", len(conns), summarize(conns, 5)))
		}
	}
	left = append(left, "mochi's server shutdown (still running in the background)")
	if b.store != nil {
		path := filepath.Join(b.cfg.DataDir, storeFile)
		stopped := make(chan error, 1)
		go func() { stopped <- b.store.Stop() }()
		st := time.NewTimer(time.Until(storeBy))
		defer st.Stop()
		select {
		case err := <-stopped:
			if err != nil {
				left = append(left, fmt.Sprintf("storage %s: closed early, with an error: %v", path, err))
			}
		case <-st.C:
			left = append(left, fmt.Sprintf("storage %s not closed: its file lock stays held until the process exits", path))
		}
	}
	go func() {
		<-done
		b.log.Warn("mqtt server finished closing after Close gave up", "mqtt_addr", b.Addr(), "after", time.Since(start).Round(time.Millisecond))
	}()
	err := fmt.Errorf("close mqtt broker %s: %w after %s; abandoned %s", b.Addr(), ErrCloseTimeout, timeout, strings.Join(left, "; "))
	b.log.Error("mqtt broker close timed out", "error", err)
	return err
}

// summarize joins the first n items of list and counts the rest.
func summarize(list []string, n int) string {
	if len(list) <= n {
		return strings.Join(list, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(list[:n], ", "), len(list)-n)
}

// Addr returns the bound MQTT address (host:port), "" before Start.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mqttAddr
}

// HTTPAddr returns the bound health/metrics address, "" before Start or when
// the endpoint is disabled.
func (b *Broker) HTTPAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.httpAddr
}

// Ready reports whether the broker is started and not yet closing.
func (b *Broker) Ready() bool { return b.ready.Load() }

// Server returns the underlying mochi server for in-process use: its inline
// client is enabled, so Publish, Subscribe and Unsubscribe work (and bypass
// the ACL). Publish after Start: the storage is attached and loaded by Start,
// so a retained message published before it would not be stored.
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Registry returns this broker's own metrics registry; the caller may
// register more collectors on it or gather it into a larger one.
func (b *Broker) Registry() *prometheus.Registry { return b.reg }
