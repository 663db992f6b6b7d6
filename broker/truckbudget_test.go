package broker

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// gauge returns the value of the broker's metric name (a counter or gauge
// without labels), failing the test if it is not there.
func metricOf(t *testing.T, b *Broker, name string) float64 {
	t.Helper()
	mfs, err := b.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestTruckBudget: a truck that publishes faster than its budget is slowed
// down, and loses nothing; the publisher role is not held to it. The
// throttled truck is logged by name.
func TestTruckBudget(t *testing.T) {
	users := writeUsersFile(t, map[string]string{
		"t1":  "truck:t1-pw",
		"pub": "publisher:pub-pw",
	})
	logs := &syncBuffer{}
	b := startBroker(t, func(c *Config) {
		c.UsersFile = users
		c.TruckMessagesPerSecond, c.TruckMessageBurst = 10, 5
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	in := newInbox()
	pub := connect(t, clientOpts(b.Addr()).SetUsername("pub").SetPassword("pub-pw"))
	subscribe(t, pub, "linkedge/v1/#", 1, in)

	// 5 in the burst, then 10 a second: the 20th no sooner than 1.5 s
	// after the first.
	const n = 20
	truck := connect(t, clientOpts(b.Addr()).SetClientID(truckClientPrefix+"t1").SetUsername("t1").SetPassword("t1-pw"))
	start := time.Now()
	for i := range n {
		truck.Publish(topicTrucks+"t1/events", 1, false, fmt.Sprint(i))
	}
	for i := range n {
		if m := in.next(t); string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Payload())
		}
	}
	if took, least := time.Since(start), 1400*time.Millisecond; took < least {
		t.Errorf("%d publishes over a budget of 10/s with a burst of 5 took %s, want at least %s", n, took, least)
	}
	if got := metricOf(t, b, "linkedge_broker_truck_throttled_total"); got < n-5-1 {
		t.Errorf("truck_throttled_total = %v, want at least %d", got, n-5-1)
	}
	if !strings.Contains(logs.String(), "truck publishes over its budget") || !strings.Contains(logs.String(), "username=t1") {
		t.Errorf("the throttled truck is not logged by name:\n%s", logs.String())
	}

	// The publisher is not a truck: its documents are not held back.
	before := metricOf(t, b, "linkedge_broker_truck_throttled_total")
	for i := range n {
		publish(t, pub, "linkedge/v1/models/m/release", 1, false, fmt.Sprint(i))
		in.next(t)
	}
	if got := metricOf(t, b, "linkedge_broker_truck_throttled_total"); got != before {
		t.Errorf("the publisher was throttled: truck_throttled_total %v -> %v", before, got)
	}
}

// TestTruckBudgetTake checks the token buckets' arithmetic on a fake clock.
func TestTruckBudgetTake(t *testing.T) {
	now := time.Unix(1000, 0)
	cfg := Config{TruckMessagesPerSecond: 2, TruckMessageBurst: 2, TruckBytesPerSecond: 1000, TruckByteBurst: 1000}
	b := newTruckBudget(&cfg, nil, nil)
	b.now = func() time.Time { return now }
	steps := []struct {
		advance time.Duration
		size    float64
		want    time.Duration
	}{
		{0, 10, 0},                      // burst: 1 message left
		{0, 10, 0},                      // burst used up
		{0, 10, 500 * time.Millisecond}, // one message owed, at 2/s
		{500 * time.Millisecond, 10, 500 * time.Millisecond}, // the owed one paid, this one owed
		{10 * time.Second, 1500, 500 * time.Millisecond},     // bytes: 1000 in the bucket, 500 owed at 1000/s
		{10 * time.Second, 100, 0},                           // refilled, capped at the bursts
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := b.take("t", s.size); got != s.want {
			t.Errorf("step %d: wait %s, want %s", i, got, s.want)
		}
	}
}
