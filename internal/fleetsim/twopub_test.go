package fleetsim

import (
	"context"
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
)

// TestTwoPublishers: a second publisher runs beside the fleet's for
// availability (same registry and key, its own state file, client id and
// replica number). Every approval reaches every truck; no truck refuses a
// document (an equivalent one signed a moment earlier and delivered late is
// not a rollback); the broker ends up retaining the highest serial; and
// with the fleet's publisher stopped the second one carries on alone.
func TestTwoPublishers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 2, Probation: 200 * time.Millisecond, HTTPClients: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ev := watchEvents(t, f.BrokerURL)
	second, err := publisher.New(publisher.Config{
		Broker: f.BrokerURL, ClientID: "linkedge-publisher-b", Replica: 1,
		RegistryDir: f.Registry.Dir(), KeyFile: f.KeyFile(), StateFile: filepath.Join(t.TempDir(), "state-b.json"),
		PollInterval: 100 * time.Millisecond, ArtifactListen: "127.0.0.1:0", Logger: f.opts.Logger.With("part", "publisher-b"),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- second.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("the second publisher did not stop")
		}
		second.Close()
	})
	verifier := &release.Verifier{Keys: []ed25519.PublicKey{f.PubKey}}
	approve := func(data []byte) int64 {
		e, err := f.Register(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.Approve(e.Model, e.Version, "test"); err != nil {
			t.Fatal(err)
		}
		if err := WaitVersion(ctx, e.Version, f.Trucks...); err != nil {
			t.Fatal(err)
		}
		return e.Version
	}
	settled := func(version int64) {
		t.Helper()
		// Both publishers have announced, and the fleet converged: the
		// broker retains the newest document, naming version.
		if err := WaitFor(ctx, "the retained release to settle", func() bool {
			r, err := verifier.Verify(retained(t, f.BrokerURL, topics.ModelRelease("aps-failure")))
			if err != nil || r.Stable.Version != version {
				return false
			}
			for _, tr := range f.Trucks {
				if tr.Agent.Status().Serial > r.Serial {
					return false // a truck holds a newer one than the broker
				}
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		settled(approve(data))
	}
	for _, tr := range f.Trucks {
		if ev.has(tr.ID, status.EventReleaseRefused, "") {
			t.Errorf("%s refused a release with two publishers running", tr.ID)
		}
	}
	// The fleet's publisher goes; the second announces alone.
	if err := f.StopPublisher(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	settled(approve(rebundle(t, apsmodels.V1(), 3)))
}
