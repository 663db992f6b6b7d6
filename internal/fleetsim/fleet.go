// Package fleetsim puts a whole LinkEdge fleet on one machine, from real
// parts: the fleet broker, a local registry with its publisher, and trucks
// whose agents reach the fleet broker through a link that can be cut
// (netsim), each with its own local broker, sensors replaying APS-shaped
// rows over MQTT and an application querying the HTTP endpoint. `linkedge
// demo` and the end-to-end tests both drive it.
package fleetsim

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// Options shape a simulated fleet. Zero values take the defaults.
type Options struct {
	// Dir holds every part's state. Required.
	Dir string
	// Trucks is the fleet size. Default 3; -1 starts the cloud side only.
	Trucks int
	// FleetBroker is an external broker URL (e.g. mosquitto's); empty runs
	// the embedded one.
	FleetBroker string
	// Probation of each agent. Default 2s.
	Probation time.Duration
	// SensorInterval is the time between readings of one truck. Default 20ms.
	SensorInterval time.Duration
	// HTTPClients per truck that query /invocations without pause, so a
	// failed request during a switch would be seen. Default 2.
	HTTPClients int
	// LinkRate limits each truck's link to the fleet, bytes/s (0: none).
	LinkRate int
	// PollInterval of the publisher. Default 200ms.
	PollInterval time.Duration
	// Rollout is the publisher's staged rollout policy; nil announces every
	// new version to every truck at once.
	Rollout *publisher.RolloutConfig
	// TLS runs the embedded fleet broker on TLS with client certificates
	// required (mutual TLS), and gives the publisher and every truck its
	// own certificate. Nil: plain TCP.
	TLS *TLSFiles
	// Profile runs the embedded fleet broker with a managed broker's
	// limits (broker.ProfileAWSIoTCore), and the trucks as that service
	// needs them: each connects under its thing name, its truck id.
	// Default none.
	Profile broker.Profile
	// SessionExpiry of the embedded fleet broker; default the broker's
	// (the profile's, with one).
	SessionExpiry time.Duration
	// Logger receives the parts' logs. Default: discarded.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Trucks == 0 {
		o.Trucks = 3
	}
	if o.Probation <= 0 {
		o.Probation = 2 * time.Second
	}
	if o.SensorInterval <= 0 {
		o.SensorInterval = 20 * time.Millisecond
	}
	if o.HTTPClients < 0 {
		o.HTTPClients = 0
	} else if o.HTTPClients == 0 {
		o.HTTPClients = 2
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// TLSFiles are the PEM files of a fleet that speaks mutual TLS.
type TLSFiles struct {
	// CA signs the broker's certificate and the clients'.
	CA                    string
	ServerCert, ServerKey string
	// ClientCert returns the certificate and key of a client: "publisher",
	// or a truck id.
	ClientCert func(name string) (cert, key string)
}

func (o *Options) clientTLS(name string) tlsconfig.Client {
	if o.TLS == nil {
		return tlsconfig.Client{}
	}
	cert, key := o.TLS.ClientCert(name)
	return tlsconfig.Client{CAFile: o.TLS.CA, CertFile: cert, KeyFile: key}
}

// Fleet is a running simulated fleet.
type Fleet struct {
	opts      Options
	Broker    *broker.Broker // nil with an external broker
	BrokerURL string
	Registry  *localreg.Registry
	Publisher *publisher.Publisher
	Trucks    []*Truck
	PubKey    ed25519.PublicKey
	keyFile   string

	pubCancel context.CancelFunc
	pubDone   chan error
	fwd       *forwardProxy
}

// Start brings the fleet up: broker, keys, registry, publisher, trucks.
func Start(ctx context.Context, opts Options) (f *Fleet, err error) {
	opts.setDefaults()
	if opts.Dir == "" {
		return nil, errors.New("fleetsim: Dir is required")
	}
	f = &Fleet{opts: opts}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := inference.Init(ctx, ""); err != nil {
		return nil, err
	}
	f.BrokerURL = opts.FleetBroker
	if f.BrokerURL == "" {
		bc := broker.Config{Listen: "127.0.0.1:0", HTTPListen: "", DataDir: filepath.Join(opts.Dir, "fleet-broker"), Logger: opts.Logger.With("part", "fleet-broker"),
			Profile: opts.Profile, SessionExpiry: opts.SessionExpiry}
		scheme := "tcp://"
		if t := opts.TLS; t != nil {
			bc.TLSCert, bc.TLSKey, bc.TLSClientCA = t.ServerCert, t.ServerKey, t.CA
			scheme = "ssl://"
		}
		b, err := broker.New(bc)
		if err != nil {
			return nil, err
		}
		if err := b.Start(ctx); err != nil {
			return nil, err
		}
		f.Broker, f.BrokerURL = b, scheme+b.Addr()
	}
	pub, priv := release.GenerateKey()
	f.PubKey = pub
	f.keyFile = filepath.Join(opts.Dir, "keys", "publisher.key")
	if err := os.MkdirAll(filepath.Dir(f.keyFile), 0o700); err != nil {
		return nil, err
	}
	if err := release.WritePrivateKeyFile(f.keyFile, priv); err != nil {
		return nil, err
	}
	if f.fwd, err = startForwardProxy(); err != nil {
		return nil, err
	}
	if f.Registry, err = localreg.Open(filepath.Join(opts.Dir, "registry")); err != nil {
		return nil, err
	}
	if err := f.StartPublisher(ctx); err != nil {
		return nil, err
	}
	for i := 1; i <= opts.Trucks; i++ {
		t, err := f.startTruck(ctx, fmt.Sprintf("truck-%d", i))
		if err != nil {
			return nil, err
		}
		f.Trucks = append(f.Trucks, t)
	}
	return f, nil
}

// StartPublisher starts (or restarts) the publisher service.
func (f *Fleet) StartPublisher(ctx context.Context) error {
	p, err := publisher.New(publisher.Config{
		Broker: f.BrokerURL, RegistryDir: f.Registry.Dir(), KeyFile: f.keyFile,
		PollInterval: f.opts.PollInterval, ArtifactListen: "127.0.0.1:0", Logger: f.opts.Logger.With("part", "publisher"),
		Rollout: f.opts.Rollout, TLS: f.opts.clientTLS("publisher"),
	})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.Publisher, f.pubCancel, f.pubDone = p, cancel, make(chan error, 1)
	go func() { f.pubDone <- p.Run(runCtx) }()
	return nil
}

// StopPublisher stops the publisher service and waits for it.
func (f *Fleet) StopPublisher() error {
	if f.pubCancel == nil {
		return nil
	}
	f.pubCancel()
	err := <-f.pubDone
	f.Publisher.Close()
	f.pubCancel = nil
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// SetArtifactFault puts fault in front of every truck's downloads: it sees
// each request first and answers it by returning true (a 404, a captive
// portal's page, corrupted bytes). Nil removes it.
func (f *Fleet) SetArtifactFault(fault func(http.ResponseWriter, *http.Request) bool) {
	if fault == nil {
		f.fwd.fault.Store(nil)
		return
	}
	f.fwd.fault.Store(&fault)
}

// KeyFile is the publisher's private key; its public half is PubKey.
func (f *Fleet) KeyFile() string { return f.keyFile }

// Register adds a bundle to the registry (pending) and returns its version.
func (f *Fleet) Register(ctx context.Context, bundle []byte) (localreg.Entry, error) {
	tmp, err := os.CreateTemp(f.opts.Dir, "bundle-*.tar.gz")
	if err != nil {
		return localreg.Entry{}, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(bundle); err != nil {
		tmp.Close()
		return localreg.Entry{}, err
	}
	tmp.Close()
	return f.Registry.Add(ctx, tmp.Name())
}

// Close stops every part, trucks first.
func (f *Fleet) Close() error {
	var errs []error
	for _, t := range f.Trucks {
		errs = append(errs, t.Close())
	}
	errs = append(errs, f.StopPublisher())
	if f.Broker != nil {
		errs = append(errs, f.Broker.Close())
	}
	if f.fwd != nil {
		errs = append(errs, f.fwd.Close())
	}
	return errors.Join(errs...)
}

// Truck is one simulated truck.
type Truck struct {
	ID    string
	Agent *edgeclient.Agent
	// Link is the truck's connection to the fleet broker and to artifact
	// downloads; Cut it to take the truck offline.
	Link *Link
	Load *Load

	cfg edgeclient.Config
	mu  sync.Mutex // guards Agent against the load's goroutines during a restart
}

// agent returns the current agent; the load's goroutines use it, since a
// restart replaces Agent while they run.
func (t *Truck) agent() *edgeclient.Agent {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.Agent
}

func (f *Fleet) startTruck(ctx context.Context, id string) (*Truck, error) {
	scheme, target, _ := strings.Cut(f.BrokerURL, "://")
	link, err := newLink(target, f.fwd.Addr())
	if err != nil {
		return nil, err
	}
	if f.opts.LinkRate > 0 {
		link.SetRate(f.opts.LinkRate)
	}
	t := &Truck{ID: id, Link: link, cfg: edgeclient.Config{
		Truck: id, Model: "aps-failure", DataDir: filepath.Join(f.opts.Dir, id),
		Keys: []ed25519.PublicKey{f.PubKey}, Fleet: edgeclient.FleetConfig{Broker: scheme + "://" + link.mqtt.Addr(), HTTPProxy: "http://" + link.http.Addr(),
			KeepAlive: 5 * time.Second, MaxReconnectInterval: time.Second, TLS: f.opts.clientTLS(id)},
		HTTP: "127.0.0.1:0", LocalBroker: edgeclient.LocalBrokerConfig{Listen: "127.0.0.1:0"},
		Probation: f.opts.Probation, StatusInterval: 5 * time.Second, Logger: f.opts.Logger.With("part", id),
		RetryMin: 200 * time.Millisecond, RetryMax: 2 * time.Second, ShutdownTimeout: 10 * time.Second,
		Forward: edgeclient.ForwardConfig{BatchDelay: 200 * time.Millisecond},
	}}
	if f.opts.Profile == broker.ProfileAWSIoTCore {
		t.cfg.Fleet.ClientID = id // the thing name
	}
	if err := t.startAgent(ctx); err != nil {
		link.Close()
		return nil, err
	}
	t.Load = startLoad(t, f.opts)
	return t, nil
}

func (t *Truck) startAgent(ctx context.Context) error {
	a, err := edgeclient.New(t.cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	t.mu.Lock()
	t.Agent = a
	t.mu.Unlock()
	// Later starts reuse the same ports, so the sensors and the application
	// reconnect to the same addresses, as on a real truck.
	t.cfg.HTTP, t.cfg.LocalBroker.Listen = a.HTTPAddr(), a.LocalBrokerAddr()
	return nil
}

// Restart stops the agent and starts it again on the same state and ports.
func (t *Truck) Restart(ctx context.Context) error {
	t.Agent.Close()
	return t.startAgent(ctx)
}

// Version is the model version the truck serves now (0: none).
func (t *Truck) Version() int64 { return t.agent().Status().Version }

// Close stops the truck's load, agent and link.
func (t *Truck) Close() error {
	if t.Load != nil {
		t.Load.Stop()
	}
	if t.Agent != nil {
		t.Agent.Close()
	}
	return t.Link.Close()
}

// WaitFor polls cond every 50ms until it holds or ctx ends.
func WaitFor(ctx context.Context, what string, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// WaitVersion waits until every truck given serves version and has
// finished its update (phase committed or idle).
func WaitVersion(ctx context.Context, version int64, trucks ...*Truck) error {
	return WaitFor(ctx, fmt.Sprintf("v%d on %d trucks", version, len(trucks)), func() bool {
		for _, t := range trucks {
			st := t.agent().Status()
			if st.Version != version || (st.Phase != "committed" && st.Phase != "idle") {
				return false
			}
		}
		return true
	})
}
