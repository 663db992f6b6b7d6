package fleetsim

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// TestPinAndCanary drives the two ways a release picks trucks: a signed
// per-truck pin on linkedge/v1/trucks/{truck}/desired, and a canary target
// for a group. The publisher announces v2 to everyone meanwhile.
func TestPinAndCanary(t *testing.T) { forEachProfile(t, testPinAndCanary) }

func testPinAndCanary(t *testing.T, profile broker.Profile) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 2, Probation: 200 * time.Millisecond, HTTPClients: -1, Profile: profile})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t1, t2 := f.Trucks[0], f.Trucks[1]
	var entries []localreg.Entry
	for _, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		e, err := f.Register(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.Approve(e.Model, e.Version, "test"); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	if err := WaitVersion(ctx, 2, t1, t2); err != nil {
		t.Fatal(err)
	}
	priv, err := release.ReadPrivateKeyFile(f.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	target := func(e localreg.Entry) release.Target {
		return release.Target{Version: e.Version, Runtime: release.Runtime{Kind: release.RuntimeInProcess},
			Source: release.Source{Registry: release.RegistryLocal},
			Artifact: release.Artifact{URL: f.Publisher.ArtifactBaseURL() + publisher.ArtifactPath(e.Model, e.Version),
				SHA256: e.SHA256, Size: e.Size, MediaType: release.MediaTypeBundle}}
	}
	sign := func(r release.Release) []byte {
		now := time.Now()
		r.Schema, r.Model, r.Serial, r.IssuedAt, r.ExpiresAt = release.Schema, "aps-failure", now.UnixMilli()+1000, now, now.Add(time.Hour)
		data, err := release.Sign(&r, priv)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}

	// Pin truck 2 to v1 (as `linkedge pin` does): only truck 2 moves.
	pcfg := publisher.Config{Broker: f.BrokerURL, RegistryDir: f.Registry.Dir(), KeyFile: f.KeyFile(),
		ArtifactBaseURL: f.Publisher.ArtifactBaseURL(), Logger: f.opts.Logger}
	if _, err := publisher.Pin(ctx, pcfg, t2.ID, "aps-failure", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := publisher.Pin(ctx, pcfg, t2.ID, "aps-failure", 9); !errors.Is(err, publisher.ErrUnknownVersion) {
		t.Fatalf("pin to a missing version: %v", err)
	}
	if err := WaitVersion(ctx, 1, t2); err != nil {
		t.Fatal(err)
	}
	if v := t1.Version(); v != 2 {
		t.Fatalf("truck 1 moved to v%d with a pin meant for truck 2", v)
	}
	// The pin survives a restart, and outranks a newer fleet release.
	if err := t2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	publishRetained(t, f.BrokerURL, topics.ModelRelease("aps-failure"), sign(release.Release{Stable: target(entries[1])}))
	time.Sleep(time.Second)
	if st := t2.Agent.Status(); st.Version != 1 || st.LastError != "" {
		t.Fatalf("pinned truck after a restart and a new fleet release: %+v", st)
	}
	// Clear the pin: truck 2 follows the fleet release again.
	if _, err := publisher.Unpin(ctx, pcfg, t2.ID, "aps-failure"); err != nil {
		t.Fatal(err)
	}
	if err := WaitVersion(ctx, 2, t2); err != nil {
		t.Fatal(err)
	}
	// Pins and releases keep separate serials: after a restart the fleet's
	// release (older than the pin was) is not refused as stale.
	if err := t2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if st := t2.Agent.Status(); st.Version != 2 || st.LastError != "" {
		t.Fatalf("after clearing the pin and restarting: %+v", st)
	}

	// A canary for group "early": truck 1 joins the group and runs it,
	// truck 2 stays on the stable version.
	if err := t1.RestartWith(ctx, func(c *edgeclient.Config) { c.Groups = []string{"early"} }); err != nil {
		t.Fatal(err)
	}
	canary := &release.Canary{Target: target(entries[0]), Groups: []string{"early"}}
	publishRetained(t, f.BrokerURL, topics.ModelRelease("aps-failure"), sign(release.Release{Stable: target(entries[1]), Canary: canary}))
	if err := WaitVersion(ctx, 1, t1); err != nil {
		t.Fatalf("%v: %+v", err, t1.Agent.Status())
	}
	time.Sleep(500 * time.Millisecond)
	if st := t2.Agent.Status(); st.Version != 2 || strings.Contains(st.LastError, "refused") {
		t.Fatalf("truck 2 outside the canary group: %+v", st)
	}
}
