package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.Listen != DefaultListen || c.MaxMessageExpiry != 90*24*time.Hour || c.CloseTimeout != 5*time.Second || c.Logger == nil {
		t.Errorf("zero Config defaults = %+v", c)
	}
	if c.HTTPListen != "" {
		t.Errorf("zero Config HTTPListen = %q, want disabled", c.HTTPListen)
	}
	if d := DefaultConfig(); d.HTTPListen != "127.0.0.1:9883" || d.Listen != "127.0.0.1:1883" {
		t.Errorf("DefaultConfig = %+v", d)
	}
	if err := (&Config{}).Validate(); err != nil {
		t.Errorf("zero Config invalid: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"port zero", Config{Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"}, ""},
		{"all interfaces", Config{Listen: ":1883"}, ""},
		{"missing port", Config{Listen: "127.0.0.1"}, "listen"},
		{"bad port", Config{Listen: "127.0.0.1:http"}, "listen"},
		{"port out of range", Config{Listen: "127.0.0.1:70000"}, "listen"},
		{"bad http", Config{HTTPListen: "nope"}, "http_listen"},
		{"same address twice", Config{Listen: "127.0.0.1:1883", HTTPListen: "127.0.0.1:1883"}, "same address"},
		{"expiry too short", Config{MaxMessageExpiry: time.Millisecond}, "max_message_expiry"},
		{"negative expiry", Config{MaxMessageExpiry: -time.Hour}, "max_message_expiry"},
		{"expiry too long", Config{MaxMessageExpiry: 200 * 365 * 24 * time.Hour}, "max_message_expiry"},
		{"cert without key", Config{TLSCert: "c.pem"}, "tls_cert and tls_key"},
		{"short close timeout", Config{CloseTimeout: time.Millisecond}, ""},
		{"negative close timeout", Config{CloseTimeout: -time.Second}, "close_timeout"},
		{"packet size too small", Config{MaxPacketSize: 1000}, "max_packet_size"},
		{"negative packet size", Config{MaxPacketSize: -1}, "max_packet_size"},
		{"no truck budget", Config{TruckMessagesPerSecond: -1, TruckBytesPerSecond: -1}, ""},
		{"truck messages too slow", Config{TruckMessagesPerSecond: 0.01}, "truck_messages_per_second"},
		{"truck bytes too slow", Config{TruckBytesPerSecond: 100}, "truck_bytes_per_second"},
		{"truck message burst", Config{TruckMessageBurst: -3}, "truck_message_burst"},
		{"truck byte burst", Config{TruckByteBurst: 10}, "truck_byte_burst"},
		{"no queue caps", Config{MaxQueuedBytes: -1, MaxQueuedBytesPerTruck: -1}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate = %v, want ErrInvalidConfig mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte("listen: 0.0.0.0:1883\ndata_dir: /var/lib/linkedge\nmax_message_expiry: 720h\nclose_timeout: 2s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:1883" || cfg.DataDir != "/var/lib/linkedge" || cfg.MaxMessageExpiry != 720*time.Hour || cfg.CloseTimeout != 2*time.Second {
		t.Errorf("cfg = %+v", cfg)
	}
	if cfg.HTTPListen != DefaultHTTPListen {
		t.Errorf("HTTPListen = %q, want the default when the key is absent", cfg.HTTPListen)
	}
	if cfg.TruckMessagesPerSecond != DefaultTruckMessagesPerSecond || cfg.TruckBytesPerSecond != DefaultTruckBytesPerSecond ||
		cfg.MaxQueuedBytes != DefaultMaxQueuedBytes || cfg.MaxQueuedBytesPerTruck != DefaultMaxQueuedBytesPerTruck {
		t.Errorf("truck budget and queue caps = %+v, want the defaults when the keys are absent", cfg)
	}
	cfg, err = ParseConfig([]byte("truck_messages_per_second: 2.5\ntruck_message_burst: 10\ntruck_bytes_per_second: 2048\ntruck_byte_burst: 4096\nmax_queued_bytes: -1\nmax_queued_bytes_per_truck: 1000\n"))
	if err != nil || cfg.TruckMessagesPerSecond != 2.5 || cfg.TruckMessageBurst != 10 || cfg.TruckBytesPerSecond != 2048 ||
		cfg.TruckByteBurst != 4096 || cfg.MaxQueuedBytes != -1 || cfg.MaxQueuedBytesPerTruck != 1000 {
		t.Errorf("truck budget and queue caps: %+v %v", cfg, err)
	}

	cfg, err = ParseConfig([]byte("http_listen: \"\"\n"))
	if err != nil || cfg.HTTPListen != "" {
		t.Errorf("explicit empty http_listen: cfg.HTTPListen=%q err=%v", cfg.HTTPListen, err)
	}
	if cfg, err = ParseConfig(nil); err != nil || cfg.Listen != DefaultListen {
		t.Errorf("empty file: %+v %v", cfg, err)
	}

	for name, doc := range map[string]string{
		"unknown key":   "listn: :1883\n",
		"bad duration":  "max_message_expiry: 90d\n",
		"two documents": "listen: :1\n---\nlisten: :2\n",
	} {
		if _, err := ParseConfig([]byte(doc)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestParseConfigLeavesValidationToCaller(t *testing.T) {
	cfg, err := ParseConfig([]byte("listen: nope\n"))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate = %v, want ErrInvalidConfig", err)
	}
	cfg.Listen = "127.0.0.1:0" // what a CLI flag override does
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate after override: %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path + ".missing"); err == nil {
		t.Error("missing file accepted")
	}
}
