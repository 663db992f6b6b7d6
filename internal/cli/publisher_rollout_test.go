package cli

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/linkedge/linkedge/publisher"
)

// TestRolloutFlags: the canary flags make a policy, change the file's, or
// (--no-rollout) drop it; without them the file's policy stands.
func TestRolloutFlags(t *testing.T) {
	dir := t.TempDir()
	withPolicy := filepath.Join(dir, "with.yaml")
	os.WriteFile(withPolicy, []byte("broker: tcp://127.0.0.1:1883\nregistry_dir: "+dir+"\nkey_file: k.pem\nrollout:\n  groups: [early]\n  soak: 2h\n"), 0o644)
	without := filepath.Join(dir, "without.yaml")
	os.WriteFile(without, []byte("broker: tcp://127.0.0.1:1883\nregistry_dir: "+dir+"\nkey_file: k.pem\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want *publisher.RolloutConfig
	}{
		{"file only", []string{"--config", withPolicy}, &publisher.RolloutConfig{Groups: []string{"early"}, Soak: 2 * time.Hour}},
		{"no policy", []string{"--config", without}, nil},
		{"flags make one", []string{"--config", without, "--canary-percent", "5", "--canary-soak", "30m"}, &publisher.RolloutConfig{Percent: 5, Soak: 30 * time.Minute}},
		{"flags change the file's", []string{"--config", withPolicy, "--canary-groups", "a,b", "--canary-halt-after", "2"}, &publisher.RolloutConfig{Groups: []string{"a", "b"}, Soak: 2 * time.Hour, HaltAfter: 2}},
		{"--no-rollout drops it", []string{"--config", withPolicy, "--no-rollout"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rf rolloutFlags
			f := publisherFlags{}
			cmd := newPublisherCmd()
			cmd.ResetFlags()
			f.register(cmd)
			rf.register(cmd)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := f.publisherConfig(cmd)
			if err != nil {
				t.Fatal(err)
			}
			rf.apply(cmd, &cfg)
			got := cfg.Rollout
			switch {
			case tc.want == nil && got != nil:
				t.Fatalf("rollout %+v, want none", got)
			case tc.want != nil && (got == nil || got.Percent != tc.want.Percent || got.Soak != tc.want.Soak ||
				got.HaltAfter != tc.want.HaltAfter || !slices.Equal(got.Groups, tc.want.Groups)):
				t.Fatalf("rollout %+v, want %+v", got, tc.want)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
		})
	}
}
