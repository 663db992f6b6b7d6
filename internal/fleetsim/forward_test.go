package fleetsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/topics"
)

// TestAlertsStoreAndForward: a truck whose link is down keeps the alerts
// its model raises on the local bus, across an agent restart, and forwards
// every one, once, when the link is back; readings that are not alerts stay
// on the truck.
func TestAlertsStoreAndForward(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 1, Probation: 300 * time.Millisecond, HTTPClients: -1, SensorInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := f.Trucks[0]
	if _, err := f.Register(ctx, apsmodels.V1()); err != nil {
		t.Fatal(err)
	}
	f.Registry.Approve("aps-failure", 1, "test")
	if err := WaitVersion(ctx, 1, tr); err != nil {
		t.Fatal(err)
	}

	// The operator's side: a persistent session on the truck's prediction topic.
	var mu sync.Mutex
	var got []server.PredictionMessage
	cloud := paho.NewClient(paho.NewClientOptions().AddBroker(f.BrokerURL).SetClientID("ops-alerts").SetCleanSession(false))
	if tok := cloud.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cloud.Disconnect(0)
	if tok := cloud.Subscribe(topics.TruckPredictions(tr.ID, "aps-failure"), 1, func(_ paho.Client, m paho.Message) {
		var p server.PredictionMessage
		if json.Unmarshal(m.Payload(), &p) == nil && strings.HasPrefix(p.ID, "fwd-") {
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	pos, neg := goldenRows(t, apsmodels.V1())
	local := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + tr.Agent.LocalBrokerAddr()).SetClientID("test-sensor"))
	if tok := local.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	var want []string
	send := func(n int) {
		for range n {
			id := fmt.Sprintf("fwd-%02d", len(want))
			want = append(want, id)
			for _, row := range []struct {
				id   string
				feat []any
			}{{id, pos}, {"keep-" + id, neg}} {
				b, _ := json.Marshal(map[string]any{"id": row.id, "features": row.feat})
				local.Publish(topics.LocalReadings("aps-failure"), 1, false, b).Wait()
			}
		}
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }

	// Online: alerts arrive at once.
	send(2)
	if err := WaitFor(ctx, "2 alerts online", func() bool { return count() == 2 }); err != nil {
		t.Fatal(err)
	}
	// Offline, with an agent restart in between.
	tr.Link.Cut()
	if err := WaitFor(ctx, "the truck offline", func() bool { return !tr.Agent.Status().Online }); err != nil {
		t.Fatal(err)
	}
	send(3)
	waitForwardQueue(t, ctx, tr, 3)
	local.Disconnect(0)
	if err := tr.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	local = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + tr.Agent.LocalBrokerAddr()).SetClientID("test-sensor"))
	if tok := local.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer local.Disconnect(0)
	send(2)
	waitForwardQueue(t, ctx, tr, 5)
	if count() != 2 {
		t.Fatalf("%d alerts reached the cloud while the truck was offline", count())
	}
	tr.Link.Restore()
	if err := WaitFor(ctx, "every alert forwarded", func() bool { return count() >= len(want) }); err != nil {
		t.Fatalf("%v: got %d of %d", err, count(), len(want))
	}
	time.Sleep(200 * time.Millisecond) // anything extra would show now
	mu.Lock()
	defer mu.Unlock()
	ids := make([]string, len(got))
	for i, p := range got {
		ids[i] = p.ID
		if p.Label != "pos" || p.Model != "aps-failure" || p.ModelVersion != 1 {
			t.Errorf("forwarded %+v", p)
		}
	}
	// The bridge scores readings concurrently, so predictions of readings
	// sent back to back may be made in either order; each must arrive once.
	sorted := slices.Sorted(slices.Values(ids))
	if fmt.Sprint(sorted) != fmt.Sprint(want) {
		t.Fatalf("forwarded %v, want %v, each once", ids, want)
	}
}

func waitForwardQueue(t *testing.T, ctx context.Context, tr *Truck, n int) {
	t.Helper()
	err := WaitFor(ctx, fmt.Sprintf("%d alerts queued", n), func() bool {
		mfs, err := tr.Agent.Registry().Gather()
		if err != nil {
			return false
		}
		for _, mf := range mfs {
			if mf.GetName() == "linkedge_agent_forward_queued" {
				return int(mf.GetMetric()[0].GetGauge().GetValue()) == n
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
}

// goldenRows returns the features of a golden sample labelled positive and
// of one labelled negative, as JSON values (null for a missing value).
func goldenRows(t *testing.T, data []byte) (pos, neg []any) {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(data), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range b.Meta.Golden {
		row := make([]any, len(g.Features))
		for i, v := range g.Features {
			if math.IsNaN(float64(v)) {
				row[i] = nil
			} else {
				row[i] = v
			}
		}
		if g.Label == b.Meta.Labels[1] && pos == nil {
			pos = row
		}
		if g.Label == b.Meta.Labels[0] && neg == nil {
			neg = row
		}
	}
	if pos == nil || neg == nil {
		t.Fatal("the bundle lacks a positive or a negative golden sample")
	}
	return pos, neg
}
