package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A reconnect, and an agent restart, to a session the broker kept neither
// subscribes again nor has the retained release sent again; a release
// published meanwhile still arrives.
func TestReconnectKeepsSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: t.TempDir(), Probation: 300 * time.Millisecond, HTTPClients: -1})
	const docs, subs = "linkedge_agent_fleet_documents_received_total", "linkedge_agent_fleet_subscribes_total"
	reg := tr.Agent.Registry()
	d0, s0 := counterValue(t, reg, docs), counterValue(t, reg, subs)
	if s0 != 1 {
		t.Fatalf("%v subscribes on the first connect, want 1", s0)
	}
	online := func(want bool) {
		t.Helper()
		if err := WaitFor(ctx, fmt.Sprintf("online=%v", want), func() bool { return tr.agent().Status().Online == want }); err != nil {
			t.Fatal(err)
		}
	}
	tr.Link.Cut()
	online(false)
	tr.Link.Restore()
	online(true)
	time.Sleep(500 * time.Millisecond) // a retained copy would arrive by now
	if d, s := counterValue(t, reg, docs), counterValue(t, reg, subs); d != d0 || s != s0 {
		t.Fatalf("after a reconnect: %v documents (was %v), %v subscribes (was %v); want no change", d, d0, s, s0)
	}

	if err := tr.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	online(true)
	time.Sleep(500 * time.Millisecond)
	reg = tr.agent().Registry()
	if d, s := counterValue(t, reg, docs), counterValue(t, reg, subs); d != 0 || s != 0 {
		t.Fatalf("after a restart: %v documents, %v subscribes; want none (the session and the documents on disk suffice)", d, s)
	}
	approveBundle(ctx, t, f, apsmodels.V2())
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatalf("a release on the kept session: %v", err)
	}
}

// An update's phases go out as a handful of status messages, not one per
// phase, and "committed" once.
func TestUpdateStatusesCoalesced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: t.TempDir(), Probation: 300 * time.Millisecond, HTTPClients: -1})
	var mu sync.Mutex
	var phases []string
	c := paho.NewClient(paho.NewClientOptions().AddBroker(f.BrokerURL).SetClientID("status-watch"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.Subscribe(topics.TruckStatus(tr.ID), 1, func(_ paho.Client, m paho.Message) {
		var st status.Status
		// The update's statuses; fleetsim's 5 s heartbeat may add others.
		if json.Unmarshal(m.Payload(), &st) == nil && !m.Retained() && st.Desired == 2 {
			mu.Lock()
			phases = append(phases, st.Phase)
			mu.Unlock()
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	approveBundle(ctx, t, f, apsmodels.V2())
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	committed := 0
	for _, p := range phases {
		if p == "committed" {
			committed++
		}
	}
	if len(phases) > 4 || committed != 1 || phases[len(phases)-1] != "committed" {
		t.Fatalf("status messages during the update: %v; want at most 4, ending with one committed", phases)
	}
	t.Logf("status messages during the update: %v", phases)
}

// Alerts raised together travel together: 40 alerts in a burst reach the
// cloud, each once, in a handful of messages.
func TestForwardBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: t.TempDir(), Probation: 300 * time.Millisecond, HTTPClients: -1, SensorInterval: time.Hour})
	var mu sync.Mutex
	messages, ids := 0, map[string]int{}
	cloud := paho.NewClient(paho.NewClientOptions().AddBroker(f.BrokerURL).SetClientID("batch-watch"))
	if tok := cloud.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cloud.Disconnect(100)
	if tok := cloud.Subscribe(topics.TruckPredictions(tr.ID, "aps-failure"), 1, func(_ paho.Client, m paho.Message) {
		batch, err := server.DecodeForwarded(m.Payload())
		if err != nil {
			t.Errorf("forwarded message: %v", err)
			return
		}
		mu.Lock()
		messages++
		for _, p := range batch {
			ids[p.ID]++
		}
		mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pos, _ := goldenRows(t, apsmodels.V1())
	local := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + tr.Agent.LocalBrokerAddr()).SetClientID("burst-sensor"))
	if tok := local.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer local.Disconnect(100)
	const n = 40
	for i := range n {
		b, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("burst-%02d", i), "features": pos})
		local.Publish(topics.LocalReadings("aps-failure"), 0, false, b)
	}
	if err := WaitFor(ctx, "40 alerts in the cloud", func() bool { mu.Lock(); defer mu.Unlock(); return len(ids) == n }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for id, k := range ids {
		if k != 1 {
			t.Errorf("%s arrived %d times", id, k)
		}
	}
	if messages > 5 {
		t.Fatalf("%d alerts took %d messages; want them batched", n, messages)
	}
	t.Logf("%d alerts in %d messages", n, messages)
}
