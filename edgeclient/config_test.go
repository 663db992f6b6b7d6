package edgeclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/tlsconfig/tlstest"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	pub, _ := release.GenerateKey()
	keyFile := filepath.Join(dir, "publisher.pub")
	if err := release.WritePublicKeyFile(keyFile, pub); err != nil {
		t.Fatal(err)
	}
	ca := tlstest.NewCA(t, "fleet")
	caFile := ca.File
	certFile, keyPEM := ca.Client(t, "t1")
	tests := []struct {
		name string
		yaml string
		err  string
	}{
		{"minimal", "truck: t1\nmodel: aps-failure\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\n", ""},
		{"unknown key", "truck: t1\nmodle: aps-failure\n", "field modle not found"},
		{"no keys", "truck: t1\nmodel: m\nfleet: {broker: tcp://x:1883}\n", "trusted_keys"},
		{"missing key file", "truck: t1\nmodel: m\ntrusted_keys: [/nope.pub]\nfleet: {broker: tcp://x:1883}\n", "nope.pub"},
		{"bad truck id", "truck: 'a/b'\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\n", "truck"},
		{"no broker", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\n", "fleet.broker is required"},
		{"fleet tls", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: ssl://x:8883, tls: {ca_file: " + caFile + ", cert_file: " + certFile + ", key_file: " + keyPEM + "}}\n", ""},
		{"fleet tls missing ca", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: ssl://x:8883, tls: {ca_file: /nope/ca.pem}}\n", "fleet.tls: invalid tls settings: ca_file"},
		{"fleet tls with tcp", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883, tls: {ca_file: " + caFile + "}}\n", "not a TLS URL"},
		{"fleet tls cert without key", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: ssl://x:8883, tls: {cert_file: " + certFile + "}}\n", "cert_file and key_file must be set together"},
		{"no local bus and no http", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\nlocal_broker: {listen: \"off\"}\nhttp: \"off\"\n", "serve nothing"},
		{"local users", "truck: t1\nmodel: aps-failure\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\nlocal_broker: {users: /etc/linkedge/local-users.yaml}\n", ""},
		{"external local login", "truck: t1\nmodel: aps-failure\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\nlocal_broker: {listen: \"off\", external: tcp://127.0.0.1:1884, username: agent, password: pw}\n", ""},
		{"local users with an external broker", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\nlocal_broker: {listen: \"off\", external: tcp://127.0.0.1:1884, users: u.yaml}\n", "local_broker.users applies to the embedded broker"},
		{"thing name as client id", "truck: t1\nmodel: aps-failure\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: ssl://x.iot.eu-west-1.amazonaws.com:8883, client_id: t1}\n", ""},
		{"client id with a wildcard", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883, client_id: 't/#'}\n", "fleet.client_id"},
		{"client id too long", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883, client_id: " + strings.Repeat("c", 129) + "}\n", "fleet.client_id"},
		{"sixteen groups", "truck: t1\nmodel: aps-failure\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\ngroups: [" + strings.Repeat("g,", 15) + "g]\n", ""},
		{"too many groups", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\ngroups: [" + strings.Repeat("g,", 16) + "g]\n", "groups: 17 of them, at most 16"},
		{"local login for the embedded broker", "truck: t1\nmodel: m\ntrusted_keys: [" + keyFile + "]\nfleet: {broker: tcp://x:1883}\nlocal_broker: {username: agent, password: pw}\n", "local_broker.username and password log in to local_broker.external"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "truck.yaml")
			os.WriteFile(p, []byte(tt.yaml), 0o644)
			cfg, err := LoadConfig(p)
			if err == nil {
				cfg.setDefaults()
				err = cfg.Validate()
			}
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.HTTP != "127.0.0.1:8080" || cfg.Probation.Seconds() != 10 || len(cfg.Keys) != 1 {
					t.Fatalf("defaults not applied: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.err)
			}
		})
	}
}

func TestLinkProfiles(t *testing.T) {
	no := false
	for _, tc := range []struct {
		name      string
		cfg       Config
		keepAlive time.Duration
		heartbeat time.Duration
		batch     time.Duration
		pq        bool
	}{
		{"cellular by default", Config{}, 10 * time.Minute, 24 * time.Hour, 5 * time.Second, false},
		{"wifi", Config{Link: LinkConfig{Profile: "wifi"}}, time.Minute, 5 * time.Minute, time.Second, true},
		{"satellite", Config{Link: LinkConfig{Profile: "satellite"}}, 20 * time.Minute, 24 * time.Hour, time.Minute, false},
		{"explicit settings win", Config{Link: LinkConfig{Profile: "wifi", PostQuantum: &no}, StatusInterval: time.Hour,
			Fleet: FleetConfig{KeepAlive: 2 * time.Minute}, Forward: ForwardConfig{BatchDelay: 3 * time.Second}}, 2 * time.Minute, time.Hour, 3 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg.WithDefaults()
			if c.Fleet.KeepAlive != tc.keepAlive || c.StatusInterval != tc.heartbeat || c.Forward.BatchDelay != tc.batch || *c.Link.PostQuantum != tc.pq {
				t.Fatalf("keep-alive %s, heartbeat %s, batch delay %s, post-quantum %v", c.Fleet.KeepAlive, c.StatusInterval, c.Forward.BatchDelay, *c.Link.PostQuantum)
			}
		})
	}
	bad := Config{Truck: "t", Model: "m", TrustedKeys: []string{"k"}, Fleet: FleetConfig{Broker: "tcp://x:1883"}, Link: LinkConfig{Profile: "dial-up"}}.WithDefaults()
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "link.profile") {
		t.Fatalf("unknown profile: %v", err)
	}
	long := Config{Truck: "t", Model: "m", TrustedKeys: []string{"k"}, Fleet: FleetConfig{Broker: "tcp://x:1883", KeepAlive: time.Hour}}.WithDefaults()
	if err := long.Validate(); err == nil || !strings.Contains(err.Error(), "keep_alive") {
		t.Fatalf("an hour's keep-alive: %v", err)
	}
}
