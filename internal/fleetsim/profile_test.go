package fleetsim

import (
	"context"
	"testing"
	"time"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference/apsmodels"
)

// forEachProfile runs an end-to-end test against the embedded broker as
// LinkEdge ships it and against the same broker enforcing AWS IoT Core's
// limits (broker.ProfileAWSIoTCore), with the trucks connecting under
// their thing names.
func forEachProfile(t *testing.T, test func(*testing.T, broker.Profile)) {
	t.Run("mochi", func(t *testing.T) { test(t, broker.ProfileNone) })
	t.Run("aws-iot-core", func(t *testing.T) { test(t, broker.ProfileAWSIoTCore) })
}

// TestIoTCoreTruckAwayPastSessionExpiry: on AWS IoT Core a persistent
// session lives an hour (here 2 s); a truck away longer has lost it, with
// the release queued in it. It must still catch up, through the retained
// release it gets when it subscribes again.
func TestIoTCoreTruckAwayPastSessionExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 2, Probation: 200 * time.Millisecond, HTTPClients: -1,
		Profile: broker.ProfileAWSIoTCore, SessionExpiry: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	away, home := f.Trucks[0], f.Trucks[1]
	approve := func(data []byte) {
		t.Helper()
		e, err := f.Register(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.Approve(e.Model, e.Version, "e2e"); err != nil {
			t.Fatal(err)
		}
	}
	approve(apsmodels.V1())
	if err := WaitVersion(ctx, 1, f.Trucks...); err != nil {
		t.Fatal(err)
	}

	away.Link.Cut()
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := WaitFor(wctx, "the session of the truck away to expire", func() bool {
		_, ok := f.Broker.Server().Clients.Get(away.ID)
		return !ok
	}); err != nil {
		t.Fatal(err)
	}
	approve(apsmodels.V2())
	if err := WaitVersion(wctx, 2, home); err != nil {
		t.Fatal(err)
	}
	if v := away.Version(); v != 1 {
		t.Fatalf("the truck away serves v%d", v)
	}
	away.Link.Restore()
	if err := WaitVersion(wctx, 2, away); err != nil {
		t.Fatalf("the truck back after its session expired did not catch up: %v; status %+v", err, away.Agent.Status())
	}
}
