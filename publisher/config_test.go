package publisher

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/tlsconfig/tlstest"
)

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
broker: tcp://fleet.example.com:1883
registry_dir: /srv/registry
key_file: /etc/linkedge/publisher.key
poll_interval: 5s
release_ttl: 168h
artifact_listen: 0.0.0.0:9884
artifact_base_url: https://models.example.com
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PollInterval != 5*time.Second || cfg.ReleaseTTL != 168*time.Hour || cfg.ArtifactListen != "0.0.0.0:9884" {
		t.Fatalf("decoded %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.setDefaults()
	if cfg.ClientID != DefaultClientID || cfg.StateFile != "/srv/registry/publisher-state.json" || cfg.PublishTimeout != DefaultPublishTimeout {
		t.Errorf("defaults not applied: %+v", cfg)
	}

	for name, doc := range map[string]string{
		"unknown key":    "broker: tcp://x:1883\nregistry: /srv\n",
		"bad duration":   "poll_interval: often\n",
		"two documents":  "broker: tcp://x:1883\n---\nbroker: tcp://y:1883\n",
		"wrong type":     "broker: [1, 2]\n",
		"credentials in": "artifact_base_url: {user: x}\n",
	} {
		if _, err := ParseConfig([]byte(doc)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: ParseConfig error = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := Config{Broker: "tcp://127.0.0.1:1883", RegistryDir: "/srv/registry", KeyFile: "k.pem"}
	if err := valid.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
		msg  string
	}{
		{"no broker", func(c *Config) { c.Broker = "" }, "broker: required"},
		{"bad scheme", func(c *Config) { c.Broker = "http://x:1883" }, "scheme"},
		{"no registry", func(c *Config) { c.RegistryDir = "" }, "registry_dir: required"},
		{"registry without distributor", func(c *Config) { c.Registry = &LocalRegistry{} }, "Distributor"},
		{"no key", func(c *Config) { c.KeyFile = "" }, "key_file: required"},
		{"tiny poll", func(c *Config) { c.PollInterval = time.Microsecond }, "poll_interval"},
		{"tiny ttl", func(c *Config) { c.ReleaseTTL = time.Millisecond }, "release_ttl"},
		{"bad listen", func(c *Config) { c.ArtifactListen = "9884" }, "artifact_listen"},
		{"wildcard listen without base url", func(c *Config) { c.ArtifactListen = ":9884" }, "artifact_base_url: required"},
		{"base url with credentials", func(c *Config) { c.ArtifactBaseURL = "https://u:p@x" }, "credentials"},
		{"base url with query", func(c *Config) { c.ArtifactBaseURL = "https://x/?sig=1" }, "query"},
		{"base url not http", func(c *Config) { c.ArtifactBaseURL = "s3://bucket" }, "http or https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mod(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig mentioning %q", err, tt.msg)
			}
		})
	}
}

// A full sagemaker section decodes key by key, and is valid once the
// backend built from it is plugged in.
func TestParseConfigSageMaker(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
broker: ssl://fleet.example.com:8883
key_file: /etc/linkedge/publisher.key
state_file: /var/lib/linkedge/publisher-state.json
artifact_listen: 0.0.0.0:9884
registry_kind: sagemaker
sagemaker:
  groups: [aps-failure, engine-temp]
  sqs_queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/linkedge-model-events
  refresh_interval: 5m
  presign_ttl: 12h
  region: eu-west-1
  endpoint_url: https://s3.example.com
  s3_path_style: true
  artifact_cache: /var/cache/linkedge/artifacts.json
  container_runtime: true
`))
	if err != nil {
		t.Fatal(err)
	}
	want := SageMakerConfig{
		Groups:           []string{"aps-failure", "engine-temp"},
		SQSQueueURL:      "https://sqs.eu-west-1.amazonaws.com/123456789012/linkedge-model-events",
		RefreshInterval:  5 * time.Minute,
		PresignTTL:       12 * time.Hour,
		Region:           "eu-west-1",
		EndpointURL:      "https://s3.example.com",
		S3PathStyle:      true,
		ArtifactCache:    "/var/cache/linkedge/artifacts.json",
		ContainerRuntime: true,
	}
	if cfg.RegistryKind != RegistryKindSageMaker || cfg.SageMaker == nil || !reflect.DeepEqual(*cfg.SageMaker, want) {
		t.Fatalf("decoded kind %q, section %+v", cfg.RegistryKind, cfg.SageMaker)
	}
	// A wildcard artifact_listen needs no base URL here: trucks download
	// from presigned S3 URLs.
	if err := cfg.ValidateSettings(); err != nil {
		t.Fatalf("ValidateSettings: %v", err)
	}
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Registry and Distributor") {
		t.Fatalf("Validate without the backend = %v, want it asked for", err)
	}
	cfg.Registry, cfg.Distributor = &LocalRegistry{}, BaseURLDistributor{Base: "https://x"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with a backend: %v", err)
	}

	for name, doc := range map[string]string{
		"unknown key in section": "registry_kind: sagemaker\nsagemaker:\n  group: [a]\n",
		"bad duration":           "registry_kind: sagemaker\nsagemaker:\n  presign_ttl: a day\n",
		"groups not a list":      "registry_kind: sagemaker\nsagemaker:\n  groups: {a: b}\n",
		"section not a map":      "registry_kind: sagemaker\nsagemaker: [a]\n",
	} {
		if _, err := ParseConfig([]byte(doc)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: ParseConfig error = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestConfigValidateSageMaker(t *testing.T) {
	valid := func() Config {
		return Config{Broker: "tcp://127.0.0.1:1883", KeyFile: "k.pem", StateFile: "/var/lib/linkedge/state.json",
			RegistryKind: RegistryKindSageMaker, SageMaker: &SageMakerConfig{Groups: []string{"aps-failure"}},
			Registry: &LocalRegistry{}, Distributor: BaseURLDistributor{Base: "https://x"}}
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("minimal sagemaker config: %v", c.Validate())
	}
	tests := []struct {
		name string
		mod  func(*Config)
		msg  string
	}{
		{"unknown kind", func(c *Config) { c.RegistryKind = "mlflow" }, `registry_kind: "mlflow": want local`},
		{"section with the local kind", func(c *Config) { c.RegistryKind, c.RegistryDir = "", "/srv/registry" }, "add that key"},
		{"section with an explicit local kind", func(c *Config) { c.RegistryKind, c.RegistryDir = RegistryKindLocal, "/srv/registry" }, "sagemaker: this section needs registry_kind: sagemaker"},
		{"no section", func(c *Config) { c.SageMaker = nil }, "sagemaker: section required"},
		{"no groups", func(c *Config) { c.SageMaker.Groups = nil }, "sagemaker.groups: required with registry_kind: sagemaker"},
		{"group not a model id", func(c *Config) { c.SageMaker.Groups = []string{"team/aps"} }, `sagemaker.groups: group "team/aps" cannot be a model id`},
		{"group twice", func(c *Config) { c.SageMaker.Groups = []string{"a", "a"} }, `"a" is listed twice`},
		{"negative refresh", func(c *Config) { c.SageMaker.RefreshInterval = -time.Second }, "sagemaker.refresh_interval: -1s is negative"},
		{"presign ttl too long", func(c *Config) { c.SageMaker.PresignTTL = 200 * time.Hour }, "sagemaker.presign_ttl: 200h0m0s is outside 1s to 168h0m0s"},
		{"presign ttl too short", func(c *Config) { c.SageMaker.PresignTTL = time.Millisecond }, "sagemaker.presign_ttl: 1ms"},
		{"negative presign ttl", func(c *Config) { c.SageMaker.PresignTTL = -time.Hour }, "sagemaker.presign_ttl"},
		{"queue url not a url", func(c *Config) { c.SageMaker.SQSQueueURL = "linkedge-model-events" }, "sagemaker.sqs_queue_url"},
		{"queue url not http", func(c *Config) { c.SageMaker.SQSQueueURL = "sqs://q" }, "sagemaker.sqs_queue_url: \"sqs://q\": scheme"},
		{"endpoint without host", func(c *Config) { c.SageMaker.EndpointURL = "https://" }, "sagemaker.endpoint_url"},
		{"registry dir too", func(c *Config) { c.RegistryDir = "/srv/registry" }, "registry_dir: not used with registry_kind: sagemaker"},
		{"no state file", func(c *Config) { c.StateFile = "" }, "state_file: required with registry_kind: sagemaker"},
		{"no backend", func(c *Config) { c.Registry = nil }, "needs Registry and Distributor"},
		{"no distributor", func(c *Config) { c.Distributor = nil }, "needs Registry and Distributor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mod(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig mentioning %q", err, tt.msg)
			}
		})
	}
	// ValidateSettings skips only the backend check.
	c := valid()
	c.Registry, c.Distributor = nil, nil
	if err := c.ValidateSettings(); err != nil {
		t.Fatalf("ValidateSettings without a backend: %v", err)
	}
	c.SageMaker.Groups = nil
	if err := c.ValidateSettings(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "sagemaker.groups") {
		t.Fatalf("ValidateSettings without groups: %v", err)
	}
	// The local kind is untouched by the new keys: the same config as
	// before, with or without an explicit registry_kind: local.
	for _, kind := range []string{"", RegistryKindLocal} {
		local := Config{Broker: "tcp://127.0.0.1:1883", RegistryDir: "/srv/registry", KeyFile: "k.pem", RegistryKind: kind}
		if err := local.Validate(); err != nil {
			t.Errorf("local kind %q: %v", kind, err)
		}
		local.ArtifactListen = ":9884"
		if err := local.Validate(); err == nil || !strings.Contains(err.Error(), "artifact_base_url: required") {
			t.Errorf("local kind %q with a wildcard listen: %v", kind, err)
		}
	}
}

func TestConfigTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "fleet")
	cert, key := ca.Client(t, "publisher")
	base := "broker: ssl://fleet:8883\nregistry_dir: /srv/registry\nkey_file: k.pem\n"
	cfg, err := ParseConfig([]byte(base + "tls:\n  ca_file: " + ca.File + "\n  cert_file: " + cert + "\n  key_file: " + key + "\n  server_name: fleet.example.com\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.ServerName != "fleet.example.com" || cfg.TLS.CAFile != ca.File {
		t.Fatalf("tls %+v", cfg.TLS)
	}
	cfg, err = ParseConfig([]byte(base + "tls:\n  cert_file: " + cert + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "tls:") {
		t.Fatalf("cert without key: %v", err)
	}
	if _, err := ParseConfig([]byte(base + "tls:\n  ca: x\n")); err == nil {
		t.Fatal("a misspelt tls key was accepted")
	}
}
