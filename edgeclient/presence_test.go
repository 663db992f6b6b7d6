package edgeclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// cutProxy forwards TCP connections to a target until cut, which closes
// every connection through it (both sides see the link die, as on a truck
// that drives into a tunnel); new connections are forwarded again.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, busWait)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(up, c); up.Close() }()
		go func() { defer p.wg.Done(); io.Copy(c, up); c.Close() }()
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// fleetMessage is one message a watcher saw.
type fleetMessage struct {
	topic    string
	payload  string
	retained bool
}

// TestReconnectSendsPresenceNotStatus: the last will marks the truck
// offline on its presence topic and leaves the retained status alone; a
// reconnect to the session the broker kept sends the one-word presence and
// no status, since nothing changed. Before the presence topic the will
// replaced the status and every reconnect sent the whole status again.
func TestReconnectSendsPresenceNotStatus(t *testing.T) {
	users := writeLocalUsers(t, map[string]string{"truck-1": "truck", "ops": "operator"})
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", UsersFile: users, Logger: busLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, b.Addr())

	var mu sync.Mutex
	var seen []fleetMessage
	watch := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("watch").
		SetUsername("ops").SetPassword("ops-pw"))
	if tok := watch.Connect(); !tok.WaitTimeout(busWait) || tok.Error() != nil {
		t.Fatalf("watcher connect: %v", tok.Error())
	}
	t.Cleanup(func() { watch.Disconnect(100) })
	subs := map[string]byte{topics.TruckStatus("truck-1"): 1, topics.TruckPresence("truck-1"): 1}
	if tok := watch.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		seen = append(seen, fleetMessage{m.Topic(), string(m.Payload()), m.Retained()})
		mu.Unlock()
	}); !tok.WaitTimeout(busWait) || tok.Error() != nil {
		t.Fatalf("watcher subscribe: %v", tok.Error())
	}
	// count returns how many messages since index from matched.
	count := func(from int, topic, payload string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, m := range seen[from:] {
			if m.topic == topic && (payload == "" || m.payload == payload) {
				n++
			}
		}
		return n
	}
	mark := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("no %s within 30s; saw %+v", what, seen)
			}
		}
	}

	pub, _ := release.GenerateKey()
	a, err := New(Config{Truck: "truck-1", Model: busModel, DataDir: t.TempDir(), Keys: []ed25519.PublicKey{pub},
		Groups:      []string{"early", "north"},
		Fleet:       FleetConfig{Broker: "tcp://" + proxy.ln.Addr().String(), Username: "truck-1", Password: "truck-1-pw"},
		HTTP:        "127.0.0.1:0",
		LocalBroker: LocalBrokerConfig{Listen: "off"},
		// No heartbeat during the test: every status seen is one the
		// agent chose to send.
		StatusInterval: time.Hour,
		Forward:        ForwardConfig{Alerts: new(bool)}, Runtime: stubRuntime{}, ShutdownTimeout: 5 * time.Second,
		Logger: busLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })

	statusTopic, presenceTopic := topics.TruckStatus("truck-1"), topics.TruckPresence("truck-1")
	waitFor("status and presence online", func() bool {
		return count(0, statusTopic, "") == 1 && count(0, presenceTopic, status.PresenceOnline) == 1
	})
	time.Sleep(1500 * time.Millisecond) // the status loop's coalescing gap: anything pending is out
	from := mark()

	proxy.cut()
	waitFor("last will", func() bool { return count(from, presenceTopic, status.PresenceOffline) == 1 })
	waitFor("presence online again", func() bool { return count(from, presenceTopic, status.PresenceOnline) == 1 })
	time.Sleep(1500 * time.Millisecond)
	if n := count(from, statusTopic, ""); n != 0 {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d status messages over a reconnect with nothing changed, want none: %+v", n, seen[from:])
	}

	// The retained status is still the agent's own, online; the presence
	// is online.
	retained := map[string]string{}
	fresh := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("fresh").
		SetUsername("ops").SetPassword("ops-pw"))
	if tok := fresh.Connect(); !tok.WaitTimeout(busWait) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer fresh.Disconnect(100)
	var rmu sync.Mutex
	if tok := fresh.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) {
		rmu.Lock()
		retained[m.Topic()] = string(m.Payload())
		rmu.Unlock()
	}); !tok.WaitTimeout(busWait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	waitFor("both retained messages", func() bool { rmu.Lock(); defer rmu.Unlock(); return len(retained) == 2 })
	rmu.Lock()
	defer rmu.Unlock()
	st, err := status.Parse([]byte(retained[statusTopic]))
	if err != nil || !st.Online || st.Truck != "truck-1" {
		t.Fatalf("retained status %s (%v): want the agent's own, online", retained[statusTopic], err)
	}
	// The groups of its configuration, for operators to filter by.
	if !slices.Equal(st.Groups, []string{"early", "north"}) {
		t.Errorf("retained status names the groups %q, want the configuration's [early north]", st.Groups)
	}
	if online, err := status.ParsePresence([]byte(retained[presenceTopic])); err != nil || !online {
		t.Fatalf("retained presence %q (%v), want online", retained[presenceTopic], err)
	}
	if got := a.link.presences.Load(); got != 2 {
		t.Errorf("linkedge_agent_presence_published_total %d, want 2 (one per connect)", got)
	}
}

// A clean shutdown says offline on the presence topic itself (no will is
// sent for a clean disconnect) and leaves the status alone.
func TestCloseSaysOffline(t *testing.T) {
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Logger: busLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pub, _ := release.GenerateKey()
	a, err := New(Config{Truck: "truck-1", Model: busModel, DataDir: t.TempDir(), Keys: []ed25519.PublicKey{pub},
		Fleet: FleetConfig{Broker: "tcp://" + b.Addr()}, HTTP: "127.0.0.1:0", LocalBroker: LocalBrokerConfig{Listen: "off"},
		Forward: ForwardConfig{Alerts: new(bool)}, Runtime: stubRuntime{}, ShutdownTimeout: 5 * time.Second, Logger: busLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(busWait); !a.Status().Online; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("agent not online")
		}
	}
	time.Sleep(1500 * time.Millisecond) // the first status is out
	if err := a.Close(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	got := make(chan [2]string, 4)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("after"))
	if tok := c.Connect(); !tok.WaitTimeout(busWait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	c.SubscribeMultiple(map[string]byte{topics.TruckStatus("truck-1"): 1, topics.TruckPresence("truck-1"): 1}, func(_ paho.Client, m paho.Message) {
		got <- [2]string{m.Topic(), string(m.Payload())}
	})
	msgs := map[string]string{}
	for len(msgs) < 2 {
		select {
		case m := <-got:
			msgs[m[0]] = m[1]
		case <-time.After(busWait):
			t.Fatalf("retained after a clean close: %v; want status and presence", msgs)
		}
	}
	if msgs[topics.TruckPresence("truck-1")] != status.PresenceOffline {
		t.Errorf("presence after a clean close %q, want offline", msgs[topics.TruckPresence("truck-1")])
	}
	if st, err := status.Parse([]byte(msgs[topics.TruckStatus("truck-1")])); err != nil || st.Version != 0 || st.Model != busModel {
		t.Errorf("status after a clean close %s (%v)", msgs[topics.TruckStatus("truck-1")], err)
	}
}

// TestFleetPublishWaitsForConnectHandler: between paho opening the
// connection and onConnect (which waits for paho to have read its session
// store), a QoS 1 publish would be resent with the store and reach the
// broker twice. Grant requests and the presence are refused in that window,
// as statuses and forwarded predictions already were.
func TestFleetPublishWaitsForConnectHandler(t *testing.T) {
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Logger: busLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("window"))
	if tok := c.Connect(); !tok.WaitTimeout(busWait) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	a := &Agent{fleet: c, cfg: Config{Truck: "truck-1"}}
	if !c.IsConnectionOpen() {
		t.Fatal("the client is not connected")
	}
	if a.publishFleet(topics.TruckGrantRequest("truck-1"), []byte("{}")) {
		t.Error("publishFleet sent before onConnect marked the link up")
	}
	if _, ok := a.publishPresence(true); ok {
		t.Error("publishPresence sent before onConnect marked the link up")
	}
	a.mu.Lock()
	a.online = true
	a.mu.Unlock()
	if !a.publishFleet(topics.TruckGrantRequest("truck-1"), []byte("{}")) {
		t.Error("publishFleet refused with the link up")
	}
	if tok, ok := a.publishPresence(true); !ok || !tok.WaitTimeout(busWait) || tok.Error() != nil {
		t.Error("publishPresence failed with the link up")
	}
}
