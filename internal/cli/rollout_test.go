package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/fleetsim"
	"github.com/linkedge/linkedge/publisher"
)

// runCLI runs one linkedge command line and returns its output.
func runCLI(ctx context.Context, args ...string) (string, error) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// TestRolloutHaltResume halts a staged rollout of a real fleet with
// `linkedge rollout halt` while its canary runs: past the soak, the trucks
// outside the canary stay on v1, and the state file and the publisher's log
// say who halted it and why. `linkedge rollout resume` then lets it reach
// every truck.
func TestRolloutHaltResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const soak = 5 * time.Second
	var logs syncBuffer
	f, err := fleetsim.Start(ctx, fleetsim.Options{Dir: t.TempDir(), Trucks: 3, Probation: 300 * time.Millisecond, HTTPClients: -1,
		Rollout: &publisher.RolloutConfig{Groups: []string{"early"}, Soak: soak},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	early, rest := f.Trucks[0], f.Trucks[1:]
	if err := early.RestartWith(ctx, func(c *edgeclient.Config) { c.Groups = []string{"early"} }); err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		if _, err := f.Register(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		if err := fleetsim.WaitFor(ctx, what, cond); err != nil {
			t.Fatal(err)
		}
	}
	stateFile := filepath.Join(f.Registry.Dir(), publisher.DefaultStateFileName)
	rollout := func() *publisher.Rollout {
		t.Helper()
		st, err := publisher.NewStateFile(stateFile).Load()
		if err != nil {
			t.Fatal(err)
		}
		if ms := st.Models["aps-failure"]; ms != nil {
			return ms.Rollout
		}
		return nil
	}
	f.Registry.Approve("aps-failure", 1, "test")
	if err := fleetsim.WaitVersion(ctx, 1, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(ctx, "rollout", "halt", "--model", "aps-failure", "--registry", f.Registry.Dir(), "--by", "olga"); !errors.Is(err, publisher.ErrNoRollout) {
		t.Fatalf("halt with no rollout running: %v, want ErrNoRollout", err)
	}

	f.Registry.Approve("aps-failure", 2, "test")
	wait("the v2 rollout started", func() bool { r := rollout(); return r != nil && r.Version == 2 && !r.StartedAt.IsZero() })
	started := rollout().StartedAt
	out, err := runCLI(ctx, "rollout", "halt", "--model", "aps-failure", "--registry", f.Registry.Dir(), "--by", "olga", "--reason", "brake alerts doubled")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "halted the rollout of aps-failure version 2") {
		t.Errorf("halt said %q", out)
	}
	if time.Since(started) >= soak {
		t.Skipf("the halt came %s after the canary started, after the %s soak: this machine is too slow for the test", time.Since(started), soak)
	}
	if _, err := runCLI(ctx, "rollout", "halt", "--model", "aps-failure", "--registry", f.Registry.Dir(), "--by", "olga"); !errors.Is(err, publisher.ErrAlreadyHeld) {
		t.Fatalf("second halt: %v, want ErrAlreadyHeld", err)
	}
	wait("the hold in the state file", func() bool {
		r := rollout()
		return r != nil && r.Hold != nil && r.Hold.HaltedBy == "olga" && r.Hold.Reason == "brake alerts doubled"
	})
	// The canary goes on while held: the early truck takes v2.
	if err := fleetsim.WaitVersion(ctx, 2, early); err != nil {
		t.Fatal(err)
	}
	// Well past the soak, with the canary committed, nothing is promoted.
	wctx, wcancel := context.WithDeadline(ctx, started.Add(soak+2*time.Second))
	<-wctx.Done()
	wcancel()
	for _, tr := range rest {
		if st := tr.Agent.Status(); st.Version != 1 || st.Desired == 2 {
			t.Fatalf("truck %s outside the canary moved to v2 while the rollout was halted: %+v", tr.ID, st)
		}
	}
	if r := rollout(); r == nil || r.Version != 2 || r.Halted() {
		t.Fatalf("rollout while held: %+v", r)
	}
	if !strings.Contains(logs.String(), "rollout halted by an operator") || !strings.Contains(logs.String(), "halted_by=olga") {
		t.Errorf("the publisher's log does not say who halted the rollout:\n%s", logs.String())
	}

	out, err = runCLI(ctx, "rollout", "resume", "--model", "aps-failure", "--registry", f.Registry.Dir(), "--by", "ivan")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "halted by olga") {
		t.Errorf("resume said %q", out)
	}
	if err := fleetsim.WaitVersion(ctx, 2, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	wait("the resumption logged", func() bool { return strings.Contains(logs.String(), "resumed_by=ivan") })
	if _, err := runCLI(ctx, "rollout", "resume", "--model", "aps-failure", "--registry", f.Registry.Dir(), "--by", "ivan"); !errors.Is(err, publisher.ErrNotHeld) {
		t.Fatalf("second resume: %v, want ErrNotHeld", err)
	}
}

// TestRolloutBadInput: each mistake is refused with what was wrong, and the
// holds file is not written.
func TestRolloutBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no model", []string{"rollout", "halt", "--registry", dir}, `required flag(s) "model" not set`},
		{"bad model", []string{"rollout", "halt", "--registry", dir, "--model", "a/b"}, "model"},
		{"no place", []string{"rollout", "halt", "--model", "m", "--registry", ""}, "--config, --registry or --state"},
		{"long reason", []string{"rollout", "halt", "--registry", dir, "--model", "m", "--reason", strings.Repeat("x", publisher.MaxHoldReason+1)}, "limit 256"},
		{"control character", []string{"rollout", "halt", "--registry", dir, "--model", "m", "--reason", "a\x1b[2Jb"}, "control character"},
		{"nobody", []string{"rollout", "halt", "--registry", dir, "--model", "m", "--by", ""}, "say who you are"},
		{"nothing running", []string{"rollout", "halt", "--registry", dir, "--model", "m"}, "no staged rollout running"},
		{"nothing to resume", []string{"rollout", "resume", "--registry", dir, "--model", "m"}, "not halted by an operator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envRegistry, "")
			_, err := runCLI(ctx, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, publisher.DefaultHoldsFileName)); err == nil {
				t.Fatalf("the holds file was written")
			}
		})
	}
}
