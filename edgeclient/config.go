package edgeclient

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/linkedge/linkedge/edgeclient/hold"
	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/internal/config"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/topics"
)

// Config is the truck agent's configuration (truck.yaml). Zero values take
// the defaults documented on each field.
type Config struct {
	// Truck is this truck's id: 1-64 of [A-Za-z0-9._-]. Required.
	Truck string `yaml:"truck"`
	// Groups the truck belongs to; a release's canary may target them.
	Groups []string `yaml:"groups"`
	// Model is the model this agent keeps current and serves. Required.
	Model string `yaml:"model"`
	// DataDir holds the agent's state and downloaded bundles. Default
	// /var/lib/linkedge.
	DataDir string `yaml:"data_dir"`
	// TrustedKeys are the publisher public key files (PEM) whose signatures
	// the truck accepts. At least one is required: an unsigned or
	// unknown-key release is refused.
	TrustedKeys []string `yaml:"trusted_keys"`
	// Fleet is the connection to the fleet broker.
	Fleet FleetConfig `yaml:"fleet"`
	// HTTP is the stable local inference address. Default 127.0.0.1:8080;
	// "off" serves no HTTP endpoint (a truck whose applications use the
	// local bus alone).
	HTTP string `yaml:"http"`
	// LocalBroker is the truck's own MQTT bus.
	LocalBroker LocalBrokerConfig `yaml:"local_broker"`
	// Inference tunes the model runtime and the micro-batcher.
	Inference InferenceConfig `yaml:"inference"`
	// Containers lets releases whose runtime is "container" run as
	// containers on the local Docker Engine.
	Containers ContainersConfig `yaml:"containers"`
	// Forward sends predictions made on the local bus to the fleet broker
	// through a queue on disk, so that none is lost to a dead link or a
	// restart. By default the alerts (positive class) go.
	Forward ForwardConfig `yaml:"forward"`
	// Probation is how long a new version serves before it is committed;
	// a failed request or health check in that time rolls back. Default 10s.
	Probation time.Duration `yaml:"probation"`
	// StatusInterval is the heartbeat: how often the truck republishes its
	// status while online when nothing changed (its prediction counters
	// ride along). Changes are published when they happen, phases that
	// follow each other within a second as one. Default: the link
	// profile's (24h on cellular). Whether a truck is online is the
	// broker's to say (its last will), not the heartbeat's.
	StatusInterval time.Duration `yaml:"status_interval"`
	// Link chooses defaults for the link the truck's data travels on; see
	// LinkConfig.
	Link LinkConfig `yaml:"link"`
	// MaxClockSkew tolerated when checking a release's validity. Default 5m.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// RetryMin and RetryMax bound the jittered exponential backoff between
	// tries of an update that failed for a reason that may pass (a 404, a
	// captive portal, a corrupted download). Defaults 5s and 15m; a new
	// release or a reconnect tries again at once.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// MaxURLFailures is how many downloads from one artifact URL may end
	// on the source's bad answer (an HTTP error status, a wrong size or
	// sha256, a refused redirect) before the URL counts as dead and is
	// tried only every DeadURLRetry; connection errors never count. A
	// newer release or pin naming the artifact at another URL is tried at
	// once. Defaults 8 and 6h.
	MaxURLFailures int           `yaml:"max_url_failures"`
	DeadURLRetry   time.Duration `yaml:"dead_url_retry"`
	// Hold is the safety hold: maintenance windows, and the bound on an
	// application's hold (see package hold). Default: no windows, holds
	// of at most 12h.
	Hold hold.Config `yaml:"hold"`
	// ShutdownTimeout bounds Close: past it the agent abandons what has
	// not stopped and says what that was. Default 15s, well inside
	// systemd's default 90 s stop timeout.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Logger defaults to slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Keys, when set, are used instead of reading TrustedKeys (for
	// embedding the agent, as the demo does).
	Keys []ed25519.PublicKey `yaml:"-"`
	// Runtime, when set, runs every version in place of the in-process
	// ONNX runtime and containers, and the agent does not load ONNX
	// Runtime: simulated trucks (`linkedge bench fleet`) run the real fleet
	// side with a runtime that loads nothing.
	Runtime runtime.Runtime `yaml:"-"`
}

// FleetConfig is the fleet broker connection.
type FleetConfig struct {
	// Broker URL, e.g. tcp://fleet.example.com:1883 or ssl://…:8883. Required.
	Broker   string `yaml:"broker"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// ClientID is the MQTT client id of the truck's persistent session.
	// Default linkedge-truck-{truck}, which LinkEdge's own broker requires
	// of a truck. On AWS IoT Core (and `linkedge broker --profile
	// aws-iot-core`) a truck connects under its thing name, its truck id:
	// set it to that. Changing it starts a new session on the broker. At
	// most 128 bytes.
	ClientID string `yaml:"client_id"`
	// KeepAlive is the MQTT keep-alive. Default: the link profile's (10m
	// on cellular). The broker declares the truck offline (its last will)
	// within 1.5× this of the link dying, and the truck notices a dead link
	// within about this long when it has nothing to send; each keep-alive
	// costs a PINGREQ and a PINGRESP on the link. TCP keepalive probes are
	// off on this connection: they would cost more than the MQTT ones and
	// find nothing they do not.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// MaxReconnectInterval bounds the reconnect backoff. Default 30s.
	MaxReconnectInterval time.Duration `yaml:"max_reconnect_interval"`
	// ReconnectJitter spreads reconnects after a lost connection: each
	// attempt waits a random time up to this long first. When a broker
	// restarts, every truck loses it at the same moment; without the
	// jitter they would all come back in the same second. Default 5s;
	// negative turns it off.
	ReconnectJitter time.Duration `yaml:"reconnect_jitter"`
	// HTTPProxy, e.g. http://proxy.depot:3128, carries artifact downloads;
	// empty takes HTTPS_PROXY/HTTP_PROXY from the environment.
	HTTPProxy string `yaml:"http_proxy"`
	// TLS applies to the broker connection (ssl:// or wss://) and to HTTPS
	// artifact downloads: a private fleet CA to trust besides the system
	// roots, and the truck's certificate for a broker that requires mutual
	// TLS. Default: system roots, no certificate.
	TLS tlsconfig.Client `yaml:"tls"`
}

// LinkConfig names the kind of link the truck is on. The profile sets the
// defaults of the settings that cost bytes on it; a setting given
// explicitly (fleet.keep_alive, status_interval, forward.batch_delay,
// link.post_quantum) wins.
type LinkConfig struct {
	// Profile is cellular (default), wifi or satellite: see Profiles.
	Profile string `yaml:"profile"`
	// PostQuantum offers the hybrid post-quantum key exchange
	// (X25519MLKEM768) on TLS connections to the fleet broker. It adds
	// about 1.2 KB to the ClientHello and 1.1 KB to the ServerHello of
	// every full handshake. Default: the profile's (off on cellular and
	// satellite, on on wifi).
	PostQuantum *bool `yaml:"post_quantum"`
}

// Profile is the set of defaults one kind of link gets.
type Profile struct {
	KeepAlive      time.Duration
	StatusInterval time.Duration
	// BatchDelay is how long forwarded predictions may wait to share one
	// message.
	BatchDelay  time.Duration
	PostQuantum bool
}

// Profiles are the link profiles. docs/agent.md gives each one's measured
// monthly cost (linkedge bench link).
var Profiles = map[string]Profile{
	// Billed per byte: pay little to stay connected, accept that the fleet
	// hears of a dead truck within 15 minutes.
	"cellular": {KeepAlive: 10 * time.Minute, StatusInterval: 24 * time.Hour, BatchDelay: 5 * time.Second},
	// Paid for by the depot: notice things within a minute or two.
	"wifi": {KeepAlive: time.Minute, StatusInterval: 5 * time.Minute, BatchDelay: time.Second, PostQuantum: true},
	// Expensive and slow: the longest keep-alive AWS IoT Core accepts.
	"satellite": {KeepAlive: 20 * time.Minute, StatusInterval: 24 * time.Hour, BatchDelay: time.Minute},
}

// ForwardConfig chooses the predictions forwarded to
// linkedge/v1/trucks/{truck}/predictions/{model}.
type ForwardConfig struct {
	// Alerts forwards predictions of the positive class (an APS failure
	// ahead). Default true; false turns them off.
	Alerts *bool `yaml:"alerts"`
	// All forwards every prediction, not only alerts. Default false.
	All bool `yaml:"all"`
	// MaxQueued bounds the queue kept while the link is down; when it is
	// full the oldest prediction is dropped. Default 10000.
	MaxQueued int `yaml:"max_queued"`
	// MaxBatch is how many predictions one message to the fleet carries
	// at most. Default 100; 1 sends each alone.
	MaxBatch int `yaml:"max_batch"`
	// BatchDelay is how long a prediction may wait for others to share its
	// message. Default: the link profile's (5s on cellular).
	BatchDelay time.Duration `yaml:"batch_delay"`
}

// alerts reports whether alerts are forwarded.
func (f ForwardConfig) alerts() bool { return f.Alerts == nil || *f.Alerts }

// LocalBrokerConfig is the truck-local MQTT bus.
type LocalBrokerConfig struct {
	// Listen runs an embedded broker on this address. Default
	// 127.0.0.1:1883. Set "off" to use External instead, or, with no
	// External, to run without a local bus (applications use HTTP).
	Listen string `yaml:"listen"`
	// External is the URL of a local broker that already runs on the truck
	// (used when Listen is "off").
	External string `yaml:"external"`
	// DataDir persists the embedded broker; empty keeps it in memory.
	DataDir string `yaml:"data_dir"`
	// Users is a users file for the embedded broker, in the fleet broker's
	// format with the roles sensor and app (see docs/broker.md): every
	// client must then log in, and may do only what its role allows.
	// Default empty: anonymous clients may do anything on the bus, which
	// is then only as safe as its listen address (loopback by default)
	// and the software on the truck. The agent's own clients log in with
	// a password made at each start, which no file holds.
	Users string `yaml:"users"`
	// Username and Password log the agent's own clients in to External.
	// That user must be allowed to read readings and holds and to write
	// predictions and errors.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// ContainersConfig enables the container runtime.
type ContainersConfig struct {
	// Enabled runs container releases; off, the truck refuses them and
	// stays on its version. Default off.
	Enabled bool `yaml:"enabled"`
	// ReadyTimeout bounds the wait for a new container's /ping. Default 60s.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
	// SuperviseInterval is how often the serving container is checked
	// (running, answering /ping). A dead one is restarted; one that will
	// not come back is replaced by the previous version or by the same
	// bundle in process. Default 5s.
	SuperviseInterval time.Duration `yaml:"supervise_interval"`
}

// InferenceConfig tunes serving.
type InferenceConfig struct {
	Threads int                   `yaml:"threads"`
	Batch   inference.BatchConfig `yaml:"batch"`
	// ONNXRuntime is the path of the ONNX Runtime shared library, installed
	// with the agent. Default: $LINKEDGE_ONNXRUNTIME, else where
	// `linkedge setup` puts it. The agent never fetches it: serving must
	// not wait for a network, so a missing library fails the start at once.
	ONNXRuntime string `yaml:"onnxruntime"`
	// MaxModelBytes bounds a bundle's model.onnx, which is unpacked into
	// memory to load it; a larger one fails the update for good (it is
	// checked from the archive's header, before anything is read).
	// Default 1 GiB.
	MaxModelBytes int64 `yaml:"max_model_bytes"`
}

// LoadConfig reads truck.yaml strictly: an unknown key is an error, so a
// typo cannot silently leave a setting at its default.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read agent config: %w", err)
	}
	var c Config
	if err := config.DecodeYAML(data, &c); err != nil {
		return Config{}, fmt.Errorf("agent config %s: %w", path, err)
	}
	return c, nil
}

// WithDefaults returns c with every zero field that has a default set to
// it, as New does: what an agent started with c runs with. It changes
// nothing else (Validate is not run).
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/linkedge"
	}
	if c.HTTP == "" {
		c.HTTP = "127.0.0.1:8080"
	}
	if c.LocalBroker.Listen == "" {
		c.LocalBroker.Listen = "127.0.0.1:1883"
	}
	if c.Probation <= 0 {
		c.Probation = 10 * time.Second
	}
	if c.Link.Profile == "" {
		c.Link.Profile = "cellular"
	}
	prof := Profiles[c.Link.Profile] // an unknown one is refused by Validate
	if c.StatusInterval <= 0 {
		c.StatusInterval = prof.StatusInterval
	}
	if c.Link.PostQuantum == nil {
		c.Link.PostQuantum = &prof.PostQuantum
	}
	if c.Forward.BatchDelay <= 0 {
		c.Forward.BatchDelay = prof.BatchDelay
	}
	if c.Forward.MaxBatch <= 0 {
		c.Forward.MaxBatch = 100
	}
	if c.MaxClockSkew <= 0 {
		c.MaxClockSkew = 5 * time.Minute
	}
	if c.Containers.SuperviseInterval <= 0 {
		c.Containers.SuperviseInterval = 5 * time.Second
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 5 * time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(15*time.Minute, c.RetryMin)
	}
	if c.MaxURLFailures <= 0 {
		c.MaxURLFailures = 8
	}
	if c.DeadURLRetry <= 0 {
		c.DeadURLRetry = 6 * time.Hour
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.Fleet.KeepAlive <= 0 {
		c.Fleet.KeepAlive = prof.KeepAlive
	}
	if c.Fleet.ClientID == "" {
		c.Fleet.ClientID = "linkedge-truck-" + c.Truck
	}
	if c.Fleet.MaxReconnectInterval <= 0 {
		c.Fleet.MaxReconnectInterval = 30 * time.Second
	}
	if c.Fleet.ReconnectJitter == 0 {
		c.Fleet.ReconnectJitter = 5 * time.Second
	}
	c.Fleet.ReconnectJitter = max(c.Fleet.ReconnectJitter, 0)
	if c.Forward.MaxQueued <= 0 {
		c.Forward.MaxQueued = 10000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the configuration and loads the trusted keys.
func (c *Config) Validate() error {
	var errs []error
	if err := topics.ValidID(c.Truck); err != nil {
		errs = append(errs, fmt.Errorf("truck: %w", err))
	}
	if err := topics.ValidID(c.Model); err != nil {
		errs = append(errs, fmt.Errorf("model: %w", err))
	}
	for _, g := range c.Groups {
		if err := topics.ValidID(g); err != nil {
			errs = append(errs, fmt.Errorf("groups: %w", err))
		}
	}
	if len(c.Groups) > status.MaxGroups {
		// The groups go in the status document, whose readers refuse more.
		errs = append(errs, fmt.Errorf("groups: %d of them, at most %d", len(c.Groups), status.MaxGroups))
	}
	if _, ok := Profiles[c.Link.Profile]; !ok && c.Link.Profile != "" {
		errs = append(errs, fmt.Errorf("link.profile %q: want cellular, wifi or satellite", c.Link.Profile))
	}
	if c.Fleet.KeepAlive > 20*time.Minute {
		errs = append(errs, fmt.Errorf("fleet.keep_alive %s: at most 20m (brokers such as AWS IoT Core refuse more)", c.Fleet.KeepAlive))
	}
	if _, err := hold.New(c.Hold); err != nil {
		errs = append(errs, fmt.Errorf("hold: %w", err))
	}
	if n := len(c.Fleet.ClientID); n > 128 || strings.ContainsAny(c.Fleet.ClientID, "+#/\x00") {
		errs = append(errs, fmt.Errorf("fleet.client_id %q: use at most 128 bytes and no / + # (the truck id, its thing name, on AWS IoT Core)", c.Fleet.ClientID))
	}
	if c.Fleet.Broker == "" {
		errs = append(errs, errors.New("fleet.broker is required, e.g. tcp://fleet.example.com:1883"))
	}
	if c.Fleet.HTTPProxy != "" {
		if u, err := url.Parse(c.Fleet.HTTPProxy); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("fleet.http_proxy %q: want http://host:port", c.Fleet.HTTPProxy))
		}
	}
	if _, err := c.Fleet.TLS.Build(); err != nil {
		errs = append(errs, fmt.Errorf("fleet.tls: %w", err))
	} else if err := c.Fleet.TLS.CheckScheme(c.Fleet.Broker); err != nil {
		errs = append(errs, fmt.Errorf("fleet.tls: %w", err))
	}
	if c.LocalBroker.Listen == "off" && c.LocalBroker.External == "" && c.HTTP == "off" && c.Runtime == nil {
		errs = append(errs, errors.New(`local_broker: with listen "off" and http "off" the truck would serve nothing; set local_broker.external to the truck's broker URL or give http an address`))
	}
	// Each setting applies to one kind of local broker; one given for the
	// other would be ignored, and the bus left open unnoticed.
	if c.LocalBroker.Users != "" && c.LocalBroker.Listen == "off" {
		errs = append(errs, errors.New(`local_broker.users applies to the embedded broker, and listen is "off"; set up logins in the external broker instead`))
	}
	if (c.LocalBroker.Username != "" || c.LocalBroker.Password != "") && (c.LocalBroker.Listen != "off" || c.LocalBroker.External == "") {
		errs = append(errs, errors.New(`local_broker.username and password log in to local_broker.external (with listen "off"); the embedded broker admits the agent by itself`))
	}
	if len(c.Keys) == 0 {
		if len(c.TrustedKeys) == 0 {
			errs = append(errs, errors.New("trusted_keys: list at least one publisher public key; the truck runs only signed releases"))
		}
		for _, p := range c.TrustedKeys {
			k, err := release.ReadPublicKeyFile(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("trusted_keys: %w", err))
				continue
			}
			c.Keys = append(c.Keys, k)
		}
	}
	return errors.Join(errs...)
}
