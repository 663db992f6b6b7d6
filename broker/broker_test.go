package broker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

func TestPublishSubscribe(t *testing.T) {
	b := startBroker(t, nil)
	tests := []struct {
		name             string
		subQoS, pubQoS   byte
		wantDeliveredQoS byte
	}{
		{"qos0", 0, 0, 0},
		{"qos1", 1, 1, 1},
		{"qos1 publish, qos0 subscription", 0, 1, 0},
		{"qos0 publish, qos1 subscription", 1, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topic := "linkedge/v1/test/" + tc.name
			in := newInbox()
			sub := connect(t, clientOpts(b.Addr()))
			subscribe(t, sub, topic, tc.subQoS, in)
			pub := connect(t, clientOpts(b.Addr()))
			publish(t, pub, topic, tc.pubQoS, false, "hello "+tc.name)

			m := in.next(t)
			if m.Topic() != topic || string(m.Payload()) != "hello "+tc.name {
				t.Errorf("got %s %q", m.Topic(), m.Payload())
			}
			if m.Qos() != tc.wantDeliveredQoS {
				t.Errorf("delivered qos = %d, want %d", m.Qos(), tc.wantDeliveredQoS)
			}
		})
	}
}

func TestRetainedDeliveredToLateSubscriber(t *testing.T) {
	b := startBroker(t, nil)
	pub := connect(t, clientOpts(b.Addr()))
	publish(t, pub, "linkedge/v1/models/detector", 1, true, "v7")

	in := newInbox()
	late := connect(t, clientOpts(b.Addr()))
	subscribe(t, late, "linkedge/v1/models/#", 1, in)
	// mochi stores a retained message before acknowledging it but fans it
	// out just after, so a subscriber arriving in between may first get the
	// live copy as well; the retained copy must come either way.
	for range 2 {
		m := in.next(t)
		if string(m.Payload()) != "v7" {
			t.Fatalf("got %q, want v7", m.Payload())
		}
		if m.Retained() {
			return
		}
	}
	t.Error("no copy flagged retained")
}

// TestInlineClient covers the truck agent's in-process use: publishing into
// the bus and subscribing without a network connection.
func TestInlineClient(t *testing.T) {
	b := startBroker(t, nil)
	srv := b.Server()

	got := make(chan string, 1)
	err := srv.Subscribe("linkedge/v1/trucks/+/state", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		got <- string(pk.Payload)
	})
	if err != nil {
		t.Fatalf("inline Subscribe: %v", err)
	}
	pub := connect(t, clientOpts(b.Addr()))
	publish(t, pub, "linkedge/v1/trucks/t1/state", 1, false, "parked")
	select {
	case p := <-got:
		if p != "parked" {
			t.Errorf("inline subscriber got %q", p)
		}
	case <-time.After(waitFor):
		t.Fatal("inline subscriber got nothing")
	}

	in := newInbox()
	sub := connect(t, clientOpts(b.Addr()))
	subscribe(t, sub, "linkedge/v1/trucks/t1/desired", 1, in)
	if err := srv.Publish("linkedge/v1/trucks/t1/desired", []byte("model=v8"), false, 1); err != nil {
		t.Fatalf("inline Publish: %v", err)
	}
	if m := in.next(t); string(m.Payload()) != "model=v8" {
		t.Errorf("network subscriber got %q", m.Payload())
	}
}

func TestLifecycle(t *testing.T) {
	t.Run("close twice and concurrently", func(t *testing.T) {
		b := startBroker(t, nil)
		connect(t, clientOpts(b.Addr()))
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Wait()
		if err := b.Close(); err != nil {
			t.Errorf("third Close: %v", err)
		}
		if b.Ready() {
			t.Error("Ready after Close")
		}
		if _, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
			t.Error("MQTT port still accepting after Close")
		}
		if err := b.Start(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("start twice", func(t *testing.T) {
		b := startBroker(t, nil)
		if !b.Ready() {
			t.Error("not Ready after Start")
		}
		if err := b.Start(context.Background()); !errors.Is(err, ErrAlreadyStarted) {
			t.Errorf("second Start = %v, want ErrAlreadyStarted", err)
		}
	})
	t.Run("close before start", func(t *testing.T) {
		b := newBroker(t, nil)
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := b.Start(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		b := newBroker(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := b.Start(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Start = %v, want context.Canceled", err)
		}
	})
}

// TestFailedStartCleansUp makes the HTTP bind fail after the storage and the
// MQTT listener are open, then checks that both were released.
func TestFailedStartCleansUp(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()

	b := newBroker(t, func(c *Config) {
		c.DataDir = dir
		c.HTTPListen = busy.Addr().String()
	})
	if err := b.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded with the HTTP port taken")
	}
	mqttAddr := b.Addr()
	if b.Ready() {
		t.Error("Ready after failed Start")
	}
	if err := b.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after failed Start = %v, want ErrClosed", err)
	}
	// The bolt file lock and the MQTT port must be free again.
	again := startBroker(t, func(c *Config) {
		c.DataDir = dir
		c.Listen = mqttAddr
	})
	connect(t, clientOpts(again.Addr()))
}

func TestDataDirLockedByAnotherBroker(t *testing.T) {
	dir := t.TempDir()
	startBroker(t, func(c *Config) { c.DataDir = dir })
	b := newBroker(t, func(c *Config) { c.DataDir = dir })
	err := b.Start(context.Background())
	if err == nil {
		t.Fatal("second broker on the same DataDir started")
	}
	if want := filepath.Join(dir, storeFile); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("error %q does not say %s is locked", err, want)
	}
}

// TestTwoBrokersInOneProcess mirrors the demo: several brokers, each with its
// own metrics registry and HTTP endpoint, side by side.
func TestTwoBrokersInOneProcess(t *testing.T) {
	var bs []*Broker
	for range 2 {
		bs = append(bs, startBroker(t, func(c *Config) { c.HTTPListen = "127.0.0.1:0" }))
	}
	if bs[0].Registry() == bs[1].Registry() {
		t.Fatal("brokers share a registry")
	}
	pub := connect(t, clientOpts(bs[0].Addr()))
	publish(t, pub, "linkedge/v1/x", 1, false, "only on broker 0")

	for i, b := range bs {
		mfs, err := b.Registry().Gather()
		if err != nil {
			t.Fatalf("broker %d Gather: %v", i, err)
		}
		if len(mfs) == 0 {
			t.Fatalf("broker %d: no metrics", i)
		}
		got := scrape(t, b.HTTPAddr())["linkedge_broker_messages_received_total"]
		if want := float64(1 - i); got != want {
			t.Errorf("broker %d messages_received_total = %v, want %v", i, got, want)
		}
	}
}

func TestExpiryCapabilities(t *testing.T) {
	tests := []struct {
		name   string
		expiry time.Duration
		want   int64
	}{
		{"default 90 days", 0, 90 * 24 * 3600},
		{"one hour", time.Hour, 3600},
		{"sub-second part dropped", 90*time.Second + 500*time.Millisecond, 90},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(t, func(c *Config) { c.MaxMessageExpiry = tc.expiry })
			caps := b.Server().Options.Capabilities
			if caps.MaximumMessageExpiryInterval != tc.want {
				t.Errorf("MaximumMessageExpiryInterval = %d, want %d", caps.MaximumMessageExpiryInterval, tc.want)
			}
			if int64(caps.MaximumSessionExpiryInterval) != tc.want {
				t.Errorf("MaximumSessionExpiryInterval = %d, want %d", caps.MaximumSessionExpiryInterval, tc.want)
			}
			if !b.Server().Options.InlineClient {
				t.Error("inline client disabled")
			}
		})
	}
}

// TestCloseStopsGoroutines checks that a broker with every feature on leaves
// no goroutine behind once closed (mochi's housekeeping loop exits just after
// Close returns, hence the short wait).
func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	b, err := New(Config{Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, b.Addr()) // a connected client the broker must drop
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "g"},
	})
	c.recv()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitFor}
	resp, err := hc.Get("http://" + b.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	c.conn.Close()
	deadline := time.Now().Add(waitFor)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
