package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/aps"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/netsim"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// Transports the link bench can run.
const (
	TransportTCP  = "tcp"  // plain MQTT over TCP
	TransportMTLS = "mtls" // MQTT over TLS with client certificates
)

// Month is the 30 days the idle cost is extrapolated to.
const Month = 30 * 24 * time.Hour

// LinkConfig configures `linkedge bench link`. Zero values take the
// defaults; the agent, broker and publisher run with their own defaults
// unless a field below overrides one.
type LinkConfig struct {
	// Idle is the measured idle window. Zero measures two idle cycles
	// (see [IdleCycle]): with a status interval of an hour or less, two
	// status intervals from just after a heartbeat; with a longer one, from
	// just after a keepalive ping to just after the second one that
	// follows, and the rare heartbeats are added to the monthly figure from
	// the status document's measured size.
	Idle time.Duration
	// Reconnects is how many link cuts are measured. Default 3.
	Reconnects int
	// Alerts is how many forwarded alerts are measured. Default 100.
	Alerts int
	// AlertGap is the pause after each alert's acknowledgement, so that
	// alerts travel one by one as sparse alerts do. Default 100 ms.
	AlertGap time.Duration
	// Burst is how many alerts are measured in one burst: readings that
	// make alerts sent as fast as the agent scores them, so the forwarder
	// batches them (forward.max_batch per message). Default 1,000;
	// negative skips the burst.
	Burst int
	// Transports to run: TransportTCP, TransportMTLS. Default both.
	Transports []string
	// Tcpdump also captures the truck's side of the link on lo and reports
	// the captured bytes next to the estimate.
	Tcpdump bool
	// Profile is the agent's link.profile (cellular, wifi, satellite);
	// empty is the agent's default, cellular.
	Profile string
	// StatusInterval, KeepAlive and Probation override the agent's
	// status_interval, fleet.keep_alive and probation; zero keeps the
	// agent's defaults.
	StatusInterval, KeepAlive, Probation time.Duration
	// PublisherPoll overrides the publisher's poll_interval (how soon it
	// sees an approval); zero keeps its default. It changes nothing on the
	// truck's link, only how long the update takes.
	PublisherPoll time.Duration
	// TruckTCPKeepAlive and CloudTCPKeepAlive are the TCP keepalive times
	// the estimate assumes for the truck's MQTT connection and the broker's
	// listener. Zero means none: what the agent's fleet dialer and the
	// broker's listener set (edgeclient/linkconn.go, broker/listener.go), so
	// the MQTT keepalive alone watches the link. Set them to see what Go's
	// default (15 s) would cost.
	TruckTCPKeepAlive, CloudTCPKeepAlive time.Duration
	// Dir holds every part's state; default a temporary folder, removed
	// afterwards.
	Dir string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// Logger receives the parts' logs; default discarded.
	Logger *slog.Logger
}

func (c *LinkConfig) setDefaults() {
	if c.Reconnects <= 0 {
		c.Reconnects = 3
	}
	if c.Alerts <= 0 {
		c.Alerts = 100
	}
	if c.AlertGap <= 0 {
		c.AlertGap = 100 * time.Millisecond
	}
	if c.Burst == 0 {
		c.Burst = 1000
	}
	c.Burst = max(c.Burst, 0)
	if len(c.Transports) == 0 {
		c.Transports = []string{TransportTCP, TransportMTLS}
	}
	c.TruckTCPKeepAlive, c.CloudTCPKeepAlive = max(c.TruckTCPKeepAlive, 0), max(c.CloudTCPKeepAlive, 0)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// artifactServerTCPKeepAlive is the keepalive of the publisher's artifact
// server, which listens with Go's default; the agent's download client
// sets none (internal/download).
const artifactServerTCPKeepAlive = 15 * time.Second

// IdleCycle is the period in which an idle truck's traffic repeats, and
// whether the status heartbeat falls within it: the status interval when
// it is an hour or less, otherwise the MQTT keepalive, with the heartbeat
// too rare to wait for.
func IdleCycle(statusInterval, keepAlive time.Duration) (cycle time.Duration, heartbeat bool) {
	if statusInterval <= time.Hour || keepAlive <= 0 || keepAlive >= statusInterval {
		return statusInterval, true
	}
	return keepAlive, false
}

// benchTruck is the truck's id: 17 characters, the length of a VIN, so
// that topics and documents have a fleet's real sizes.
const benchTruck = "YS2R4X20005399401"

// benchModel is the model the truck runs.
const benchModel = "aps-failure"

// LinkPhase is one measured stretch of the run.
type LinkPhase struct {
	From, To time.Time
	// Wire is the estimate from the proxies' counts.
	Wire Wire
	// Captured is what tcpdump saw (with --tcpdump).
	Captured *Captured
}

// Duration is the phase's length.
func (p LinkPhase) Duration() time.Duration { return p.To.Sub(p.From) }

// LinkResult is the run of one transport.
type LinkResult struct {
	Transport string
	// Profile is the agent's link profile.
	Profile string
	// Setup is the agent's effective configuration (defaults applied).
	StatusInterval, KeepAlive, Probation time.Duration
	// Idle: the truck online with nothing to do.
	Idle LinkPhase
	// Update: from the approval of v2 until the truck committed it and its
	// link was quiet, with the whole life of the download connections.
	Update     LinkPhase
	UpdateTime time.Duration // approval to commit
	Artifact   int64         // bytes of the v2 bundle
	// Reconnects: from the link's return until the truck is connected and
	// its link quiet.
	Reconnects []LinkPhase
	// Alerts: AlertCount alerts forwarded one by one.
	Alerts     LinkPhase
	AlertCount int
	// Burst: BurstCount alerts made at once and forwarded in batches.
	Burst      LinkPhase
	BurstCount int
	// StatusBytes is the size of an idle truck's status document, Expected
	// the idle rate (bytes/s) the configured intervals predict.
	StatusBytes int
	Expected    float64
	// IdleSpan is the time the idle window's traffic stands for: the time
	// between the bursts it starts and ends after (whole cycles), or the
	// window itself.
	IdleSpan time.Duration
	// Cycle and HeartbeatInWindow are [IdleCycle]'s answer; Pings is the
	// number of keepalive bursts in a window of keepalive cycles.
	Cycle             time.Duration
	HeartbeatInWindow bool
	Pings             int
	// ReleaseBytes is the retained release document's size; ReleaseTTL the
	// publisher's release_ttl, which sets how often an unchanged release is
	// signed again (at two thirds of its life).
	ReleaseBytes int
	ReleaseTTL   time.Duration
	// FullHandshakes and Resumed are the agent's TLS handshakes with the
	// fleet broker over the whole run (mutual TLS only).
	FullHandshakes, Resumed int
	// Dropped is what the kernel dropped from the capture.
	Dropped int
}

// LinkReport is the outcome of `linkedge bench link`.
type LinkReport struct {
	Config  LinkConfig
	Results []LinkResult
	Elapsed time.Duration
}

// RunLink runs the link bench: for each transport, a fleet broker, a
// publisher and one truck agent whose MQTT connection and downloads pass
// through counting proxies, through setup, an update, the idle window,
// reconnects and forwarded alerts.
func RunLink(ctx context.Context, cfg LinkConfig) (*LinkReport, error) {
	cfg.setDefaults()
	for _, t := range cfg.Transports {
		if t != TransportTCP && t != TransportMTLS {
			return nil, fmt.Errorf("bench link: transport %q: want %s or %s", t, TransportTCP, TransportMTLS)
		}
	}
	start := time.Now()
	root := cfg.Dir
	if root == "" {
		d, err := os.MkdirTemp("", "linkedge-bench-link-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		root = d
	}
	fmt.Fprintf(cfg.Progress, "bench link: loading ONNX Runtime\n")
	if err := inference.Init(ctx, ""); err != nil {
		return nil, err
	}
	rep := &LinkReport{Config: cfg}
	for _, t := range cfg.Transports {
		res, err := runLinkTransport(ctx, cfg, t, filepath.Join(root, t))
		if err != nil {
			return nil, fmt.Errorf("bench link (%s): %w", t, err)
		}
		rep.Results = append(rep.Results, *res)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// linkRun is one transport's parts.
type linkRun struct {
	cfg       LinkConfig
	transport string
	dir       string
	t0        time.Time

	broker     *broker.Broker
	mqttP      *netsim.Proxy
	httpP      *netsim.Proxy
	mqttRec    *Recorder
	httpRec    *Recorder
	capture    *Capture
	pub        *publisher.Publisher
	pubCancel  context.CancelFunc
	pubDone    chan error
	reg        *localreg.Registry
	agent      *edgeclient.Agent
	agentCfg   edgeclient.Config
	local      paho.Client
	localPreds atomic.Int64
	// alertRows are the readings that made alerts in the alerts phase,
	// which the burst sends again.
	alertRows [][]byte
	// quietFor is how long the link must be silent for a phase to end: 1 s,
	// or less with a status interval so short that it never is.
	quietFor time.Duration
}

func (r *linkRun) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "[%s %5.1fs] %s\n", r.transport, time.Since(r.t0).Seconds(), fmt.Sprintf(format, args...))
}

func runLinkTransport(ctx context.Context, cfg LinkConfig, transport, dir string) (res *LinkResult, err error) {
	r := &linkRun{cfg: cfg, transport: transport, dir: dir, t0: time.Now()}
	defer func() {
		if cerr := r.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	res = &LinkResult{Transport: transport}
	eff := r.agentCfg.WithDefaults()
	res.StatusInterval, res.KeepAlive, res.Probation = eff.StatusInterval, eff.Fleet.KeepAlive, eff.Probation
	res.Profile = eff.Link.Profile
	res.Cycle, res.HeartbeatInWindow = IdleCycle(eff.StatusInterval, eff.Fleet.KeepAlive)
	res.ReleaseTTL = publisher.DefaultReleaseTTL
	r.quietFor = min(time.Second, eff.StatusInterval/3)

	// Setup, not measured: v1 installed, then the download connection it
	// left idle is dropped (net/http would close it after 90 s; a real
	// truck's next update comes long after that).
	r.logf("approving v1 (setup, not measured; probation %s)", eff.Probation)
	if err := r.install(ctx, 1); err != nil {
		return nil, err
	}
	r.httpP.Cut()
	r.httpP.Restore()
	if err := r.quiet(ctx); err != nil {
		return nil, err
	}

	// The update: v1 → v2.
	r.logf("update: approving v2")
	u0 := time.Now()
	if err := r.install(ctx, 2); err != nil {
		return nil, err
	}
	res.UpdateTime = time.Since(u0)
	if err := r.quiet(ctx); err != nil {
		return nil, err
	}
	res.Update = LinkPhase{From: u0, To: time.Now()}
	res.Artifact = int64(len(apsmodels.V2()))
	r.logf("update: committed %.1fs after approval", res.UpdateTime.Seconds())

	st := r.agent.Status()
	st.LastSeen = time.Now().UTC()
	doc, _ := json.Marshal(st)
	res.StatusBytes = len(doc)
	if pk, ok := r.broker.Server().Topics.Retained.Get(topics.ModelRelease(benchModel)); ok {
		res.ReleaseBytes = len(pk.Payload)
	}
	res.Expected = ExpectedIdle(len(doc), topics.TruckStatus(benchTruck), transport == TransportMTLS,
		eff.StatusInterval, eff.Fleet.KeepAlive, cfg.TruckTCPKeepAlive, cfg.CloudTCPKeepAlive)
	if err := r.idle(ctx, res); err != nil {
		return nil, err
	}

	// Reconnects.
	for k := range cfg.Reconnects {
		p, err := r.reconnect(ctx)
		if err != nil {
			return nil, fmt.Errorf("reconnect %d: %w", k+1, err)
		}
		res.Reconnects = append(res.Reconnects, p)
		r.logf("reconnect %d/%d: connected again %.1fs after the link returned", k+1, cfg.Reconnects, p.Duration().Seconds())
	}

	// Alerts.
	if res.Alerts, err = r.alerts(ctx); err != nil {
		return nil, err
	}
	res.AlertCount = cfg.Alerts
	if cfg.Burst > 0 {
		if res.Burst, err = r.burst(ctx, cfg.Burst); err != nil {
			return nil, err
		}
		res.BurstCount = cfg.Burst
	}
	res.FullHandshakes = int(agentCounter(r.agent, "linkedge_agent_fleet_tls_handshakes_total", "resumed", "false"))
	res.Resumed = int(agentCounter(r.agent, "linkedge_agent_fleet_tls_handshakes_total", "resumed", "true"))

	// The estimate and the capture.
	end := time.Now()
	var pkts []Packet
	if r.capture != nil {
		pkts, res.Dropped, err = r.capture.Stop()
		r.capture = nil
		if err != nil {
			return nil, err
		}
	}
	r.measure(res, end, pkts)
	return res, nil
}

// start brings up the broker, the proxies, the capture, the registry, the
// publisher and the truck.
func (r *linkRun) start(ctx context.Context) error {
	log := r.cfg.Logger
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return err
	}
	// Credentials as in production: a users file with a truck and a
	// publisher, so that CONNECT carries a username and password.
	truckPass, pubPass := randomSecret(), randomSecret()
	usersFile := filepath.Join(r.dir, "users.yaml")
	var users strings.Builder
	users.WriteString("users:\n")
	for _, u := range []struct{ name, pass, role string }{{benchTruck, truckPass, "truck"}, {"publisher", pubPass, "publisher"}} {
		h, err := broker.HashPassword(u.pass)
		if err != nil {
			return err
		}
		fmt.Fprintf(&users, "  - username: %s\n    password_hash: %q\n    role: %s\n", u.name, h, u.role)
	}
	if err := os.WriteFile(usersFile, []byte(users.String()), 0o600); err != nil {
		return err
	}
	bc := broker.Config{Listen: "127.0.0.1:0", HTTPListen: "", DataDir: filepath.Join(r.dir, "broker"), UsersFile: usersFile, Logger: log.With("part", "fleet-broker")}
	scheme := "tcp://"
	var truckTLS, pubTLS tlsconfig.Client
	if r.transport == TransportMTLS {
		pki, err := newFleetPKI(filepath.Join(r.dir, "tls"))
		if err != nil {
			return err
		}
		bc.TLSCert, bc.TLSKey, bc.TLSClientCA = pki.ServerCert, pki.ServerKey, pki.CA
		scheme = "ssl://"
		cert, key, err := pki.client(benchTruck)
		if err != nil {
			return err
		}
		truckTLS = tlsconfig.Client{CAFile: pki.CA, CertFile: cert, KeyFile: key}
		if cert, key, err = pki.client("publisher"); err != nil {
			return err
		}
		pubTLS = tlsconfig.Client{CAFile: pki.CA, CertFile: cert, KeyFile: key}
	}
	b, err := broker.New(bc)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	r.broker = b

	artAddr, err := freeAddr()
	if err != nil {
		return err
	}
	// The proxies stand in for the servers on the truck's link, so they
	// send the TCP keepalive probes the servers would (the capture sees
	// them): none from the broker, Go's default from the artifact server.
	if r.mqttP, err = netsim.New(b.Addr(), netsim.KeepAlive(cloudKeepAlive(r.cfg.CloudTCPKeepAlive))); err != nil {
		return err
	}
	if r.httpP, err = netsim.New(artAddr, netsim.KeepAlive(artifactServerTCPKeepAlive)); err != nil {
		return err
	}
	r.mqttRec, r.httpRec = Record(r.mqttP), Record(r.httpP)
	if r.cfg.Tcpdump {
		if r.capture, err = StartCapture(ctx, r.dir, portOf(r.mqttP.Addr()), portOf(r.httpP.Addr())); err != nil {
			return err
		}
		r.logf("tcpdump capturing on lo, ports %d (MQTT) and %d (HTTP)", portOf(r.mqttP.Addr()), portOf(r.httpP.Addr()))
	}

	pubKey, privKey := release.GenerateKey()
	keyFile := filepath.Join(r.dir, "publisher.key")
	if err := release.WritePrivateKeyFile(keyFile, privKey); err != nil {
		return err
	}
	if r.reg, err = localreg.Open(filepath.Join(r.dir, "registry")); err != nil {
		return err
	}
	for i, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		f := filepath.Join(r.dir, fmt.Sprintf("v%d.tar.gz", i+1))
		if err := os.WriteFile(f, data, 0o600); err != nil {
			return err
		}
		if _, err := r.reg.Add(ctx, f); err != nil {
			return err
		}
	}
	// The publisher reaches the broker directly; trucks download through
	// the HTTP proxy, which the base URL in the releases names.
	r.pub, err = publisher.New(publisher.Config{
		Broker: scheme + b.Addr(), Username: "publisher", Password: pubPass, TLS: pubTLS,
		RegistryDir: r.reg.Dir(), KeyFile: keyFile, ArtifactListen: artAddr, ArtifactBaseURL: "http://" + r.httpP.Addr(),
		PollInterval: r.cfg.PublisherPoll, Logger: log.With("part", "publisher"),
	})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.pubCancel, r.pubDone = cancel, make(chan error, 1)
	go func() { r.pubDone <- r.pub.Run(pctx) }()

	r.agentCfg = edgeclient.Config{
		Truck: benchTruck, Model: benchModel, DataDir: filepath.Join(r.dir, "truck"), Keys: []ed25519.PublicKey{pubKey},
		Fleet: edgeclient.FleetConfig{Broker: scheme + r.mqttP.Addr(), Username: benchTruck, Password: truckPass,
			KeepAlive: r.cfg.KeepAlive, TLS: truckTLS},
		HTTP: "127.0.0.1:0", LocalBroker: edgeclient.LocalBrokerConfig{Listen: "127.0.0.1:0"},
		Probation: r.cfg.Probation, StatusInterval: r.cfg.StatusInterval, Logger: log.With("part", "truck"),
		Link: edgeclient.LinkConfig{Profile: r.cfg.Profile},
	}
	if r.agent, err = edgeclient.New(r.agentCfg); err != nil {
		return err
	}
	if err := r.agent.Start(ctx); err != nil {
		return err
	}
	if err := waitUntil(ctx, time.Minute, "the truck to connect", func() bool { return r.agent.Status().Online }); err != nil {
		return err
	}
	r.logf("broker, publisher and truck %s up (%s)", benchTruck, map[string]string{TransportTCP: "plain TCP", TransportMTLS: "mutual TLS"}[r.transport])

	// The truck's own bus, for the alerts.
	o := paho.NewClientOptions().AddBroker("tcp://" + r.agent.LocalBrokerAddr()).SetClientID("bench-sensors").
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe(topics.LocalPredictions(benchModel), 0, func(paho.Client, paho.Message) { r.localPreds.Add(1) })
		})
	r.local = paho.NewClient(o)
	if t := r.local.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("local bus: %v", t.Error())
	}
	return nil
}

// close stops every part; the errors of parts already failing are joined.
func (r *linkRun) close() error {
	var errs []error
	if r.capture != nil {
		r.capture.Stop()
	}
	if r.local != nil {
		r.local.Disconnect(100)
	}
	if r.agent != nil {
		errs = append(errs, r.agent.Close())
	}
	if r.pubCancel != nil {
		r.pubCancel()
		if err := <-r.pubDone; err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
		errs = append(errs, r.pub.Close())
	}
	if r.broker != nil {
		errs = append(errs, r.broker.Close())
	}
	for _, p := range []*netsim.Proxy{r.mqttP, r.httpP} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	return errors.Join(errs...)
}

// install approves version and waits until the truck committed it.
func (r *linkRun) install(ctx context.Context, version int64) error {
	if _, err := r.reg.Approve(benchModel, version, "bench"); err != nil {
		return err
	}
	limit := r.agentCfg.WithDefaults().Probation + 2*time.Minute
	return waitUntil(ctx, limit, fmt.Sprintf("v%d committed", version), func() bool {
		st := r.agent.Status()
		return st.Version == version && st.Phase == "committed"
	})
}

// quiet waits until neither proxy has passed anything for quietFor (at
// most a minute: a link that is never quiet is a finding, not a failure).
func (r *linkRun) quiet(ctx context.Context) error {
	d := r.quietFor
	deadline := time.Now().Add(time.Minute)
	for {
		last := r.mqttRec.Last()
		if h := r.httpRec.Last(); h.After(last) {
			last = h
		}
		if time.Since(last) >= d || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// idle measures the idle window, in the steady state: it starts just after
// a burst of traffic (a heartbeat, or a keepalive ping), so that every
// silence in it is a whole cycle (the update's last reports leave an
// irregular one behind them).
func (r *linkRun) idle(ctx context.Context, res *LinkResult) error {
	what := "a status heartbeat"
	if !res.HeartbeatInWindow {
		what = "a keepalive ping"
	}
	if r.cfg.Idle > 0 {
		// A window of the caller's: from now, whatever it holds.
		if err := r.quiet(ctx); err != nil {
			return err
		}
		i0 := time.Now()
		r.logf("idle: %s (status every %s, MQTT keepalive %s)", r.cfg.Idle, res.StatusInterval, res.KeepAlive)
		if err := r.sleep(ctx, r.cfg.Idle, "idle"); err != nil {
			return err
		}
		res.Idle = LinkPhase{From: i0, To: time.Now()}
		res.IdleSpan = res.Idle.Duration()
		return nil
	}
	r.logf("idle: waiting for %s, to start the window in the steady state (status every %s, MQTT keepalive %s)",
		what, res.StatusInterval, res.KeepAlive)
	b0, err := r.afterTraffic(ctx, res.Cycle+time.Minute, what)
	if err != nil {
		return err
	}
	i0 := time.Now()
	switch {
	case res.HeartbeatInWindow:
		d := 2 * res.Cycle
		r.logf("idle: %s", d)
		if err := r.sleep(ctx, d, "idle"); err != nil {
			return err
		}
		res.Idle = LinkPhase{From: i0, To: time.Now()}
		res.IdleSpan = res.Idle.Duration()
	default:
		// Two keepalive cycles, burst to burst: paho checks every 5 s, so a
		// ping comes up to 5 s after the keepalive time.
		const cycles = 2
		r.logf("idle: %d keepalive cycles (about %s)", cycles, cycles*res.Cycle)
		last := b0
		for k := range cycles {
			if last, err = r.afterTraffic(ctx, res.Cycle+time.Minute, fmt.Sprintf("keepalive ping %d/%d", k+1, cycles)); err != nil {
				return err
			}
			r.logf("idle: ping %d/%d, %s after the window started", k+1, cycles, time.Since(i0).Round(time.Second))
		}
		res.Idle = LinkPhase{From: i0, To: time.Now()}
		res.IdleSpan, res.Pings = last.Sub(b0), cycles
	}
	return nil
}

// afterTraffic waits (at most limit) for the next burst on the MQTT
// connection and for the quiet after it, and returns the burst's last
// event's time.
func (r *linkRun) afterTraffic(ctx context.Context, limit time.Duration, what string) (time.Time, error) {
	since := r.mqttRec.Last()
	if err := waitUntil(ctx, limit, what, func() bool { return r.mqttRec.Last().After(since) }); err != nil {
		return time.Time{}, err
	}
	if err := r.quiet(ctx); err != nil {
		return time.Time{}, err
	}
	return r.mqttRec.Last(), nil
}

func (r *linkRun) sleep(ctx context.Context, d time.Duration, what string) error {
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		step := min(left, 30*time.Second)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(step):
		}
		if left > step {
			r.logf("%s: %s of %s", what, (d - time.Until(end)).Round(time.Second), d)
		}
	}
}

// reconnect cuts the truck's MQTT connection for a second and measures
// its return.
func (r *linkRun) reconnect(ctx context.Context) (LinkPhase, error) {
	r.mqttP.Cut()
	if err := waitUntil(ctx, 15*time.Second, "the truck to notice the cut", func() bool { return !r.agent.Status().Online }); err != nil {
		return LinkPhase{}, err
	}
	if err := r.sleepCtx(ctx, time.Second); err != nil {
		return LinkPhase{}, err
	}
	from := time.Now()
	r.mqttP.Restore()
	if err := waitUntil(ctx, 2*time.Minute, "the truck to reconnect", func() bool { return r.agent.Status().Online }); err != nil {
		return LinkPhase{}, err
	}
	if err := r.quiet(ctx); err != nil {
		return LinkPhase{}, err
	}
	return LinkPhase{From: from, To: time.Now()}, nil
}

func (r *linkRun) sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// alerts publishes readings of failing trucks on the truck's local bus
// until Alerts of them were alerts and were forwarded, one at a time.
func (r *linkRun) alerts(ctx context.Context) (LinkPhase, error) {
	rows := alertRows()
	n := r.cfg.Alerts
	r.logf("alerts: %d, one every %s or so", n, r.cfg.AlertGap)
	fwd0 := forwarded(r.agent)
	from := time.Now()
	count := 0
	for i := 0; count < n; i++ {
		if i >= 4*len(rows) && count == 0 {
			return LinkPhase{}, errors.New("alerts: no reading of a failing truck made an alert")
		}
		alerts0, preds0 := r.agent.Status().Alerts, r.localPreds.Load()
		r.local.Publish(topics.LocalReadings(benchModel), topics.LocalReadingsQoS, false, rows[i%len(rows)])
		if err := waitUntil(ctx, 10*time.Second, "a prediction on the local bus", func() bool { return r.localPreds.Load() > preds0 }); err != nil {
			return LinkPhase{}, err
		}
		if r.agent.Status().Alerts == alerts0 {
			continue // not an alert: it stays on the truck
		}
		r.alertRows = append(r.alertRows, rows[i%len(rows)])
		count++
		// An alert waits up to the profile's batch delay for company (a
		// minute on satellite) before it goes out.
		limit := r.agentCfg.WithDefaults().Forward.BatchDelay + 30*time.Second
		if err := waitUntil(ctx, limit, "the alert to be forwarded", func() bool { return forwarded(r.agent) >= fwd0+float64(count) }); err != nil {
			return LinkPhase{}, err
		}
		if count%max(n/4, 1) == 0 && count < n {
			r.logf("alerts: %d/%d forwarded", count, n)
		}
		if err := r.sleepCtx(ctx, r.cfg.AlertGap); err != nil {
			return LinkPhase{}, err
		}
	}
	if err := r.quiet(ctx); err != nil {
		return LinkPhase{}, err
	}
	r.logf("alerts: %d/%d forwarded", count, n)
	return LinkPhase{From: from, To: time.Now()}, nil
}

// burst publishes n readings that made alerts in [linkRun.alerts] on the
// truck's local bus as fast as the agent scores them (at most burstWindow
// unanswered), so the forwarder sends them in batches, and waits until all
// n were forwarded and the link is quiet.
func (r *linkRun) burst(ctx context.Context, n int) (LinkPhase, error) {
	if len(r.alertRows) == 0 {
		return LinkPhase{}, errors.New("alert burst: no reading made an alert")
	}
	const burstWindow = 64 // well under the agent's max_inflight
	r.logf("alert burst: %d alerts at once", n)
	fwd0, alerts0, preds0 := forwarded(r.agent), r.agent.Status().Alerts, r.localPreds.Load()
	from := time.Now()
	for i := range n {
		sent := int64(i)
		if err := waitUntil(ctx, 30*time.Second, "the agent to score the burst", func() bool { return r.localPreds.Load()-preds0 > sent-burstWindow }); err != nil {
			return LinkPhase{}, err
		}
		r.local.Publish(topics.LocalReadings(benchModel), topics.LocalReadingsQoS, false, r.alertRows[i%len(r.alertRows)])
	}
	if err := waitUntil(ctx, 60*time.Second, "the burst's predictions", func() bool { return r.localPreds.Load()-preds0 >= int64(n) }); err != nil {
		return LinkPhase{}, err
	}
	if got := r.agent.Status().Alerts - alerts0; got != int64(n) {
		return LinkPhase{}, fmt.Errorf("alert burst: %d of %d readings made alerts", got, n)
	}
	limit := r.agentCfg.WithDefaults().Forward.BatchDelay + 60*time.Second
	if err := waitUntil(ctx, limit, "the burst to be forwarded", func() bool { return forwarded(r.agent) >= fwd0+float64(n) }); err != nil {
		return LinkPhase{}, err
	}
	if err := r.quiet(ctx); err != nil {
		return LinkPhase{}, err
	}
	r.logf("alert burst: %d/%d forwarded", n, n)
	return LinkPhase{From: from, To: time.Now()}, nil
}

// alertRows are readings (JSON, as sensors send them) of synthetic trucks
// whose APS is failing; the model flags most of them.
func alertRows() [][]byte {
	ds := aps.Generate(11, 200, 1)
	out := make([][]byte, 0, len(ds.X))
	for i, x := range ds.X {
		feats := make([]*float64, len(x))
		for j, v := range x {
			if v == v {
				f := float64(v)
				feats[j] = &f
			}
		}
		b, _ := json.Marshal(map[string]any{"id": strconv.Itoa(i), "features": feats})
		out = append(out, b)
	}
	return out
}

// agentCounter reads one of the agent's counters: the series whose label
// has value, or with label "" the first series.
func agentCounter(a *edgeclient.Agent, name, label, value string) float64 {
	mfs, err := a.Registry().Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// forwarded reads the agent's linkedge_agent_forwarded_total.
func forwarded(a *edgeclient.Agent) float64 {
	return agentCounter(a, "linkedge_agent_forwarded_total", "", "")
}

// measure fills each phase's estimate and capture. The MQTT connection
// counts what happened within a phase; download connections count whole,
// with the phase they were opened in.
func (r *linkRun) measure(res *LinkResult, end time.Time, pkts []Packet) {
	mqttModel := DefaultWireModel()
	mqttModel.ClientKeepAlive, mqttModel.ServerKeepAlive = r.cfg.TruckTCPKeepAlive, r.cfg.CloudTCPKeepAlive
	httpModel := mqttModel
	httpModel.ClientKeepAlive, httpModel.ServerKeepAlive = 0, artifactServerTCPKeepAlive
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		httpModel.IdleClose = t.IdleConnTimeout
	}
	mqttLogs, httpLogs := r.mqttRec.Logs(), r.httpRec.Logs()
	mqttPort := map[uint16]bool{uint16(portOf(r.mqttP.Addr())): true}
	httpPort := map[uint16]bool{uint16(portOf(r.httpP.Addr())): true}
	fill := func(p *LinkPhase) {
		win := Selection{From: p.From, To: p.To}
		whole := Selection{From: p.From, To: p.To, Whole: true}
		p.Wire = mqttModel.Estimate(mqttLogs, win, end)
		p.Wire.Add(httpModel.Estimate(httpLogs, whole, end))
		if pkts != nil {
			c := mqttModel.Captured(pkts, mqttPort, win)
			c.Add(httpModel.Captured(pkts, httpPort, whole))
			p.Captured = &c
		}
	}
	fill(&res.Idle)
	fill(&res.Update)
	for i := range res.Reconnects {
		fill(&res.Reconnects[i])
	}
	fill(&res.Alerts)
	if res.BurstCount > 0 {
		fill(&res.Burst)
	}
}

// cloudKeepAlive is the proxy setting for a modelled keepalive (0: none).
func cloudKeepAlive(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// IdleRate is the idle truck's bytes per second, estimated, over the idle
// window's span.
func (r LinkResult) IdleRate() float64 {
	return float64(r.Idle.Wire.Total()) / r.span().Seconds()
}

func (r LinkResult) span() time.Duration {
	if r.IdleSpan > 0 {
		return r.IdleSpan
	}
	return r.Idle.Duration()
}

// MonthlyDocuments is what an idle month adds to the idle window's rate,
// in IP bytes, from the measured sizes of the documents and the packet
// model of [ExpectedIdle]: the heartbeats, when the window holds none,
// and the release signed again (with the status report its new serial
// causes) every two thirds of release_ttl.
func (r LinkResult) MonthlyDocuments() (heartbeats, renewals float64) {
	tls := r.Transport == TransportMTLS
	status := documentBytes(r.StatusBytes, topics.TruckStatus(benchTruck), tls)
	if !r.HeartbeatInWindow && r.StatusInterval > 0 {
		heartbeats = Month.Seconds() / r.StatusInterval.Seconds() * status
	}
	if r.ReleaseTTL > 0 && r.ReleaseBytes > 0 {
		every := r.ReleaseTTL * 2 / 3
		renewals = Month.Seconds() / every.Seconds() * (documentBytes(r.ReleaseBytes, topics.ModelRelease(benchModel), tls) + status)
	}
	return heartbeats, renewals
}

// lessIdle is a phase's bytes less the idle traffic its window would have
// carried anyway (the idle rate times its length).
func lessIdle(total int64, rate float64, d time.Duration) float64 {
	return float64(total) - rate*d.Seconds()
}

// Figures are the headline numbers of one transport, from the estimate or
// from the capture.
type Figures struct {
	IdleMonth    float64 // bytes per 30 days
	UpdateBeyond float64 // bytes of an update beyond the artifact
	// UpdateControl is UpdateBeyond less the artifact's own TCP/IP
	// framing (ArtifactFraming): the release, the reports, the HTTP
	// request and the connection's handshakes.
	UpdateControl  float64
	Reconnect      float64 // median bytes per reconnect
	ReconnectRange [2]float64
	Per1000Alerts  float64
	// Per1000Burst is 1,000 alerts made in one burst.
	Per1000Burst float64
}

// Estimated are the figures from the proxies' counts.
func (r LinkResult) Estimated() Figures {
	return r.figures(func(p LinkPhase) int64 { return p.Wire.Total() })
}

// CapturedFigures are the figures from the capture; ok is false without one.
func (r LinkResult) CapturedFigures() (Figures, bool) {
	if r.Idle.Captured == nil {
		return Figures{}, false
	}
	return r.figures(func(p LinkPhase) int64 { return p.Captured.Total() }), true
}

func (r LinkResult) figures(total func(LinkPhase) int64) Figures {
	rate := float64(total(r.Idle)) / r.span().Seconds()
	hb, renew := r.MonthlyDocuments()
	f := Figures{IdleMonth: rate*Month.Seconds() + hb + renew}
	f.UpdateBeyond = lessIdle(total(r.Update), rate, r.Update.Duration()) - float64(r.Artifact)
	f.UpdateControl = f.UpdateBeyond - float64(ArtifactFraming(r.Artifact))
	var rc []float64
	for _, p := range r.Reconnects {
		rc = append(rc, lessIdle(total(p), rate, p.Duration()))
	}
	if len(rc) > 0 {
		slices.Sort(rc)
		f.Reconnect = rc[len(rc)/2]
		if len(rc)%2 == 0 {
			f.Reconnect = (rc[len(rc)/2-1] + rc[len(rc)/2]) / 2
		}
		f.ReconnectRange = [2]float64{rc[0], rc[len(rc)-1]}
	}
	if r.AlertCount > 0 {
		f.Per1000Alerts = lessIdle(total(r.Alerts), rate, r.Alerts.Duration()) / float64(r.AlertCount) * 1000
	}
	if r.BurstCount > 0 {
		f.Per1000Burst = lessIdle(total(r.Burst), rate, r.Burst.Duration()) / float64(r.BurstCount) * 1000
	}
	return f
}

// ArtifactFraming is the TCP/IP framing that n bytes of a download need
// on a 1500-byte-MTU link whatever the protocol around them: a 52-byte
// header on each full segment, and a pure ACK (52 bytes) for every second
// one. It grows with the artifact (about 5.4 % of it), so it is reported
// apart from the update's control traffic.
func ArtifactFraming(n int64) int64 {
	const hdr = 52
	segs := (n + netsim.SegmentPayload - 1) / netsim.SegmentPayload
	return segs*hdr + (segs+1)/2*hdr
}

// ExpectedIdle is the idle rate (bytes/s) that the configured intervals
// predict, for a status document of statusBytes on topic: every
// statusInterval a status PUBLISH (QoS 1), its PUBACK and the truck's
// delayed ACK of that; an MQTT PINGREQ/PINGRESP (and ACK) whenever
// keepAlive passes without traffic; and in every silence, each side's TCP
// keepalive probes (each answered by an ACK). With TLS, every MQTT packet
// is one TLS 1.3 record, 22 bytes more.
func ExpectedIdle(statusBytes int, topic string, tls bool, statusInterval, keepAlive, truckTCP, cloudTCP time.Duration) float64 {
	const hdr = 52
	rec := 0
	if tls {
		rec = 22
	}
	perStatus := documentBytes(statusBytes, topic, tls)
	pings := 0
	if keepAlive > 0 && keepAlive < statusInterval {
		pings = int(math.Ceil(float64(statusInterval)/float64(keepAlive))) - 1
	}
	perPing := float64((2 + rec + hdr) + (2 + rec + hdr) + hdr)
	gap := statusInterval / time.Duration(1+pings)
	probes := 0
	for _, ka := range []time.Duration{truckTCP, cloudTCP} {
		if ka > 0 {
			probes += int(math.Ceil(float64(gap)/float64(ka))) - 1
		}
	}
	perGap := float64(probes * 2 * hdr)
	return (perStatus + float64(pings)*perPing + float64(1+pings)*perGap) / statusInterval.Seconds()
}

// documentBytes is the IP bytes of one QoS 1 PUBLISH of a document of n
// bytes on topic: the PUBLISH, its PUBACK and the delayed ACK of that,
// each in one segment (and one TLS 1.3 record with tls).
func documentBytes(n int, topic string, tls bool) float64 {
	const hdr = 52
	rec := 0
	if tls {
		rec = 22
	}
	rem := 2 + len(topic) + 2 + n
	publish := 1 + varintLen(rem) + rem
	return float64((publish + rec + hdr) + (4 + rec + hdr) + hdr)
}

func varintLen(n int) int {
	l := 1
	for n >= 128 {
		n /= 128
		l++
	}
	return l
}

func waitUntil(ctx context.Context, limit time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s", limit, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
	return nil
}

func portOf(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	p, _ := strconv.Atoi(addr[i+1:])
	return p
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
