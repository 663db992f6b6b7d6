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
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/topics"
)

// TestAlertsStoreAndForward: a truck whose link is down keeps the alerts
// its model raises on the local bus, across an agent restart, and forwards
// every one, once, when the link is back; readings that are not alerts stay
// on the truck.
func TestAlertsStoreAndForward(t *testing.T) { forEachProfile(t, testAlertsStoreAndForward) }

func testAlertsStoreAndForward(t *testing.T, profile broker.Profile) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 1, Probation: 300 * time.Millisecond, HTTPClients: -1, SensorInterval: time.Hour, Profile: profile})
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
		batch, _ := server.DecodeForwarded(m.Payload())
		for _, p := range batch {
			if strings.HasPrefix(p.ID, "fwd-") {
				mu.Lock()
				got = append(got, p)
				mu.Unlock()
			}
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
	// And the broker's acks reach the truck before the cut: an alert whose
	// ack the cut lost is rightly sent again, which this test would count
	// as a duplicate.
	waitForwardQueue(t, ctx, tr, 0)
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

// TestForwardWaitsForItsOwnAck: a forwarded prediction leaves the truck's
// queue only once the broker acknowledged it on the connection it was sent
// on. The fleet broker here takes the prediction and never acknowledges it;
// the link drops and comes back. paho (persistent session) then resends its
// copy, and completes the original publish's token without any ack: a
// forwarder that trusted the token dropped the prediction from its disk
// queue, and the ignition-off that follows lost it for good.
func TestForwardWaitsForItsOwnAck(t *testing.T) {
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
	topic := topics.TruckPredictions(tr.ID, "aps-failure")
	hold := &unackedPublishes{topic: topic, id: "held-1"}
	hold.on.Store(true)
	if err := f.Broker.Server().AddHook(hold, nil); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := 0
	cloud := paho.NewClient(paho.NewClientOptions().AddBroker(f.BrokerURL).SetClientID("ops-held").SetCleanSession(false))
	if tok := cloud.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cloud.Disconnect(0)
	if tok := cloud.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		batch, _ := server.DecodeForwarded(m.Payload())
		for _, p := range batch {
			if p.ID == "held-1" {
				mu.Lock()
				got++
				mu.Unlock()
			}
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	pos, _ := goldenRows(t, apsmodels.V1())
	local := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + tr.Agent.LocalBrokerAddr()).SetClientID("test-sensor"))
	if tok := local.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer local.Disconnect(0)
	reading, _ := json.Marshal(map[string]any{"id": "held-1", "features": pos})
	if tok := local.Publish(topics.LocalReadings("aps-failure"), 1, false, reading); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if err := WaitFor(ctx, "the broker to take the alert", func() bool { return hold.sent() >= 1 }); err != nil {
		t.Fatal(err)
	}
	waitForwardQueue(t, ctx, tr, 1)

	tr.Link.Cut()
	if err := WaitFor(ctx, "the truck offline", func() bool { return !tr.Agent.Status().Online }); err != nil {
		t.Fatal(err)
	}
	before := hold.sent()
	tr.Link.Restore()
	if err := WaitFor(ctx, "paho to resend its copy", func() bool { return hold.resent() >= 1 }); err != nil {
		t.Fatal(err)
	}
	// The forwarder did not take paho's completed token for an ack: it
	// sends the alert again, from its queue, on the new connection.
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if err := WaitFor(wctx, "the forwarder to send the alert again", func() bool { return hold.sent() > before }); err != nil {
		t.Fatalf("%v; the prediction left the queue without an ack (%d queued)", err, forwardQueued(tr))
	}
	if n := forwardQueued(tr); n != 1 {
		t.Fatalf("%d predictions queued, want the unacknowledged one", n)
	}

	// Ignition off and on, with nothing acknowledged yet: the alert is
	// still on disk, and the broker, answering again, gets it.
	hold.on.Store(false)
	local.Disconnect(0)
	if err := tr.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, "the alert in the cloud", func() bool { mu.Lock(); defer mu.Unlock(); return got >= 1 }); err != nil {
		t.Fatalf("%v: the unacknowledged prediction was lost", err)
	}
	waitForwardQueue(t, ctx, tr, 0)
}

// unackedPublishes is a broker hook that, while on, takes the truck's
// publishes of one prediction and drops them without a PUBACK, as when the
// ack is lost on the way back; it counts first sends and paho's resends
// (DUP set) apart.
type unackedPublishes struct {
	mqtt.HookBase
	topic, id   string
	on          atomic.Bool
	first, dups atomic.Int32
}

func (h *unackedPublishes) ID() string { return "test-unacked-publishes" }

func (h *unackedPublishes) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *unackedPublishes) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	batch, err := server.DecodeForwarded(pk.Payload)
	if !h.on.Load() || pk.TopicName != h.topic || err != nil || !slices.ContainsFunc(batch, func(p server.PredictionMessage) bool { return p.ID == h.id }) {
		return pk, nil
	}
	if pk.FixedHeader.Dup {
		h.dups.Add(1)
	} else {
		h.first.Add(1)
	}
	return pk, packets.ErrRejectPacket
}

// sent counts the copies published afresh (by the forwarder); resent the
// copies paho resent from its session.
func (h *unackedPublishes) sent() int   { return int(h.first.Load()) }
func (h *unackedPublishes) resent() int { return int(h.dups.Load()) }

func forwardQueued(tr *Truck) int {
	mfs, err := tr.Agent.Registry().Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == "linkedge_agent_forward_queued" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	return -1
}

func waitForwardQueue(t *testing.T, ctx context.Context, tr *Truck, n int) {
	t.Helper()
	err := WaitFor(ctx, fmt.Sprintf("%d alerts queued", n), func() bool { return forwardQueued(tr) == n })
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
