package cli

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/linkedge/linkedge/broker"
)

// TestBrokerProfile: --profile and the config file's profile key reach the
// broker's config, the flag over the file, and an unknown profile is an
// invalid config.
func TestBrokerProfile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(file, []byte("profile: aws-iot-core\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want broker.Profile
	}{
		{nil, broker.ProfileNone},
		{[]string{"--profile", "aws-iot-core"}, broker.ProfileAWSIoTCore},
		{[]string{"--config", file}, broker.ProfileAWSIoTCore},
		{[]string{"--config", file, "--profile", ""}, broker.ProfileNone},
		{[]string{"--profile", "emqx"}, "emqx"},
	}
	for _, tt := range tests {
		cmd := newBrokerCmd()
		if err := cmd.ParseFlags(tt.args); err != nil {
			t.Fatal(err)
		}
		var f brokerFlags
		f.config, _ = cmd.Flags().GetString("config")
		f.profile, _ = cmd.Flags().GetString("profile")
		cfg, err := brokerConfig(cmd, f)
		if tt.want == "emqx" {
			if !errors.Is(err, broker.ErrInvalidConfig) {
				t.Errorf("%v: %v, want ErrInvalidConfig", tt.args, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if cfg.Profile != tt.want {
			t.Errorf("%v: profile %q, want %q", tt.args, cfg.Profile, tt.want)
		}
	}
}
