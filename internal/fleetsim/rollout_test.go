package fleetsim

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/publisher"
)

// TestStagedRollout runs the publisher with a rollout policy on a fleet of
// three, one of them in the "early" group: a new version reaches the early
// truck first and everyone only after the soak; a version that fails on
// the early truck is halted there and never reaches the others; a newer
// good version rolls out again.
func TestStagedRollout(t *testing.T) { forEachProfile(t, testStagedRollout) }

func testStagedRollout(t *testing.T, profile broker.Profile) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const soak = 5 * time.Second
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 3, Probation: 300 * time.Millisecond, HTTPClients: 1,
		Rollout: &publisher.RolloutConfig{Groups: []string{"early"}, Soak: soak}, Profile: profile})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	early, rest := f.Trucks[0], f.Trucks[1:]
	if err := early.RestartWith(ctx, func(c *edgeclient.Config) { c.Groups = []string{"early"} }); err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{apsmodels.V1(), apsmodels.V2(), brokenGolden(t, apsmodels.V1(), 3), rebundle(t, apsmodels.V2(), 4)} {
		if _, err := f.Register(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		if err := WaitFor(ctx, what, cond); err != nil {
			t.Fatal(err)
		}
	}

	// The first version has nothing to be compared with: everyone at once.
	f.Registry.Approve("aps-failure", 1, "test")
	if err := WaitVersion(ctx, 1, f.Trucks...); err != nil {
		t.Fatal(err)
	}

	// v2: the early truck first.
	approved := time.Now()
	f.Registry.Approve("aps-failure", 2, "test")
	wait("v2 on the early truck", func() bool { return all([]*Truck{early}, 2) })
	earlyAt := time.Since(approved)
	for _, tr := range rest {
		if st := tr.Agent.Status(); st.Version != 1 || st.Desired == 2 {
			t.Fatalf("truck %s outside the canary moved to v2 %s after approval: %+v", tr.ID, earlyAt, st)
		}
	}
	if st := stateOf(t, f); st.Announced.Version != 1 || st.Announced.Canary == nil || st.Announced.Canary.Version != 2 {
		t.Fatalf("announced during the canary: %+v", st.Announced)
	}
	if err := WaitVersion(ctx, 2, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	promotedAt := time.Since(approved)
	if promotedAt < soak {
		t.Fatalf("promoted %s after approval, before the %s soak", promotedAt, soak)
	}
	t.Logf("v2: early truck committed %s after approval, every truck %s after (soak %s)", earlyAt.Round(time.Millisecond), promotedAt.Round(time.Millisecond), soak)

	// v3's golden samples do not match its model: the early truck refuses
	// it, the publisher halts the rollout, nobody else ever tries it.
	f.Registry.Approve("aps-failure", 3, "test")
	approved = time.Now()
	var others3 []string
	wait("the v3 rollout halted", func() bool {
		for _, tr := range rest {
			if st := tr.Agent.Status(); st.Desired == 3 {
				others3 = append(others3, tr.ID)
			}
		}
		r := stateOf(t, f).Rollout
		return r != nil && r.Version == 3 && r.Halted()
	})
	if len(others3) > 0 {
		t.Fatalf("trucks outside the canary were sent v3: %v", others3)
	}
	st := stateOf(t, f)
	t.Logf("v3 halted %s after approval: %s", time.Since(approved).Round(time.Millisecond), st.Rollout.HaltReason)
	if !strings.Contains(st.Rollout.HaltReason, early.ID) || st.Announced.Canary != nil || st.Announced.Version != 2 {
		t.Fatalf("after the halt: rollout %+v, announced %+v", st.Rollout, st.Announced)
	}
	// The metric counts once the halt is in the state file, a moment
	// after it.
	wait("the halt counted", func() bool { return haltedMetric(t, f) >= 1 })
	if n := haltedMetric(t, f); n != 1 {
		t.Fatalf("linkedge_publisher_rollouts_halted_total = %v, want 1", n)
	}
	// The early truck kept serving v2 (its phase says the v3 update failed).
	if !serving(f.Trucks, 2) {
		t.Fatalf("after the halt, not every truck serves v2: early %+v", early.Agent.Status())
	}

	// A restarted publisher remembers the halt and announces nothing new.
	serial := st.Announced.Serial
	if err := f.StopPublisher(); err != nil {
		t.Fatal(err)
	}
	if err := f.StartPublisher(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * f.opts.PollInterval)
	if st := stateOf(t, f); st.Announced.Serial != serial || !st.Rollout.Halted() {
		t.Fatalf("after a restart: announced serial %d (was %d), rollout %+v", st.Announced.Serial, serial, st.Rollout)
	}

	// A newer good version is not held back by the halted one.
	f.Registry.Approve("aps-failure", 4, "test")
	wait("v4 on the early truck", func() bool { return all([]*Truck{early}, 4) })
	if err := WaitVersion(ctx, 4, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	if st := stateOf(t, f); st.Rollout != nil || st.Announced.Canary != nil {
		t.Fatalf("after promoting v4: rollout %+v, canary %+v", st.Rollout, st.Announced.Canary)
	}
}

// brokenGolden rebundles data as version with its golden samples' expected
// scores changed, so the truck's check before the switch fails: a model
// that the registry accepts but that does not do what it claims.
func brokenGolden(t *testing.T, data []byte, version int64) []byte {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(data), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b.Meta.Version = version
	for i := range b.Meta.Golden {
		g := &b.Meta.Golden[i]
		g.Score = 1 - g.Score
		if g.Label == b.Meta.Labels[0] {
			g.Label = b.Meta.Labels[1]
		} else {
			g.Label = b.Meta.Labels[0]
		}
	}
	var out bytes.Buffer
	if err := bundle.Write(&out, b.Meta, b.ONNX); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func stateOf(t *testing.T, f *Fleet) *publisher.ModelState {
	t.Helper()
	st, err := publisher.NewStateFile(filepath.Join(f.Registry.Dir(), publisher.DefaultStateFileName)).Load()
	if err != nil {
		t.Fatal(err)
	}
	ms := st.Models["aps-failure"]
	if ms == nil || ms.Announced == nil {
		t.Fatal("nothing announced for aps-failure")
	}
	return ms
}

func haltedMetric(t *testing.T, f *Fleet) float64 {
	t.Helper()
	mfs, err := f.Publisher.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "linkedge_publisher_rollouts_halted_total" {
			for _, m := range mf.GetMetric() {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
