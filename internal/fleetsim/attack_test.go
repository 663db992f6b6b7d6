package fleetsim

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
)

// The attack suite: each test is one row of the security review
// (docs/security.md), run against a real broker, publisher and agent.
// fleetsim's broker takes anonymous clients, which stand for any account
// that could write the topic (the broker's ACL tests say which can).

// A1: a signed document replayed on a truck's desired topic (an old model
// release, another truck's pin) is not a pin: the truck stays where it is.
func TestAttackReplayedDocumentIsNoPin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: t.TempDir(), Probation: 300 * time.Millisecond, HTTPClients: -1})
	oldRelease := retained(t, f.BrokerURL, topics.ModelRelease("aps-failure"))
	approveBundle(ctx, t, f, apsmodels.V2())
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatal(err)
	}
	// Another truck's pin, signed with the fleet's own key.
	pcfg := publisher.Config{Broker: f.BrokerURL, RegistryDir: f.Registry.Dir(), KeyFile: f.KeyFile(),
		ArtifactBaseURL: f.Publisher.ArtifactBaseURL(), Logger: f.opts.Logger}
	otherPin, err := publisher.Pin(ctx, pcfg, "truck-9", "aps-failure", 1)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := release.ReadPrivateKeyFile(f.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	otherPin.Signature = nil
	otherDoc, err := release.Sign(otherPin, priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, replay := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"the v1 model release", oldRelease, "arrived as a pin"},
		{"truck-9's pin", otherDoc, `is for truck "truck-9"`},
	} {
		publishRetained(t, f.BrokerURL, topics.TruckDesired(tr.ID), replay.doc)
		if err := WaitFor(ctx, "the refusal", func() bool { return strings.Contains(tr.Agent.Status().LastError, replay.want) }); err != nil {
			t.Fatalf("%s replayed as a pin: %v; status %+v", replay.name, err, tr.Agent.Status())
		}
		time.Sleep(500 * time.Millisecond) // an update would have begun by now
		if st := tr.Agent.Status(); st.Version != 2 || st.Desired != 2 {
			t.Fatalf("%s replayed as a pin moved the truck: %+v", replay.name, st)
		}
	}
}

// A2: an empty retained message on the desired topic does not clear an
// operator's pin; the signed clearing document does.
func TestAttackUnsignedClearKeepsThePin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: t.TempDir(), Probation: 300 * time.Millisecond, HTTPClients: -1})
	approveBundle(ctx, t, f, apsmodels.V2())
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatal(err)
	}
	pcfg := publisher.Config{Broker: f.BrokerURL, RegistryDir: f.Registry.Dir(), KeyFile: f.KeyFile(),
		ArtifactBaseURL: f.Publisher.ArtifactBaseURL(), Logger: f.opts.Logger}
	if _, err := publisher.Pin(ctx, pcfg, tr.ID, "aps-failure", 1); err != nil {
		t.Fatal(err)
	}
	if err := WaitVersion(ctx, 1, tr); err != nil {
		t.Fatal(err)
	}
	publishRetained(t, f.BrokerURL, topics.TruckDesired(tr.ID), nil)
	if err := WaitFor(ctx, "the refusal", func() bool { return strings.Contains(tr.Agent.Status().LastError, "clears nothing") }); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	time.Sleep(500 * time.Millisecond)
	if st := tr.Agent.Status(); st.Version != 1 || st.Desired != 1 {
		t.Fatalf("an unsigned clear moved the pinned truck: %+v", st)
	}
	// The signed clear hands it back to the model's release, also after a
	// restart.
	if _, err := publisher.Unpin(ctx, pcfg, tr.ID, "aps-failure"); err != nil {
		t.Fatal(err)
	}
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatal(err)
	}
	if err := tr.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if st := tr.agent().Status(); st.Version != 2 || st.Desired != 2 {
		t.Fatalf("after the clear and a restart: %+v", st)
	}
}
