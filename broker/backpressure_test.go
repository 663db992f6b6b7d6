package broker

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestSlowSubscriberLosesNothing: a subscriber of every truck's events
// (the publisher's intake) that stops reading for a while trucks report
// gets every report once it reads again, and the trucks' publishes wait
// for it once it holds 512 unacknowledged. (mochi alone dropped what did
// not fit its buffer of 1,024 writes: 8,298 reports to the publisher at
// 10,000 trucks in `linkedge bench fleet`; on loopback the socket buffers
// absorb this test's burst, so the old code passes the no-loss half.)
func TestSlowSubscriberLosesNothing(t *testing.T) {
	const trucks, reports = 20, 200 // 4,000 reports of 4 KB, more than the mark of 512
	b := startBroker(t, nil)

	c := dialRaw(t, b.Addr())
	_ = c.conn.SetDeadline(time.Now().Add(time.Minute))
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: "intake"},
		Properties:  packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true},
	})
	if ack := c.recv(); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "linkedge/v1/trucks/+/events", Qos: 1}},
	})
	if p := c.recv(); p.FixedHeader.Type != packets.Suback {
		t.Fatalf("got packet type %d, want SUBACK", p.FixedHeader.Type)
	}

	// The trucks report while the intake reads nothing.
	payload := bytes.Repeat([]byte("e"), 4096)
	var wg sync.WaitGroup
	errs := make(chan error, trucks)
	for i := range trucks {
		pc := connect(t, clientOpts(b.Addr()).SetClientID(fmt.Sprintf("truck-%02d", i)))
		wg.Go(func() {
			for r := range reports {
				// A truck per report: the session queue's share per truck
				// (max_queued_bytes_per_truck) is not what this test is about.
				tok := pc.Publish(fmt.Sprintf("linkedge/v1/trucks/t%02d-%03d/events", i, r), 1, false, append([]byte(fmt.Sprintf("%02d-%03d ", i, r)), payload...))
				if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
					errs <- fmt.Errorf("truck %d report %d: %v", i, r, tok.Error())
					return
				}
			}
		})
	}
	time.Sleep(3 * time.Second)

	seen := map[string]bool{}
	for len(seen) < trucks*reports {
		p := c.recv()
		if p.FixedHeader.Type != packets.Publish {
			t.Fatalf("got packet type %d, want PUBLISH", p.FixedHeader.Type)
		}
		seen[string(p.Payload[:7])] = true
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: p.PacketID})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if dropped := b.Server().Info.Clone().MessagesDropped; dropped != 0 {
		t.Errorf("broker dropped %d messages", dropped)
	}
	if b.backpressure.waits.Load() == 0 {
		t.Error("no publish waited for the slow subscriber")
	}
	t.Logf("%d publishes waited, %s in all", b.backpressure.waits.Load(), time.Duration(b.backpressure.waited.Load()).Round(time.Millisecond))
}

// TestStalledSubscriberIsNotWaitedFor: a subscriber that stops reading for
// good slows publishers for backpressureStall at most, then nobody waits
// for it.
func TestStalledSubscriberIsNotWaitedFor(t *testing.T) {
	b := startBroker(t, nil)
	b.backpressure.stallAfter = 500 * time.Millisecond
	rawSubscriber(t, b, "asleep", "linkedge/v1/trucks/#") // it never reads
	// It never acknowledges: after 512 messages every publish would wait.
	pc := connect(t, clientOpts(b.Addr()).SetClientID("truck-x"))
	start := time.Now()
	for r := range 1500 {
		tok := pc.Publish("linkedge/v1/trucks/x/events", 1, false, fmt.Sprint(r))
		if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			t.Fatalf("report %d: %v", r, tok.Error())
		}
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("1,500 publishes took %s beside a stalled subscriber", took)
	}
	if b.backpressure.stalls.Load() == 0 {
		t.Error("the subscriber that acknowledges nothing was never taken for stalled")
	}
	_ = paho.ErrNotConnected
}

// TestSlowReaderIsNotTakenForStalled: a subscriber over the mark that keeps
// acknowledging, only slower than the fleet reports, is waited for past the
// stall window: it is making progress. Judging by time over the mark alone
// took the publisher, slowed by a loaded machine, for stalled (`linkedge
// bench fleet --trucks 10000`: 4,444 reports then dropped to it). Its
// in-flight table is filled by hand, as thousands of trucks released at
// once fill it, so that it stays over the mark for the whole test.
func TestSlowReaderIsNotTakenForStalled(t *testing.T) {
	b := startBroker(t, nil)
	bp := b.backpressure
	bp.highWater, bp.stallAfter = 4, 200*time.Millisecond

	rawSubscriber(t, b, "intake", "linkedge/v1/trucks/+/events")
	cl, ok := b.Server().Clients.Get("intake")
	if !ok {
		t.Fatal("no client intake")
	}
	watched := func() *watch {
		bp.mu.Lock()
		defer bp.mu.Unlock()
		return bp.watched["intake"]
	}
	pending := func(id uint16) packets.Packet {
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id, TopicName: "linkedge/v1/trucks/x/events", Created: time.Now().Unix()}
	}
	for id := uint16(100); id < 110; id++ { // over the mark of 4
		cl.State.Inflight.Set(pending(id))
	}

	done := make(chan time.Duration, 1)
	start := time.Now()
	go func() { bp.admit("intake", watched()); done <- time.Since(start) }()
	// It acknowledges one message every 50 ms and receives another: over
	// the mark for 600 ms, three stall windows, never silent for one.
	for id := uint16(200); id < 212; id++ {
		select {
		case d := <-done:
			t.Fatalf("the publish stopped waiting after %s, with the reader still acknowledging", d.Round(time.Millisecond))
		case <-time.After(50 * time.Millisecond):
		}
		bp.OnQosComplete(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
	}
	// It catches up: the publish goes.
	for id := uint16(100); id < 110; id++ {
		cl.State.Inflight.Delete(id)
	}
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("the publish still waits with the reader under the mark")
	}
	if n := bp.stalls.Load(); n != 0 {
		t.Errorf("the reader was taken for stalled %d times", n)
	}

	// Silent from now on, over the mark: stalled after the window.
	for id := uint16(100); id < 110; id++ {
		cl.State.Inflight.Set(pending(id))
	}
	start = time.Now()
	go func() { bp.admit("intake", watched()); done <- time.Since(start) }()
	select {
	case d := <-done:
		if d < bp.stallAfter {
			t.Errorf("stopped waiting after %s, before the stall window", d)
		}
	case <-time.After(waitFor):
		t.Fatal("still waiting for a reader silent for longer than the stall window")
	}
	if n := bp.stalls.Load(); n != 1 {
		t.Errorf("the silent reader was taken for stalled %d times, want 1", n)
	}
}

// TestWatchedSubscriberNeverWaits: a client that others wait for (it
// subscribes to every truck's topics) publishes without waiting, even for
// another such subscriber that is behind: the wait would stop the broker
// reading its connection, and the acknowledgements on it are what the
// fleet's publishes wait for. (The publisher announcing while the bench's
// observer was behind went silent for 15 s that way and was taken for
// stalled.)
func TestWatchedSubscriberNeverWaits(t *testing.T) {
	b := startBroker(t, nil)
	bp := b.backpressure
	bp.highWater, bp.stallAfter = 4, time.Hour
	rawSubscriber(t, b, "publisher", "linkedge/v1/#")
	rawSubscriber(t, b, "observer", "linkedge/v1/#")
	pub, _ := b.Server().Clients.Get("publisher")
	obs, _ := b.Server().Clients.Get("observer")
	for id := uint16(100); id < 110; id++ { // the observer is behind
		obs.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id,
			TopicName: "linkedge/v1/trucks/x/events", Created: time.Now().Unix()}) // not expired: the broker sweeps those away
	}
	release := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "linkedge/v1/models/m/release"}
	done := make(chan struct{})
	go func() { bp.OnPublish(pub, release); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher's release waits for the observer")
	}
	// A truck's publish does wait for it (ended by the observer catching up).
	connect(t, clientOpts(b.Addr()).SetClientID("truck-1"))
	tcl, _ := b.Server().Clients.Get("truck-1")
	done = make(chan struct{})
	go func() { bp.OnPublish(tcl, release); close(done) }()
	select {
	case <-done:
		t.Fatal("a truck's publish did not wait for the observer behind")
	case <-time.After(300 * time.Millisecond):
	}
	for id := uint16(100); id < 110; id++ {
		obs.State.Inflight.Delete(id)
	}
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("the truck's publish still waits with the observer caught up")
	}
}

// TestReleasedPublishersDoNotOvershoot: publishers that waited for a
// subscriber at the mark go, when it catches up, only as many as fit under
// the mark; the rest wait on. (Judged by its in-flight table alone, all of
// them saw room in the same instant: at 10,000 trucks the publisher went
// 6,000 over the mark, its buffer of 1,024 writes overflowed and the broker
// dropped reports to it.)
func TestReleasedPublishersDoNotOvershoot(t *testing.T) {
	const trucks, mark = 40, 8
	b := startBroker(t, nil)
	bp := b.backpressure
	bp.highWater, bp.stallAfter = mark, time.Hour

	rawSubscriber(t, b, "intake", "linkedge/v1/trucks/+/events")
	cl, _ := b.Server().Clients.Get("intake")
	for id := uint16(1000); id < 1000+mark; id++ { // at the mark
		cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id,
			TopicName: "linkedge/v1/trucks/x/events", Created: time.Now().Unix()})
	}
	var wg sync.WaitGroup
	for i := range trucks {
		pc := connect(t, clientOpts(b.Addr()).SetClientID(fmt.Sprintf("truck-%02d", i)))
		wg.Go(func() { pc.Publish(fmt.Sprintf("linkedge/v1/trucks/t%02d/events", i), 1, false, "report") })
	}
	wg.Wait()
	// Every truck's report is waiting; then the subscriber catches up at once.
	deadline := time.Now().Add(waitFor)
	for bp.waiting() < trucks {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d reports waiting", bp.waiting(), trucks)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for id := uint16(1000); id < 1000+mark; id++ {
		cl.State.Inflight.Delete(id)
	}
	// It acknowledges nothing more: the reports that went are all it holds.
	// (Without an acknowledgement, the waiting reports see the room at
	// their next check, backpressureCheck.)
	most := 0
	for end := time.Now().Add(backpressureCheck + time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		most = max(most, cl.State.Inflight.Len())
	}
	if most > mark {
		t.Errorf("the subscriber held %d unacknowledged after catching up, over the mark of %d", most, mark)
	}
	if most < mark {
		t.Errorf("only %d reports went when %d fit under the mark", most, mark)
	}
}

// TestTwoSlowSubscribersDoNotDeadlock: two subscribers of every truck's
// reports (the publisher and an operator's tool), both at the mark, with
// many trucks waiting for both: every report reaches both. A publish holds
// its place with one subscriber while it waits for the other; taken in
// different orders, the two subscribers' places filled with publishes
// waiting for the other one and neither had anything left to acknowledge.
func TestTwoSlowSubscribersDoNotDeadlock(t *testing.T) {
	const trucks, reports = 30, 10
	b := startBroker(t, nil)
	bp := b.backpressure
	bp.highWater, bp.stallAfter = 2, time.Hour // never taken for stalled here

	reader := func(id string, got chan<- int) {
		c := rawSubscriber(t, b, id, "linkedge/v1/trucks/+/events")
		go func() {
			seen := map[string]bool{}
			defer func() { got <- len(seen) }()
			for len(seen) < trucks*reports {
				pk, err := c.read()
				if err != nil {
					return
				}
				if pk.FixedHeader.Type != packets.Publish {
					continue
				}
				seen[string(pk.Payload)] = true
				time.Sleep(time.Millisecond)
				if c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}) != nil {
					return
				}
			}
		}()
	}
	gotA, gotB := make(chan int, 1), make(chan int, 1)
	reader("intake-a", gotA)
	reader("intake-b", gotB)
	for i := range trucks {
		pc := connect(t, clientOpts(b.Addr()).SetClientID(fmt.Sprintf("truck-%02d", i)))
		go func() {
			for r := range reports {
				pc.Publish(fmt.Sprintf("linkedge/v1/trucks/t%02d/events", i), 1, false, fmt.Sprintf("%02d-%02d", i, r))
			}
		}()
	}
	for name, got := range map[string]chan int{"intake-a": gotA, "intake-b": gotB} {
		select {
		case n := <-got:
			if n != trucks*reports {
				t.Errorf("%s got %d of %d reports", name, n, trucks*reports)
			}
		case <-time.After(45 * time.Second):
			t.Fatalf("%s still waits for reports after 45 s: the publishes are stuck (%d waiting)", name, bp.waiting())
		}
	}
}

// TestPublishingSubscriberThatReadsNothingIsStalled: a subscriber that keeps
// publishing (the broker acknowledges each of its QoS 1 messages) but never
// acknowledges what it is sent is silent, and is taken for stalled: the
// broker's acknowledgements to it are not its reading.
func TestPublishingSubscriberThatReadsNothingIsStalled(t *testing.T) {
	b := startBroker(t, nil)
	b.backpressure.stallAfter = 500 * time.Millisecond
	c := rawSubscriber(t, b, "chatty", "linkedge/v1/trucks/#")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for id := uint16(1); ; id++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if c.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id,
				TopicName: "linkedge/v1/models/m/notes", Payload: []byte("x")}) != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	pc := connect(t, clientOpts(b.Addr()).SetClientID("truck-x"))
	for r := range 1500 {
		tok := pc.Publish("linkedge/v1/trucks/x/events", 1, false, fmt.Sprint(r))
		if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			t.Fatalf("report %d still waits for a subscriber that reads nothing: %v", r, tok.Error())
		}
	}
	if b.backpressure.stalls.Load() == 0 {
		t.Error("the subscriber that reads nothing was never taken for stalled")
	}
}

// rawSubscriber connects a raw MQTT 5 client with a clean session as id
// and subscribes it to filter at QoS 1: a subscriber whose every
// acknowledgement the test controls.
func rawSubscriber(t *testing.T, b *Broker, id, filter string) *rawClient {
	t.Helper()
	c := dialRaw(t, b.Addr())
	_ = c.conn.SetDeadline(time.Now().Add(time.Minute))
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 60, ClientIdentifier: id, Clean: true},
	})
	if ack := c.recv(); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}},
	})
	if p := c.recv(); p.FixedHeader.Type != packets.Suback {
		t.Fatalf("got packet type %d, want SUBACK", p.FixedHeader.Type)
	}
	return c
}
