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
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/linkedge/linkedge/internal/tlsconfig"
)

// httpShutdownTimeout bounds how long Close waits for in-flight health and
// metrics requests.
const httpShutdownTimeout = 5 * time.Second

// storeLockTimeout is how long Start waits for the bolt file lock, which is
// held by any other broker using the same DataDir.
const storeLockTimeout = time.Second

type state int

const (
	stateNew state = iota
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
	store *boltStore // nil without a DataDir
	tls   *tls.Config

	startedAt atomic.Int64 // unix nanoseconds; 0 until Start succeeds
	ready     atomic.Bool

	mu       sync.Mutex // guards the fields below; held for all of Start
	state    state
	mqttAddr string
	httpAddr string
	httpSrv  *http.Server
	httpDone chan struct{} // closed when the HTTP serving goroutine returns

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
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load tls key pair: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
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
	caps.MaximumSessionExpiryInterval = uint32(cfg.expirySeconds())
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true, // the truck agent publishes and subscribes in-process
		Logger:       newMochiLogger(cfg.Logger),
	})

	b := &Broker{cfg: cfg, log: cfg.Logger, srv: srv, tls: tlsCfg, reg: prometheus.NewRegistry()}
	b.auth = newAuthHook(users, srv.Clients, cfg.Logger)
	if err := srv.AddHook(b.auth, nil); err != nil {
		return nil, fmt.Errorf("add auth hook: %w", err)
	}
	if err := srv.AddHook(&retainGuard{}, nil); err != nil {
		return nil, fmt.Errorf("add retain guard hook: %w", err)
	}
	b.sess = &sessionHook{srv: srv}
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
// closed (ErrClosed from then on).
func (b *Broker) Start(ctx context.Context) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case stateRunning:
		return ErrAlreadyStarted
	case stateClosed:
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}

	var httpLn net.Listener
	defer func() {
		if err == nil {
			return
		}
		if httpLn != nil {
			_ = httpLn.Close()
		}
		b.state = stateClosed
		_ = b.srv.Close() // closes the MQTT listener and the storage
	}()

	if b.cfg.DataDir != "" {
		if err := b.openStore(); err != nil {
			return err
		}
	}
	tcp := listeners.NewTCP(listeners.Config{
		Type: listeners.TypeTCP, ID: "mqtt", Address: b.cfg.Listen, TLSConfig: b.tls,
	})
	if err := b.srv.AddListener(tcp); err != nil {
		return fmt.Errorf("listen mqtt on %s: %w", b.cfg.Listen, err)
	}
	b.mqttAddr = tcp.Address()
	if b.cfg.HTTPListen != "" {
		if httpLn, err = net.Listen("tcp", b.cfg.HTTPListen); err != nil {
			return fmt.Errorf("listen http on %s: %w", b.cfg.HTTPListen, err)
		}
		b.httpAddr = httpLn.Addr().String()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	if err := b.srv.Serve(); err != nil { // loads the store, then accepts
		return fmt.Errorf("serve mqtt: %w", err)
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
func (b *Broker) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Broker) close() error {
	b.mu.Lock()
	prev := b.state
	b.state = stateClosed
	httpSrv, httpDone := b.httpSrv, b.httpDone
	b.mu.Unlock()
	b.ready.Store(false)
	if prev != stateRunning {
		return nil // never started, or a failed Start already cleaned up
	}

	var errs []error
	// MQTT first: /healthz keeps answering 503 while clients are drained.
	if err := b.srv.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close mqtt server: %w", err))
	}
	if httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		if err := httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shut down http endpoint: %w", err))
			_ = httpSrv.Close()
		}
		<-httpDone
	}
	b.log.Info("mqtt broker stopped", "mqtt_addr", b.Addr())
	return errors.Join(errs...)
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
