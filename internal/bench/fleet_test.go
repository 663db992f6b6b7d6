package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// TestFleetSmoke runs every scenario of `linkedge bench fleet` on a small
// fleet: the real broker and publisher as child processes, simulated trucks
// here. Every truck must reach every goal, each announcement must reach the
// fleet once (no re-announcement, also after the publisher is killed
// mid-rollout), and the broker must drop nothing.
func TestFleetSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker and a publisher as child processes and 30 agents")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := RunFleet(ctx, FleetConfig{
		Trucks: 30, ConnectRate: 200, CanaryPercent: 10, CanarySoak: time.Second, LinkRate: 200_000, Settle: time.Second,
		Exe: testbin.Linkedge(t), Dir: t.TempDir(), TruckDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep.Markdown())
	wantReleases := map[string]int{"connect": 0, "update": 1, "broker restart": 0}
	if len(rep.Phases) != 5 {
		t.Fatalf("%d scenarios, want 5", len(rep.Phases))
	}
	for _, p := range rep.Phases {
		if p.Done != p.Trucks || p.Trucks != 30 {
			t.Errorf("%s: %d of %d trucks reached the goal: %s", p.Name, p.Done, p.Trucks, p.Note)
		}
		if p.Dropped != 0 {
			t.Errorf("%s: the broker dropped %d messages", p.Name, p.Dropped)
		}
		want, ok := wantReleases[p.Name]
		if !ok {
			want = 2 // a staged rollout: the canary, then the promotion
		}
		if p.Releases != want {
			t.Errorf("%s: the fleet saw %d release documents, want %d", p.Name, p.Releases, want)
		}
		if strings.Contains(p.Name, "rollout") && p.ArtifactBytes < 30*(rep.Artifact-100) { // v2 and v3 differ by a few bytes
			t.Errorf("%s: the artifact server sent %d bytes, less than 30 artifacts of %d", p.Name, p.ArtifactBytes, rep.Artifact)
		}
		if p.Broker.CPU <= 0 || p.Broker.RSS <= 0 || p.Publisher.RSS <= 0 {
			t.Errorf("%s: no usage sampled: broker %+v, publisher %+v", p.Name, p.Broker, p.Publisher)
		}
	}
	if rep.ConnectedRSS <= 0 || rep.ConnectedHeap <= 0 || rep.ConnectedStacks <= 0 {
		t.Errorf("broker memory with the fleet connected: RSS %d, heap %d, stacks %d; want all > 0", rep.ConnectedRSS, rep.ConnectedHeap, rep.ConnectedStacks)
	}
	if rep.SettledRSS <= 0 || rep.SettledHeap <= 0 || !strings.Contains(rep.Markdown(), "after 1s more") {
		t.Errorf("no settled sample of the broker's memory: RSS %d, heap %d", rep.SettledRSS, rep.SettledHeap)
	}
}
