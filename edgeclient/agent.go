// Package edgeclient is the truck agent: it keeps one model current by
// pulling signed releases from the fleet broker whenever the truck is online,
// and serves that model locally over HTTP and the truck's own MQTT bus,
// online or not.
//
// The agent is a set of owned parts started in order and stopped in reverse:
//
//	state (update.Store) → boot the committed model → HTTP server →
//	local broker and MQTT bridge → fleet connection → updater, heartbeat
//
// Serving never waits for the network: a truck that starts offline serves
// its last committed model at once. Updates run through the state machine in
// package update, one at a time, and only while the fleet connection is up.
package edgeclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/edgeclient/hold"
	"github.com/linkedge/linkedge/edgeclient/outbox"
	"github.com/linkedge/linkedge/edgeclient/runtime/docker"
	"github.com/linkedge/linkedge/edgeclient/runtime/inprocess"
	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/inference"
	icontainer "github.com/linkedge/linkedge/inference/container"
	"github.com/linkedge/linkedge/inference/ortlib"
	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/mqttstore"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("agent closed")

// Agent is one truck's agent.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	store    *update.Store
	machine  *update.Machine
	rts      *runtimes
	docker   io.Closer // the Docker client, when containers are enabled
	slot     *inference.Slot
	srv      *server.Server
	reg      *prometheus.Registry
	local    *broker.Broker
	bridge   *server.MQTTBridge
	holds    *hold.Controller
	holdBus  paho.Client // the local bus client that takes holds
	fleet    paho.Client
	verifier *release.Verifier
	grants   *grants

	tls    *tls.Config   // fleet broker and downloads; nil: Go's defaults
	outbox *outbox.Queue // predictions to forward; nil when none are
	fwd    forwardMetrics

	predictions, alerts atomic.Int64
	booted              atomic.Bool // the booted event went out

	mu         sync.Mutex
	st         status.Status
	fleetRel   *release.Release // latest accepted model release
	pinRel     *release.Release // latest accepted per-truck pin, if any
	fleetDoc   []byte           // fleetRel as signed
	pinDoc     []byte           // pinRel as signed
	online     bool
	offline    chan struct{} // closed when the fleet link drops
	fleetState update.Fleet  // last accepted serials, as persisted
	updated    time.Time     // when the last update committed

	// running is the artifact the updater works on, cancelRunning stops it.
	running       string
	cancelRunning context.CancelFunc

	dialer      fleetDialer
	fleetStore  *mqttstore.Store // the fleet session's store (see onConnect)
	listsAtDial atomic.Uint64    // fleetStore.Lists() when the last dial began
	refusals    *loginRefusals
	dialStop    chan struct{} // closed by Close: a reconnect's jitter wait ends
	link        linkCounters
	connected   chan struct{} // a fleet connection came up
	statusDirty chan struct{} // the status changed

	wake      chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	closing   atomic.Value // the step Close is at, for ErrCloseTimeout
}

// New checks cfg and prepares an agent; Start runs it.
func New(cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	store, err := update.OpenStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("truck", cfg.Truck), store: store,
		slot: &inference.Slot{}, reg: prometheus.NewRegistry(),
		verifier: &release.Verifier{Keys: cfg.Keys, MaxSkew: cfg.MaxClockSkew},
		wake:     make(chan struct{}, 1), offline: make(chan struct{}),
		connected: make(chan struct{}, 1), statusDirty: make(chan struct{}, 1),
	}
	close(a.offline) // offline until the first connect
	a.dialStop = make(chan struct{})
	a.dialer.jitter, a.dialer.stop = cfg.Fleet.ReconnectJitter, a.dialStop
	a.refusals = newLoginRefusals()
	a.dialer.refused = a.loginRefused
	a.reg.MustRegister(a.refusals.total)
	a.srv = server.New(server.Config{Addr: cfg.HTTP, Logger: a.log}, a.slot, a.reg)
	a.registerForwardMetrics()
	a.registerLinkMetrics()
	inproc := inprocess.New(a.slot, inference.Options{IntraOpThreads: cfg.Inference.Threads}, cfg.Inference.Batch, a.srv.ObserveBatch)
	inproc.Limits.MaxModelBytes = cfg.Inference.MaxModelBytes
	a.rts = &runtimes{inprocess: inproc}
	if cfg.Runtime != nil {
		a.rts = &runtimes{inprocess: cfg.Runtime}
	}
	a.tls, _ = cfg.Fleet.TLS.Build() // checked by Validate
	dlTLS := a.tls
	if u, err := url.Parse(cfg.Fleet.Broker); err == nil && (u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "mqtts" || u.Scheme == "tcps" || u.Scheme == "wss") {
		if a.tls == nil {
			a.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		// A reconnect resumes the TLS session from a ticket instead of a
		// full handshake: no certificates on the wire either way.
		a.tls.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		if !*cfg.Link.PostQuantum {
			// X25519 alone: the hybrid ML-KEM share would add about 2.3 KB
			// to every full handshake (link.post_quantum turns it on).
			a.tls.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
		}
	}
	if dlTLS != nil && dlTLS.ServerName != "" {
		// server_name is the broker's; artifacts come from other hosts
		// (S3, a CDN), each checked against its own name.
		dlTLS = dlTLS.Clone()
		dlTLS.ServerName = ""
	}
	a.holds, _ = hold.New(cfg.Hold) // checked by Validate
	holdAPI := a.holds.Handler()
	if cfg.LocalBroker.Users != "" {
		auth, err := newHoldAuth(cfg.LocalBroker.Users)
		if err != nil {
			return nil, err
		}
		holdAPI = auth.wrap(holdAPI)
	}
	a.srv.Handle("/v1/hold", holdAPI)
	a.srv.Handle("/v1/hold/", holdAPI)
	a.grants = newGrants(cfg.Truck, a.verifier, a.publishFleet, a.log.With("part", "grants"))
	a.machine = &update.Machine{Store: store, Runtime: a.rts, Fetch: a.grants.fetch(fetchArtifact(a.log, cfg.Fleet.HTTPProxy, dlTLS)),
		VerifyRelease: a.verifyKept, Hold: a.holdState, Probation: cfg.Probation, RetryMin: cfg.RetryMin, RetryMax: cfg.RetryMax,
		MaxURLFailures: cfg.MaxURLFailures, DeadURLRetry: cfg.DeadURLRetry, Log: a.log, OnChange: a.onRecord}
	// The groups go in the status so that operators can sort the fleet by
	// them (the console's filter); a copy, since the caller owns cfg.
	a.st = status.Status{Schema: status.Schema, Truck: cfg.Truck, Model: cfg.Model, Groups: slices.Clone(cfg.Groups), Phase: string(update.Idle), Agent: "linkedge"}
	return a, nil
}

// Start brings the agent up and returns once it serves locally (when a
// committed model exists) and has begun connecting to the fleet broker.
func (a *Agent) Start(ctx context.Context) (err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.cfg.Runtime == nil {
		if err := a.loadONNXRuntime(ctx); err != nil {
			return err
		}
	}
	if a.cfg.Containers.Enabled {
		cli, err := icontainer.Connect(ctx)
		if err != nil {
			return fmt.Errorf("containers.enabled: %w", err)
		}
		a.docker = cli
		rt := &docker.Runtime{Docker: cli, Slot: a.slot, WorkDir: filepath.Join(a.cfg.DataDir, "containers"),
			ReadyTimeout: a.cfg.Containers.ReadyTimeout, Owner: docker.OwnerOf(a.cfg.Truck, a.cfg.DataDir), Log: a.log}
		// Containers of an earlier run (a crash, a power cut) would hold
		// ports and memory for ever; boot starts the committed one again.
		if n, err := rt.Sweep(ctx); err != nil {
			a.log.Error("boot: could not remove every container an earlier run left; remove them with docker rm -f", "label", docker.OwnerLabel+"="+rt.Owner, "removed", n, "err", err)
		} else if n > 0 {
			a.log.Info("boot: removed containers an earlier run left", "count", n)
		}
		a.rts.container = rt
	}
	if f, err := a.store.Fleet(); err != nil {
		a.log.Error("boot: fleet state unreadable; accepting the next valid release", "err", err)
	} else {
		a.fleetState = f
		a.st.Serial = max(f.LastSerial, f.LastPinSerial)
	}
	// The last accepted documents, checked again (an expired one is
	// dropped: the broker will have a newer one).
	if doc := a.store.Document(update.ReleaseDocument); doc != nil {
		if r, err := a.verifier.Verify(doc); err == nil && r.Model == a.cfg.Model && r.CheckAudience(a.cfg.Truck, false) == nil {
			a.fleetRel, a.fleetDoc = r, doc
		}
	}
	if doc := a.store.Document(update.PinDocument); doc != nil {
		r, err := a.verifier.Verify(doc)
		if err == nil && r.Model == a.cfg.Model {
			err = r.CheckAudience(a.cfg.Truck, true)
		}
		if err == nil && !r.Clear {
			a.pinRel, a.pinDoc = r, doc
		} else if err != nil {
			// A pin kept by an agent from before pins named their truck,
			// among others: the publisher pins again if it still wants to.
			a.log.Warn("boot: dropping the kept pin; following the model's release", "err", err)
		}
	}
	serving, err := a.machine.Boot(ctx)
	if err != nil {
		a.log.Error("boot: the installed model could not start; serving nothing until an update succeeds", "err", err)
		a.setError(err.Error())
	}
	if serving != nil {
		a.setVersion(serving.Version, serving.Serial)
		a.log.Info("serving committed model", "model", serving.Model, "version", serving.Version)
	}
	// Before the HTTP server: /metrics reads the queue.
	if a.cfg.Forward.alerts() || a.cfg.Forward.All {
		q, err := outbox.Open(filepath.Join(a.cfg.DataDir, "outbox"), a.cfg.Forward.MaxQueued)
		if err != nil {
			return fmt.Errorf("forward: %w", err)
		}
		a.outbox = q
		if n := q.Len(); n > 0 {
			a.log.Info("predictions from an earlier run wait to be forwarded", "count", n)
		}
	}
	if a.cfg.HTTP != "off" {
		if err := a.srv.Start(); err != nil {
			return err
		}
	}
	if err := a.startLocalBus(ctx); err != nil {
		return err
	}
	a.fleet = paho.NewClient(a.fleetOptions())
	// Routes, not only subscriptions: on a session the broker kept, the
	// agent does not subscribe again, and messages still arrive.
	for topic := range a.fleetSubscriptions() {
		a.fleet.AddRoute(topic, a.onFleetMessage)
	}
	a.fleet.Connect() // retries in the background; online/offline handlers drive the rest
	a.wg.Add(3)
	go a.updater(runCtx)
	go a.statusLoop(runCtx)
	go a.holdWatcher(runCtx)
	if a.outbox != nil {
		a.wg.Add(1)
		go a.forwarder(runCtx)
	}
	if a.rts.container != nil {
		a.wg.Add(1)
		go a.supervise(runCtx)
	}
	a.kick()
	return nil
}

// loadONNXRuntime loads the library the in-process runtime needs.
func (a *Agent) loadONNXRuntime(ctx context.Context) error {
	lib := a.cfg.Inference.ONNXRuntime
	if lib == "" {
		p, err := ortlib.Find()
		if err != nil {
			// Fetching it here (as `linkedge setup` does) would make a
			// truck's start wait on a 110 MB download.
			return fmt.Errorf("onnx runtime: %w; install the library with the agent and name it in inference.onnxruntime (or %s)", err, ortlib.EnvVar)
		}
		lib = p
	}
	return inference.Init(ctx, lib)
}

func (a *Agent) startLocalBus(ctx context.Context) error {
	if a.cfg.LocalBroker.Listen == "off" && a.cfg.LocalBroker.External == "" {
		return nil // no local bus: applications use the HTTP endpoint
	}
	url := a.cfg.LocalBroker.External
	login := localLogin{a.cfg.LocalBroker.Username, a.cfg.LocalBroker.Password}
	if a.cfg.LocalBroker.Listen != "off" {
		b, err := broker.New(broker.Config{Listen: a.cfg.LocalBroker.Listen, DataDir: a.cfg.LocalBroker.DataDir, HTTPListen: "",
			UsersFile: a.cfg.LocalBroker.Users, LocalBus: true, Logger: a.log.With("part", "local-broker")})
		if err != nil {
			return fmt.Errorf("local broker: %w", err)
		}
		if err := b.Start(ctx); err != nil {
			return fmt.Errorf("local broker: %w", err)
		}
		a.local = b
		url = "tcp://" + b.Addr()
		// Empty without local_broker.users: the bus is anonymous.
		login.username, login.password = b.AgentLogin()
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	br, err := server.StartMQTT(cctx, server.MQTTConfig{
		Broker: url, ClientID: "linkedge-agent-" + a.cfg.Truck, Username: login.username, Password: login.password,
		ReadingsTopic: topics.LocalReadings(a.cfg.Model), PredictionsTopic: topics.LocalPredictions(a.cfg.Model),
		ErrorsTopic:  topics.LocalErrors(a.cfg.Model),
		OnPrediction: a.onPrediction, Logger: a.log, Registerer: a.reg,
	}, a.slot)
	if err != nil {
		return fmt.Errorf("local bus: %w", err)
	}
	a.bridge = br
	return a.startHoldBus(ctx, url, login)
}

// localLogin is how the agent's own clients log in to the local bus.
type localLogin struct{ username, password string }

func (a *Agent) onPrediction(p server.PredictionMessage) {
	a.predictions.Add(1)
	alert := false
	if b := a.slot.Current(); b != nil && p.Label == b.Meta().Labels[1] {
		a.alerts.Add(1)
		alert = true
	}
	if a.outbox != nil && (a.cfg.Forward.All || alert && a.cfg.Forward.alerts()) {
		a.forward(p)
	}
}

// ErrCloseTimeout is returned by Close when the agent did not stop within
// Config.ShutdownTimeout; the error names the step it was stuck in.
var ErrCloseTimeout = errors.New("agent did not stop within its shutdown timeout")

// Close stops the agent: it reports itself offline, stops the updater (an
// update in flight pauses and resumes at the next start), the MQTT bridge,
// the HTTP server (requests in flight finish) and the local broker. It
// returns within Config.ShutdownTimeout whatever a dependency does: past
// it, it logs the step it was stuck in, abandons the rest and returns
// ErrCloseTimeout, so that a process manager is not left waiting. It is
// idempotent.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.close()
		}()
		t := time.NewTimer(a.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			step, _ := a.closing.Load().(string)
			a.log.Error("shutdown timed out; abandoning what is left", "stuck_in", step, "timeout", a.cfg.ShutdownTimeout)
			a.closeErr = fmt.Errorf("%w (%s): stuck in %s", ErrCloseTimeout, a.cfg.ShutdownTimeout, step)
		}
	})
	return a.closeErr
}

func (a *Agent) close() {
	step := func(s string) { a.closing.Store(s) }
	step("stopping the updater")
	if a.dialStop != nil { // nil in an agent built without New (tests)
		close(a.dialStop)
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	if a.fleet != nil {
		step("disconnecting from the fleet broker")
		a.mu.Lock()
		a.st.Online = false
		a.mu.Unlock()
		// The will goes only on a lost link, not on a clean disconnect:
		// say offline on the presence topic; the retained status stays.
		// Wait for the broker's acknowledgement (bounded): Disconnect does
		// not flush a publish still queued in paho, and on a loaded
		// machine the offline presence was lost.
		if tok, ok := a.publishPresence(false); ok {
			tok.WaitTimeout(min(2*time.Second, a.cfg.ShutdownTimeout/4))
		}
		a.fleet.Disconnect(250)
	}
	if a.holdBus != nil {
		step("disconnecting the hold client")
		a.holdBus.Disconnect(100)
	}
	if a.bridge != nil {
		step("closing the local MQTT bridge")
		a.bridge.Close()
	}
	if a.outbox != nil {
		step("closing the forward queue")
		a.outbox.Close() // after the bridge, the last to push
	}
	step("shutting down the HTTP server")
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout/2)
	a.srv.Shutdown(ctx)
	cancel()
	if a.local != nil {
		step("closing the local broker")
		a.local.Close()
	}
	if c := a.rts.Serving(); c != nil && c.Spec().Kind == release.RuntimeContainer {
		step("removing the serving container")
		c.Close() // the serving container goes with the agent; it restarts from the committed bundle
	}
	step("closing the model")
	a.slot.Close()
	if a.docker != nil {
		step("closing the Docker client")
		a.docker.Close()
	}
	step("done")
}

// verifyKept checks a release document kept beside a bundle: signed by a
// pinned key and for this truck's model; its validity window no longer
// matters, the bytes it names were verified when it was current.
func (a *Agent) verifyKept(doc []byte) (*release.Release, error) {
	r, err := a.verifier.VerifyAtRest(doc)
	if err != nil {
		return nil, err
	}
	if r.Model != a.cfg.Model {
		return nil, fmt.Errorf("kept release is for model %s, this truck runs %s", r.Model, a.cfg.Model)
	}
	return r, nil
}

// HTTPAddr is the bound inference address.
func (a *Agent) HTTPAddr() string { return a.srv.Addr() }

// LocalBrokerAddr is the embedded local broker's address ("" when external).
func (a *Agent) LocalBrokerAddr() string {
	if a.local == nil {
		return ""
	}
	return a.local.Addr()
}

// Registry holds the agent's Prometheus metrics.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Status returns the agent's current status document.
func (a *Agent) Status() status.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	s.Predictions, s.Alerts = a.predictions.Load(), a.alerts.Load()
	if c := a.rts.Serving(); c != nil {
		s.SHA256 = c.Spec().SHA256
	}
	return s
}

// LastUpdate is when the last update committed (zero if none since start).
func (a *Agent) LastUpdate() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.updated
}

func (a *Agent) kick() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) setVersion(v, serial int64) {
	a.mu.Lock()
	a.st.Version = v
	if serial > a.st.Serial {
		a.st.Serial = serial
	}
	a.mu.Unlock()
}

func (a *Agent) setError(msg string) {
	a.mu.Lock()
	a.st.LastError = msg
	a.mu.Unlock()
}
