package publisher

import (
	"errors"
	"strings"
	"testing"
	"time"
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
