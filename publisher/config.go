package publisher

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/config"
)

// Defaults applied to zero Config fields.
const (
	DefaultClientID       = "linkedge-publisher"
	DefaultPollInterval   = 2 * time.Second
	DefaultReleaseTTL     = 30 * 24 * time.Hour
	DefaultPublishTimeout = 10 * time.Second
	// DefaultArtifactListen avoids 8080 (inference), 1883 and 9883 (broker).
	DefaultArtifactListen = "127.0.0.1:9884"
	// DefaultStateFileName is the state file's name inside RegistryDir.
	DefaultStateFileName = "publisher-state.json"
)

// ErrInvalidConfig wraps every configuration error.
var ErrInvalidConfig = errors.New("publisher: invalid config")

// Config configures a [Publisher] and [PublishOnce]. YAML files use the
// snake_case keys; durations use Go syntax ("2s", "720h").
type Config struct {
	// Broker is the fleet broker's URL: tcp://, ssl://, ws:// or wss://.
	// Required.
	Broker string `yaml:"broker"`
	// ClientID is the MQTT client id of the service, default
	// "linkedge-publisher". Its session is persistent, so run one service
	// per id. PublishOnce appends "-once-{random}".
	ClientID string `yaml:"client_id"`
	// Username and Password authenticate to the broker (a user with the
	// publisher role); empty means anonymous.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// RegistryDir is the local registry folder. Required unless Registry is
	// set.
	RegistryDir string `yaml:"registry_dir"`
	// KeyFile is the Ed25519 private key (PKCS#8 PEM) that signs releases.
	// Required.
	KeyFile string `yaml:"key_file"`
	// StateFile records serials and announcements. Default
	// RegistryDir/publisher-state.json; required when RegistryDir is empty.
	StateFile string `yaml:"state_file"`
	// PollInterval is how often the registry is read. Default 2s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// ReleaseTTL is how long a release document is valid. The publisher
	// re-signs (same target, new serial) once less than a third remains.
	// Default 30 days (720h).
	ReleaseTTL time.Duration `yaml:"release_ttl"`
	// PublishTimeout bounds the wait for the broker's acknowledgement of
	// one announcement. Default 10s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// ArtifactListen is the artifact server's address (it also serves
	// /healthz and /metrics). Default "127.0.0.1:9884"; port 0 picks one.
	ArtifactListen string `yaml:"artifact_listen"`
	// ArtifactBaseURL is the base URL trucks download artifacts from,
	// e.g. "https://models.example.com". Default "http://{bound
	// ArtifactListen}"; required when ArtifactListen binds every interface.
	ArtifactBaseURL string `yaml:"artifact_base_url"`

	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Metrics is the registry the metrics are registered on, and what
	// /metrics serves. Default: a new registry ([Publisher.Metrics]).
	Metrics *prometheus.Registry `yaml:"-"`
	// Registry replaces the local registry (e.g. a SageMaker backend); it
	// then needs Distributor too, and RegistryDir is not used.
	Registry Registry `yaml:"-"`
	// Distributor replaces the artifact server's URLs (e.g. presigned S3
	// URLs). Default: the artifact server (local registry only).
	Distributor Distributor `yaml:"-"`
	// OnAnnounce, if set, is called after every acknowledged announcement.
	OnAnnounce func(model string, version int64, serial int64) `yaml:"-"`
}

// setDefaults fills zero fields that have a default.
func (c *Config) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.StateFile == "" && c.RegistryDir != "" {
		c.StateFile = filepath.Join(c.RegistryDir, DefaultStateFileName)
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.ReleaseTTL == 0 {
		c.ReleaseTTL = DefaultReleaseTTL
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.ArtifactListen == "" {
		c.ArtifactListen = DefaultArtifactListen
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every configuration mistake, wrapped in
// [ErrInvalidConfig]. Zero fields are checked as if defaulted.
func (c *Config) Validate() error {
	cc := *c
	cc.setDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := checkBrokerURL(cc.Broker); err != nil {
		bad("broker: %w", err)
	}
	if len(cc.ClientID) > 128 {
		bad("client_id: %d bytes, limit 128", len(cc.ClientID))
	}
	switch {
	case cc.Registry == nil && cc.RegistryDir == "":
		bad("registry_dir: required (the local registry folder)")
	case cc.Registry != nil && cc.Distributor == nil:
		bad("a registry other than the local one needs a Distributor for artifact URLs")
	}
	if cc.StateFile == "" {
		bad("state_file: required when registry_dir is empty")
	}
	if cc.KeyFile == "" {
		bad("key_file: required (the Ed25519 signing key; create one with `linkedge keys generate`)")
	}
	if cc.PollInterval < 10*time.Millisecond {
		bad("poll_interval: %s is below the 10ms minimum", cc.PollInterval)
	}
	if cc.ReleaseTTL < time.Second {
		bad("release_ttl: %s is below the 1s minimum", cc.ReleaseTTL)
	}
	if cc.PublishTimeout < 10*time.Millisecond {
		bad("publish_timeout: %s is below the 10ms minimum", cc.PublishTimeout)
	}
	host, port, err := net.SplitHostPort(cc.ArtifactListen)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		bad("artifact_listen: %q is not host:port", cc.ArtifactListen)
	} else if ip := net.ParseIP(host); (host == "" || ip != nil && ip.IsUnspecified()) && cc.ArtifactBaseURL == "" {
		bad("artifact_base_url: required when artifact_listen (%s) binds every interface; set it to the URL trucks reach this server at", cc.ArtifactListen)
	}
	if cc.ArtifactBaseURL != "" {
		if err := checkBaseURL(cc.ArtifactBaseURL); err != nil {
			bad("artifact_base_url: %w", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

func checkBrokerURL(s string) error {
	if s == "" {
		return errors.New("required, e.g. tcp://127.0.0.1:1883")
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return fmt.Errorf("%q: scheme must be tcp, ssl, ws or wss", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	return nil
}

// checkBaseURL applies the release document's URL rules early, so a bad
// base URL fails at start-up rather than at the first announcement.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: scheme must be http or https", s)
	case u.Host == "":
		return fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return fmt.Errorf("%q embeds credentials; release documents are broadcast to the fleet", s)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q: a base URL takes no query or fragment", s)
	}
	return nil
}

// ParseConfig decodes a YAML config strictly: unknown keys and a second
// document are errors, so a typo never silently keeps a default. It does not
// validate, so that callers can apply overrides (command-line flags) first;
// [New] and [PublishOnce] validate. Keys left out take their defaults there.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	if err := config.DecodeYAML(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return cfg, nil
}

// LoadConfig reads and parses a YAML config file with [ParseConfig].
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("publisher: read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
