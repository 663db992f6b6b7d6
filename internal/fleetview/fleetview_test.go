package fleetview

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// TestEventsAndLastWill: events are kept per truck, the newest
// EventsPerTruck of them, by the topic's truck; a last will (offline, no
// version) keeps the version the truck reported before; OnChange hears
// every change.
func TestEventsAndLastWill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, url := startBroker(ctx, t)
	var changes atomic.Int64
	v, err := Open(ctx, Config{Broker: url, Events: true, EventsPerTruck: 5, OnChange: func(string, string) { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	defer v.Close() // idempotent
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-truck"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	pub := func(topic string, doc any) {
		t.Helper()
		data, _ := json.Marshal(doc)
		if tok := c.Publish(topic, 1, false, data); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	seen := time.Now().UTC().Truncate(time.Second)
	pub(topics.TruckStatus("truck-1"), status.Status{Schema: status.Schema, Online: true, Model: "m", Version: 3, Desired: 3, Phase: "committed", LastSeen: seen})
	for i := range 8 {
		pub(topics.TruckEvents("truck-1"), status.Event{Schema: status.Schema, Truck: "someone-else", Kind: status.EventUpdateStarted, Version: int64(i + 1), Time: seen})
	}
	pub(topics.TruckStatus("truck-1"), map[string]any{"schema": status.Schema, "truck": "truck-1", "model": "m", "online": false, "phase": "offline"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, evs, ok := v.Truck("truck-1")
		if ok && !s.Online && len(evs) == 5 && evs[4].Version == 8 {
			if s.Version != 3 || s.Desired != 3 || !s.LastSeen.Equal(seen) || evs[0].Version != 4 || evs[0].Truck != "truck-1" {
				t.Fatalf("status %+v, events %+v", s, evs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for truck-1 offline with 5 events: %+v %+v", s, evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := changes.Load(); n < 10 {
		t.Errorf("OnChange heard %d changes, want 10", n)
	}
	if _, _, ok := v.Truck("someone-else"); ok {
		t.Error("an event's own truck member made a truck")
	}
}

// TestPresence: a truck's last will on its presence topic shows it offline
// with its retained status intact (version, phase), and the one-word
// presence it sends on reconnecting shows it online again, with no new
// status.
func TestPresence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, url := startBroker(ctx, t)
	v, err := Open(ctx, Config{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	const id = "truck-1"
	truck := func() paho.Client {
		t.Helper()
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("linkedge-truck-"+id).SetCleanSession(false).
			SetBinaryWill(topics.TruckPresence(id), []byte(status.PresenceOffline), topics.PresenceQoS, topics.PresenceRetain))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		if tok := c.Publish(topics.TruckPresence(id), topics.PresenceQoS, topics.PresenceRetain, status.PresenceOnline); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		return c
	}
	want := func(what string, online bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			s, _, ok := v.Truck(id)
			snap := v.Snapshot().Trucks[id]
			if ok && s.Online == online && snap.Online == online {
				if s.Version != 3 || s.Phase != "committed" {
					t.Fatalf("%s: status %+v, want version 3 committed kept", what, s)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: truck %+v (known %v), want online=%v", what, s, ok, online)
			}
		}
	}
	c := truck()
	data, _ := json.Marshal(status.Status{Schema: status.Schema, Truck: id, Online: true, Model: "m", Version: 3, Desired: 3, Phase: "committed", LastSeen: time.Now().UTC()})
	if tok := c.Publish(topics.TruckStatus(id), topics.StatusQoS, topics.StatusRetain, data); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	want("connected", true)

	// The link dies without a DISCONNECT: the broker publishes the will.
	cl, ok := b.Server().Clients.Get("linkedge-truck-" + id)
	if !ok {
		t.Fatal("the truck's client is not on the broker")
	}
	cl.Stop(errors.New("link cut"))
	want("after the will", false)

	c = truck()
	defer c.Disconnect(100)
	want("reconnected", true)

	// A fresh view, from the retained messages alone, agrees.
	v2, err := Open(ctx, Config{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	v = v2
	want("a fresh view", true)
}

// TestGroupsAndForwarded: a truck's groups come with its status, and with
// OnForwarded set the view hears each forwarded batch, by the topic's truck
// and model, with each prediction's time; a batch it cannot read is
// dropped.
func TestGroupsAndForwarded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, url := startBroker(ctx, t)
	type batch struct {
		truck, model string
		made         []time.Time
	}
	got := make(chan batch, 10)
	v, err := Open(ctx, Config{Broker: url, OnForwarded: func(truck, model string, made []time.Time) {
		got <- batch{truck, model, made}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-truck"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	pub := func(topic, payload string) {
		t.Helper()
		if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	data, _ := json.Marshal(status.Status{Schema: status.Schema, Online: true, Model: "m", Version: 1, Groups: []string{"early", "north"}})
	pub(topics.TruckStatus("truck-1"), string(data))
	pub(topics.TruckPredictions("truck-1", "m"), `not json`)
	pub(topics.TruckPredictions("truck-1", "m"), `[{"id":"a","label":"pos","time":"2030-01-01T12:00:30.5Z"},{"id":"b","label":"pos","time":"yesterday"}]`)
	select {
	case bt := <-got:
		want := time.Date(2030, 1, 1, 12, 0, 30, 5e8, time.UTC)
		if bt.truck != "truck-1" || bt.model != "m" || len(bt.made) != 2 || !bt.made[0].Equal(want) || !bt.made[1].IsZero() {
			t.Fatalf("forwarded batch %+v", bt)
		}
	case <-ctx.Done():
		t.Fatal("no forwarded batch heard")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, _, ok := v.Truck("truck-1")
		if ok {
			if len(s.Groups) != 2 || s.Groups[0] != "early" || s.Groups[1] != "north" {
				t.Fatalf("groups %q, want [early north]", s.Groups)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("truck-1's status never came")
		}
	}
	select {
	case bt := <-got:
		t.Errorf("an unreadable batch was heard: %+v", bt)
	default:
	}
}

// startBroker starts a fleet broker on loopback for the test and returns
// it and its URL; it is closed when the test ends.
func startBroker(ctx context.Context, t *testing.T) (*broker.Broker, string) {
	t.Helper()
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, "tcp://" + b.Addr()
}
