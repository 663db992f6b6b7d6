package broker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestSessionQueueCaps: while the publisher's persistent session is
// offline, one truck fills no more than its share of the session's queue,
// another truck's events are still queued, and the total cap holds too.
// What is not queued is counted and logged with its topic; the other
// subscribers still get it.
func TestSessionQueueCaps(t *testing.T) {
	users := writeUsersFile(t, map[string]string{
		"t1":  "truck:t1-pw",
		"t2":  "truck:t2-pw",
		"t3":  "truck:t3-pw",
		"pub": "publisher:pub-pw",
		"ops": "operator:ops-pw",
	})
	logs := &syncBuffer{}
	const msg = 1000 // bytes of payload; the topic adds about 30
	b := newBroker(t, func(c *Config) {
		c.UsersFile = users
		c.TruckMessagesPerSecond, c.TruckBytesPerSecond = -1, -1 // the caps alone
		c.MaxQueuedBytesPerTruck = 4 * msg
		c.MaxQueuedBytes = 10 * msg
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	b.queues.warnEvery = 0 // every drop logged, and the summary at once
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// The publisher's persistent session, offline.
	pubOpts := clientOpts(b.Addr()).SetClientID("linkedge-publisher").SetUsername("pub").SetPassword("pub-pw").SetCleanSession(false)
	pub := connect(t, pubOpts)
	await(t, "subscribe", pub.Subscribe("linkedge/v1/trucks/+/events", 1, nil))
	pub.Disconnect(100)
	// An operator that reads: it gets everything.
	live := newInbox()
	ops := connect(t, clientOpts(b.Addr()).SetClientID("ops-reader").SetUsername("ops").SetPassword("ops-pw"))
	subscribe(t, ops, "linkedge/v1/trucks/+/events", 1, live)

	sent := map[string]int{"t1": 20, "t2": 3, "t3": 6}
	for _, truck := range []string{"t1", "t2", "t3"} {
		c := connect(t, clientOpts(b.Addr()).SetClientID(truckClientPrefix+truck).SetUsername(truck).SetPassword(truck+"-pw"))
		for i := range sent[truck] {
			publish(t, c, topicTrucks+truck+"/events", 1, false, fmt.Sprintf("%-*d", msg, i))
			live.next(t)
			// The operator reads as fast as it is sent to, but its
			// acknowledgement may trail the next message; wait for it, so
			// that the operator's own queue stays under the caps.
			waitQueueEmpty(t, b, "ops-reader")
		}
		c.Disconnect(100)
	}

	// t1: its share (4 messages of about 1,030 bytes reach 4,000 at the
	// 4th; the check is made before each, so 4 are queued). t2: all 3.
	// t3: the session is at 7 messages, about 7,200 bytes; t3 gets 3 in
	// before the total of 10,000 is reached.
	got := map[string]int{}
	in := make(chan paho.Message, 100)
	pubOpts.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { in <- m })
	connect(t, pubOpts)
	for {
		select {
		case m := <-in:
			got[strings.Split(m.Topic(), "/")[3]]++
			continue
		case <-time.After(500 * time.Millisecond):
		}
		break
	}
	want := map[string]int{"t1": 4, "t2": 3, "t3": 3}
	for truck, n := range want {
		if got[truck] != n {
			t.Errorf("the publisher got %d of %s's %d events, want %d", got[truck], truck, sent[truck], n)
		}
	}
	dropped := (20 - 4) + (6 - 3)
	if v := metricOf(t, b, "linkedge_broker_session_queue_dropped_total"); v != float64(dropped) {
		t.Errorf("session_queue_dropped_total = %v, want %d", v, dropped)
	}
	for _, s := range []string{"max_queued_bytes_per_truck", "truck=t1", "the session's queue is full (max_queued_bytes)", "truck=t3",
		"client=linkedge-publisher", `lost=19 lost_by_truck="t1:16 t3:3"`} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, logs.String())
		}
	}
	if v := metricOf(t, b, "linkedge_broker_session_queued_bytes"); v != 0 {
		t.Errorf("session_queued_bytes = %v after the publisher read its queue, want 0", v)
	}
}

// waitQueueEmpty waits until nothing is queued for client id.
func waitQueueEmpty(t *testing.T, b *Broker, id string) {
	t.Helper()
	if b.queues == nil {
		return // no caps: nothing to wait for
	}
	deadline := time.Now().Add(waitFor)
	for {
		v, ok := b.queues.queues.Load(id)
		if !ok {
			return
		}
		q := v.(*sessionQueue)
		q.mu.Lock()
		n := q.bytes
		q.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still queued for %s after %s", n, id, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FuzzTruckOf: the truck a topic is counted for is one level of the topic,
// the one right under linkedge/v1/trucks/, and only such topics name one.
func FuzzTruckOf(f *testing.F) {
	for _, s := range []string{"linkedge/v1/trucks/t1/events", "linkedge/v1/trucks/", "linkedge/v1/trucks/a", "linkedge/v1/models/m/release", "", "linkedge/v1/trucks//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		truck := truckOf(topic)
		if strings.Contains(truck, "/") {
			t.Fatalf("truckOf(%q) = %q, more than one level", topic, truck)
		}
		if truck == "" {
			return
		}
		rest, ok := strings.CutPrefix(topic, topicTrucks+truck)
		if !ok || (rest != "" && rest[0] != '/') {
			t.Fatalf("truckOf(%q) = %q, not the level under %s", topic, truck, topicTrucks)
		}
	})
}

// TestSubscribeWhileQueueFull: a client whose queue is full may still
// subscribe, to a topic name as to a filter: mochi asks the same check for
// a subscription as for a delivery, and only deliveries are capped.
func TestSubscribeWhileQueueFull(t *testing.T) {
	users := writeUsersFile(t, map[string]string{"t1": "truck:t1-pw", "ops": "operator:ops-pw"})
	b := startBroker(t, func(c *Config) {
		c.UsersFile = users
		c.TruckMessagesPerSecond, c.TruckBytesPerSecond = -1, -1
		c.MaxQueuedBytesPerTruck = 4000
	})
	// An operator that never acknowledges: paho acknowledges a message
	// when its handler returns.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	got := make(chan struct{}, 100)
	ops := connect(t, clientOpts(b.Addr()).SetClientID("ops-stuck").SetUsername("ops").SetPassword("ops-pw").SetOrderMatters(false))
	await(t, "subscribe", ops.Subscribe("linkedge/v1/trucks/+/events", 1, func(paho.Client, paho.Message) {
		got <- struct{}{}
		<-release
	}))
	truck := connect(t, clientOpts(b.Addr()).SetClientID(truckClientPrefix+"t1").SetUsername("t1").SetPassword("t1-pw"))
	for i := range 6 {
		publish(t, truck, topicTrucks+"t1/events", 1, false, fmt.Sprintf("%-1000d", i))
	}
	deadline := time.Now().Add(waitFor)
	for metricOf(t, b, "linkedge_broker_session_queue_dropped_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stuck operator's queue never filled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tok := ops.Subscribe(topicTrucks+"t1/events", 1, nil)
	await(t, "subscribe to a topic name with a full queue", tok)
	if codes := tok.(*paho.SubscribeToken).Result(); codes[topicTrucks+"t1/events"] != 1 {
		t.Errorf("SUBACK %v, want QoS 1 granted", codes)
	}
}
