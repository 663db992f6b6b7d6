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
	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/topics"
)

// Defaults applied to zero Config fields.
const (
	DefaultClientID       = "linkedge-publisher"
	DefaultPollInterval   = 2 * time.Second
	DefaultReleaseTTL     = 30 * 24 * time.Hour
	DefaultPublishTimeout = 10 * time.Second
	// DefaultCloseTimeout bounds stopping the service; see Config.CloseTimeout.
	DefaultCloseTimeout = 5 * time.Second
	// DefaultArtifactListen avoids 8080 (inference), 1883 and 9883 (broker).
	DefaultArtifactListen = "127.0.0.1:9884"
	// DefaultStateFileName is the state file's name inside RegistryDir.
	DefaultStateFileName = "publisher-state.json"
	// DefaultHoldsFileName is the operator holds file's name inside
	// RegistryDir (or beside StateFile without one); see holds.go.
	DefaultHoldsFileName = "rollout-holds.json"
)

// Registry kinds, the values of Config.RegistryKind.
const (
	// RegistryKindLocal is a local registry folder (RegistryDir).
	RegistryKindLocal = "local"
	// RegistryKindSageMaker is the SageMaker Model Registry, described by
	// Config.SageMaker.
	RegistryKindSageMaker = "sagemaker"
)

// Presigned URL lifetimes SigV4 accepts. package s3dist, which presigns,
// has the same limits; it imports this package, so they are repeated here
// rather than referenced (a test in internal/cli checks that they agree).
const (
	minPresignTTL = time.Second
	maxPresignTTL = 7 * 24 * time.Hour
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
	// Replica tells publishers that run at once for availability apart
	// (same registry and key, each with its own client id and state file):
	// every serial a publisher signs ends, modulo MaxReplicas, in its
	// replica number, so two of them never sign the same serial. 0 to
	// MaxReplicas-1; default 0.
	Replica int `yaml:"replica"`
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
	// HoldsFile is where operators halt and resume staged rollouts
	// (`linkedge rollout halt|resume`, the console); the publisher reads it
	// at every poll. Default RegistryDir/rollout-holds.json, or
	// rollout-holds.json beside StateFile without a RegistryDir. Publisher
	// replicas sharing a registry share it.
	HoldsFile string `yaml:"holds_file"`
	// PollInterval is how often the registry is read. Default 2s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// ReleaseTTL is how long a release document is valid. The publisher
	// re-signs (same target, new serial) once less than a third remains.
	// Default 30 days (720h).
	ReleaseTTL time.Duration `yaml:"release_ttl"`
	// PublishTimeout bounds the wait for the broker's acknowledgement of
	// one announcement. Default 10s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// CloseTimeout bounds how long stopping the service takes ([Publisher.Close],
	// or Run once its context is cancelled): downloads in flight get most of
	// it and are then cut off (trucks resume them), and whatever has not
	// stopped by then (a registry call that ignores cancellation, a broker
	// that stopped answering) is left behind and named in an error wrapping
	// [ErrCloseTimeout]. Default 5s (zero means the default); must not be
	// negative.
	CloseTimeout time.Duration `yaml:"close_timeout"`
	// ArtifactListen is the artifact server's address (it also serves
	// /healthz and /metrics). Default "127.0.0.1:9884"; port 0 picks one.
	ArtifactListen string `yaml:"artifact_listen"`
	// ArtifactBaseURL is the base URL trucks download artifacts from,
	// e.g. "https://models.example.com". Default "http://{bound
	// ArtifactListen}"; required when ArtifactListen binds every interface
	// (except with the SageMaker kind, whose artifacts are presigned S3
	// URLs).
	ArtifactBaseURL string `yaml:"artifact_base_url"`
	// RegistryKind is where approved versions come from: "local" (the
	// folder RegistryDir) or "sagemaker" (the SageMaker Model Registry,
	// configured by SageMaker). Default "local".
	RegistryKind string `yaml:"registry_kind"`
	// SageMaker configures the SageMaker Model Registry backend; only
	// allowed, and then required, with RegistryKind "sagemaker". Default
	// none.
	SageMaker *SageMakerConfig `yaml:"sagemaker"`
	// TLS applies to the broker connection (ssl:// or wss://): a private
	// fleet CA to trust besides the system roots, and the publisher's
	// certificate for a broker that requires mutual TLS. Default: system
	// roots, no certificate.
	TLS tlsconfig.Client `yaml:"tls"`
	// Rollout, when set, stages every new version: canary trucks first,
	// everyone after a soak without failures. Nil announces a new version
	// to every truck at once. See rollout.go and docs/publisher.md.
	Rollout *RolloutConfig `yaml:"rollout"`

	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Metrics is the registry the metrics are registered on, and what
	// /metrics serves. Default: a new registry ([Publisher.Metrics]).
	Metrics *prometheus.Registry `yaml:"-"`
	// Registry replaces the local registry (e.g. a SageMaker backend); it
	// then needs Distributor too, and RegistryDir is not used. With
	// RegistryKind "sagemaker" both must be set, to the backend built from
	// the SageMaker section (package publisher/sagemaker; the linkedge CLI
	// builds it).
	Registry Registry `yaml:"-"`
	// Distributor replaces the artifact server's URLs (e.g. presigned S3
	// URLs). Default: the artifact server (local registry only).
	Distributor Distributor `yaml:"-"`
	// OnAnnounce, if set, is called after every acknowledged announcement.
	OnAnnounce func(model string, version int64, serial int64) `yaml:"-"`
}

// SageMakerConfig is the `sagemaker:` section: how to reach the SageMaker
// Model Registry, its events and the S3 artifacts. It is plain data because
// package publisher/sagemaker imports this package, so this one cannot
// import it; the linkedge CLI builds the backend from it. Every field has a
// command-line flag of the `publisher` and `publish` commands, named in its
// comment, which overrides the file. AWS credentials are not part of it:
// they come from the SDK's standard chain, so nothing secret sits in the
// file.
type SageMakerConfig struct {
	// Groups are the model package groups to watch; each group's name is
	// the model id trucks run (1-64 of A-Z a-z 0-9 . _ -). Required for
	// the service; `linkedge publish` ignores it and announces the one
	// group named on its command line. Flag --groups.
	Groups []string `yaml:"groups"`
	// SQSQueueURL is the SQS queue an EventBridge rule fills with model
	// package state changes (docs/pipeline-hook.md); an event makes the
	// publisher read that group at once. Default none: polling alone.
	// Service only. Flag --sqs-queue-url.
	SQSQueueURL string `yaml:"sqs_queue_url"`
	// RefreshInterval is the longest time between two reads of a group
	// from SageMaker, the safety net under the events. Default 1m.
	// Service only. Flag --sagemaker-refresh.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// PresignTTL is the lifetime of the presigned S3 URLs trucks download,
	// 1s to 168h (SigV4's limit). Releases are re-signed before it ends.
	// Default 24h. Flag --presign-ttl.
	PresignTTL time.Duration `yaml:"presign_ttl"`
	// Region is the AWS region. Default $AWS_REGION or the profile's.
	// Flag --region.
	Region string `yaml:"region"`
	// EndpointURL sends every AWS call (SageMaker, S3 and SQS alike) to
	// this endpoint: S3-compatible stores, tests. It takes precedence over
	// the SDK's AWS_ENDPOINT_URL_<SERVICE> variables, so leave it out to
	// give each service its own endpoint with those. Default: AWS's own
	// endpoints. Flag --endpoint-url.
	EndpointURL string `yaml:"endpoint_url"`
	// S3PathStyle addresses buckets by path (https://host/bucket/key),
	// which most S3-compatible stores need. Default false. Flag
	// --s3-path-style.
	S3PathStyle bool `yaml:"s3_path_style"`
	// ArtifactCache is the file remembering artifact digests by package
	// ARN and ETag, so a restart reads no artifact again. Default
	// sagemaker-artifacts.json beside StateFile. Flag --artifact-cache.
	ArtifactCache string `yaml:"artifact_cache"`
	// ContainerRuntime announces the package's container image, pinned by
	// digest, as the runtime instead of in-process ONNX. Default false.
	// Flag --container-runtime.
	ContainerRuntime bool `yaml:"container_runtime"`
	// URLsInRelease puts the presigned URLs in the release documents, as
	// LinkEdge did before download grants: for fleets with agents older
	// than grants, which refuse a release with "grant" in it. Every truck
	// then gets the release again before each URL expires (every 16 h with
	// the 24 h presign_ttl). Default false: the service answers trucks'
	// grant requests instead (docs/publisher.md, "Download grants").
	// Service only. Flag --urls-in-release.
	URLsInRelease bool `yaml:"urls_in_release"`
}

// setDefaults fills zero fields that have a default.
func (c *Config) setDefaults() {
	if c.RegistryKind == "" {
		c.RegistryKind = RegistryKindLocal
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.StateFile == "" && c.RegistryDir != "" {
		c.StateFile = filepath.Join(c.RegistryDir, DefaultStateFileName)
	}
	if c.HoldsFile == "" {
		switch {
		case c.RegistryDir != "":
			c.HoldsFile = filepath.Join(c.RegistryDir, DefaultHoldsFileName)
		case c.StateFile != "":
			c.HoldsFile = filepath.Join(filepath.Dir(c.StateFile), DefaultHoldsFileName)
		}
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
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.ArtifactListen == "" {
		c.ArtifactListen = DefaultArtifactListen
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Rollout != nil {
		r := *c.Rollout // the caller's struct stays as written
		r.setDefaults()
		c.Rollout = &r
	}
}

// Validate reports every configuration mistake, wrapped in
// [ErrInvalidConfig]. Zero fields are checked as if defaulted.
func (c *Config) Validate() error { return c.validate(true) }

// ValidateSettings is [Config.Validate] without the one check that needs
// the SageMaker backend built (Registry and Distributor set with
// RegistryKind "sagemaker"): it reports what a config file and flags can
// get wrong. Building the backend calls AWS, so the CLI runs this first
// and a typo is reported as such rather than as an AWS error. With the
// local kind it is Validate.
func (c *Config) ValidateSettings() error { return c.validate(false) }

func (c *Config) validate(needBackend bool) error {
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
	if cc.Replica < 0 || cc.Replica >= MaxReplicas {
		bad("replica: %d: want 0 to %d, a different one for each publisher that runs at once", cc.Replica, MaxReplicas-1)
	}
	sageMaker := cc.RegistryKind == RegistryKindSageMaker
	switch cc.RegistryKind {
	case RegistryKindLocal:
		if cc.SageMaker != nil {
			bad("sagemaker: this section needs registry_kind: sagemaker; add that key to use the SageMaker Model Registry, or remove the section to use the local registry")
		}
		switch {
		case cc.Registry == nil && cc.RegistryDir == "":
			bad("registry_dir: required (the local registry folder)")
		case cc.Registry != nil && cc.Distributor == nil:
			bad("a registry other than the local one needs a Distributor for artifact URLs")
		}
	case RegistryKindSageMaker:
		errs = append(errs, cc.sageMakerErrors(needBackend)...)
	default:
		bad("registry_kind: %q: want %s (a registry folder) or %s (the SageMaker Model Registry)", cc.RegistryKind, RegistryKindLocal, RegistryKindSageMaker)
	}
	switch {
	case cc.StateFile == "" && sageMaker:
		bad("state_file: required with registry_kind: sagemaker; it is the publisher's memory of what it announced, and its folder is created (flag --state)")
	case cc.StateFile == "":
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
	if cc.CloseTimeout < 0 {
		bad("close_timeout: %s is negative; leave it out for the %s default", cc.CloseTimeout, DefaultCloseTimeout)
	}
	host, port, err := net.SplitHostPort(cc.ArtifactListen)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		bad("artifact_listen: %q is not host:port", cc.ArtifactListen)
	} else if ip := net.ParseIP(host); (host == "" || ip != nil && ip.IsUnspecified()) && cc.ArtifactBaseURL == "" && !sageMaker {
		// With SageMaker the server only answers /healthz and /metrics;
		// trucks download from presigned S3 URLs, so no base URL is needed.
		bad("artifact_base_url: required when artifact_listen (%s) binds every interface; set it to the URL trucks reach this server at", cc.ArtifactListen)
	}
	if cc.ArtifactBaseURL != "" {
		if err := checkBaseURL(cc.ArtifactBaseURL); err != nil {
			bad("artifact_base_url: %w", err)
		}
	}
	if _, err := cc.TLS.Build(); err != nil {
		bad("tls: %w", err)
	} else if err := cc.TLS.CheckScheme(cc.Broker); err != nil {
		bad("tls: %w", err)
	}
	if cc.Rollout != nil {
		if err := cc.Rollout.validate(); err != nil {
			bad("%w", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// sageMakerErrors checks the SageMaker kind: its section, and that
// nothing of the local kind is set. needBackend also requires Registry
// and Distributor, which only Go code can set.
func (c *Config) sageMakerErrors(needBackend bool) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.RegistryDir != "" {
		bad("registry_dir: not used with registry_kind: sagemaker (versions and artifacts come from SageMaker and S3); remove it")
	}
	if needBackend && (c.Registry == nil || c.Distributor == nil) {
		bad("registry_kind: sagemaker needs Registry and Distributor set to the backend built from the sagemaker section (package publisher/sagemaker)")
	}
	s := c.SageMaker
	if s == nil {
		bad("sagemaker: section required with registry_kind: sagemaker; list at least the model package groups to watch under sagemaker.groups (flag --groups)")
		return errs
	}
	if len(s.Groups) == 0 {
		bad("sagemaker.groups: required with registry_kind: sagemaker; list the model package groups to watch, each named like the model id trucks run (flag --groups)")
	}
	seen := make(map[string]bool, len(s.Groups))
	for _, g := range s.Groups {
		// The group's name becomes the model id in topics and releases.
		if err := topics.ValidID(g); err != nil {
			bad("sagemaker.groups: group %q cannot be a model id: %w", g, err)
		}
		if seen[g] {
			bad("sagemaker.groups: %q is listed twice; remove one", g)
		}
		seen[g] = true
	}
	if s.RefreshInterval < 0 {
		bad("sagemaker.refresh_interval: %s is negative; leave it out for the 1m default (flag --sagemaker-refresh)", s.RefreshInterval)
	}
	if s.PresignTTL != 0 && (s.PresignTTL < minPresignTTL || s.PresignTTL > maxPresignTTL) {
		bad("sagemaker.presign_ttl: %s is outside %s to %s, the lifetimes SigV4 allows a presigned URL; leave it out for 24h (flag --presign-ttl)", s.PresignTTL, minPresignTTL, maxPresignTTL)
	}
	if s.SQSQueueURL != "" {
		if err := checkServiceURL(s.SQSQueueURL); err != nil {
			bad("sagemaker.sqs_queue_url: %w; want the queue's URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/linkedge-model-events (flag --sqs-queue-url)", err)
		}
	}
	if s.EndpointURL != "" {
		if err := checkServiceURL(s.EndpointURL); err != nil {
			bad("sagemaker.endpoint_url: %w; want the endpoint's base URL, e.g. https://s3.example.com, or leave it out for AWS's endpoints (flag --endpoint-url)", err)
		}
	}
	return errs
}

// checkServiceURL accepts what the AWS SDK can send requests to: an
// absolute http or https URL with a host.
func checkServiceURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: scheme must be http or https", s)
	case u.Host == "":
		return fmt.Errorf("%q has no host", s)
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
	if err := checkServiceURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	switch {
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
