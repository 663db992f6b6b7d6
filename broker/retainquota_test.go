package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// syncBuffer is a bytes.Buffer for a logger written from mochi's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// heldBy returns how many retained topics user holds (or has reserved).
func (q *retainQuota) heldBy(user string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held[user]
}

// retainedTopics returns the broker's retained messages outside $SYS.
func retainedTopics(b *Broker) map[string]string {
	out := map[string]string{}
	for topic, pk := range b.Server().Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$") {
			out[topic] = string(pk.Payload)
		}
	}
	return out
}

const (
	pinT1   = "linkedge/v1/trucks/t1/desired"
	pinT2   = "linkedge/v1/trucks/t2/desired"
	pinT3   = "linkedge/v1/trucks/t3/desired"
	pinT4   = "linkedge/v1/trucks/t4/desired"
	release = "linkedge/v1/models/detector/release"
)

// TestRetainedCapPerUser: with max_retained_per_user 3, a user's retained
// publish that needs a fourth slot is delivered without the retain flag
// (and counted, and logged at Warn); replacing its own topic takes no
// slot, clearing one frees it, overwriting another user's topic moves the
// slot, and each user has a cap of its own. Trucks, which retain their
// status alone, are not counted.
func TestRetainedCapPerUser(t *testing.T) {
	type pub struct{ user, topic, payload string }
	tests := []struct {
		name         string
		pubs         []pub
		wantRetained map[string]string
		wantHeld     map[string]int
		wantDropped  int64
	}{
		{
			name:         "up to the cap",
			pubs:         []pub{{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", release, "r"}},
			wantRetained: map[string]string{pinT1: "a", pinT2: "b", release: "r"},
			wantHeld:     map[string]int{"fleet": 3},
		},
		{
			name:         "over the cap",
			pubs:         []pub{{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"}, {"fleet", pinT4, "d"}, {"fleet", release, "r"}},
			wantRetained: map[string]string{pinT1: "a", pinT2: "b", pinT3: "c"},
			wantHeld:     map[string]int{"fleet": 3},
			wantDropped:  2,
		},
		{
			name:         "replacing its own topic at the cap",
			pubs:         []pub{{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"}, {"fleet", pinT1, "a2"}},
			wantRetained: map[string]string{pinT1: "a2", pinT2: "b", pinT3: "c"},
			wantHeld:     map[string]int{"fleet": 3},
		},
		{
			name:         "clearing frees a slot",
			pubs:         []pub{{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"}, {"fleet", pinT1, ""}, {"fleet", pinT4, "d"}},
			wantRetained: map[string]string{pinT2: "b", pinT3: "c", pinT4: "d"},
			wantHeld:     map[string]int{"fleet": 3},
		},
		{
			name:         "clearing an empty topic frees nothing",
			pubs:         []pub{{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"}, {"fleet", pinT4, ""}, {"fleet", release, "r"}},
			wantRetained: map[string]string{pinT1: "a", pinT2: "b", pinT3: "c"},
			wantHeld:     map[string]int{"fleet": 3},
			wantDropped:  1,
		},
		{
			name: "overwriting another user's topic moves the slot",
			pubs: []pub{
				{"fleet2", pinT1, "x"},
				{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"},
				{"fleet2", pinT4, "y"},
			},
			wantRetained: map[string]string{pinT1: "a", pinT2: "b", pinT3: "c", pinT4: "y"},
			wantHeld:     map[string]int{"fleet": 3, "fleet2": 1},
		},
		{
			name: "a full user may not take another's topic",
			pubs: []pub{
				{"fleet2", pinT4, "y"},
				{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"}, {"fleet", pinT4, "d"},
			},
			wantRetained: map[string]string{pinT1: "a", pinT2: "b", pinT3: "c", pinT4: "y"},
			wantHeld:     map[string]int{"fleet": 3, "fleet2": 1},
			wantDropped:  1,
		},
		{
			name: "another user's clear frees the holder's slot",
			pubs: []pub{
				{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"},
				{"fleet2", pinT1, ""},
				{"fleet", pinT4, "d"},
			},
			wantRetained: map[string]string{pinT2: "b", pinT3: "c", pinT4: "d"},
			wantHeld:     map[string]int{"fleet": 3, "fleet2": 0},
		},
		{
			name: "each user has a cap of its own",
			pubs: []pub{
				{"fleet", pinT1, "a"}, {"fleet", pinT2, "b"}, {"fleet", pinT3, "c"},
				{"fleet2", pinT4, "d"}, {"fleet2", release, "r"},
				{"t1", "linkedge/v1/trucks/t1/status", "online"},
			},
			wantRetained: map[string]string{pinT1: "a", pinT2: "b", pinT3: "c", pinT4: "d", release: "r", "linkedge/v1/trucks/t1/status": "online"},
			wantHeld:     map[string]int{"fleet": 3, "fleet2": 2, "t1": 0}, // trucks are not counted
		},
	}
	users := writeUsersFile(t, map[string]string{
		"fleet":  "publisher:fleet-pw",
		"fleet2": "publisher:fleet2-pw",
		"t1":     "truck:t1-pw",
		"ops":    "operator:ops-pw",
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			b := startBroker(t, func(c *Config) {
				c.UsersFile = users
				c.MaxRetainedPerUser = 3
				c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			})
			// Every publish is delivered, retained or not.
			live := make(inbox, len(tc.pubs))
			ops := connect(t, clientOpts(b.Addr()).SetUsername("ops").SetPassword("ops-pw"))
			subscribe(t, ops, "linkedge/v1/#", 1, live)
			clients := map[string]paho.Client{}
			for _, p := range tc.pubs {
				c := clients[p.user]
				if c == nil {
					o := clientOpts(b.Addr()).SetUsername(p.user).SetPassword(p.user + "-pw")
					if p.user == "t1" {
						o.SetClientID("linkedge-truck-t1")
					}
					c = connect(t, o)
					clients[p.user] = c
				}
				publish(t, c, p.topic, 1, true, p.payload)
			}
			for range tc.pubs {
				live.next(t)
			}

			if got := retainedTopics(b); !maps.Equal(got, tc.wantRetained) {
				t.Errorf("retained = %v, want %v", got, tc.wantRetained)
			}
			for user, want := range tc.wantHeld {
				if got := b.quota.heldBy(user); got != want {
					t.Errorf("%s holds %d, want %d", user, got, want)
				}
			}
			if got := b.auth.retainDropped.Load(); got != tc.wantDropped {
				t.Errorf("retain_dropped_total = %d, want %d", got, tc.wantDropped)
			}
			// A fresh subscriber gets what is retained, nothing more.
			fresh := newInbox()
			subscribe(t, connect(t, clientOpts(b.Addr()).SetUsername("ops").SetPassword("ops-pw")), "linkedge/v1/#", 1, fresh)
			got := map[string]string{}
			for range tc.wantRetained {
				m := fresh.next(t)
				got[m.Topic()] = string(m.Payload())
			}
			fresh.none(t, 100*time.Millisecond)
			if !maps.Equal(got, tc.wantRetained) {
				t.Errorf("a fresh subscriber got %v, want %v", got, tc.wantRetained)
			}
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "max_retained_per_user") &&
				strings.Contains(logs.String(), "username=fleet ")
			if warned != (tc.wantDropped > 0) {
				t.Errorf("warned about fleet: %v, want %v; log:\n%s", warned, tc.wantDropped > 0, logs.String())
			}
		})
	}
}

// TestRetainedCapSurvivesRestart: the counts are rebuilt from the store.
// Retained messages stored without holder records (here: with no cap) are
// put down to the user of the writer's persistent session, and the records
// are written then.
func TestRetainedCapSurvivesRestart(t *testing.T) {
	users := writeUsersFile(t, map[string]string{
		"fleet": "publisher:fleet-pw",
		"t1":    "truck:t1-pw",
		"ops":   "operator:ops-pw",
	})
	dir := t.TempDir()
	start := func(addr string, max int) *Broker {
		return startBroker(t, func(c *Config) {
			if addr != "" {
				c.Listen = addr
			}
			c.UsersFile, c.DataDir, c.MaxRetainedPerUser = users, dir, max
		})
	}
	fleetOpts := func(b *Broker) *paho.ClientOptions {
		return clientOpts(b.Addr()).SetClientID("linkedge-publisher").SetCleanSession(false).
			SetUsername("fleet").SetPassword("fleet-pw")
	}
	b := start("", -1)
	if b.quota != nil {
		t.Fatal("a negative max_retained_per_user still installs the cap")
	}
	fleet := connect(t, fleetOpts(b))
	for _, topic := range []string{pinT1, pinT2, pinT3, pinT4} {
		publish(t, fleet, topic, 1, true, "pin")
	}
	truck := connect(t, clientOpts(b.Addr()).SetClientID("linkedge-truck-t1").SetUsername("t1").SetPassword("t1-pw"))
	publish(t, truck, "linkedge/v1/trucks/t1/status", 1, true, "online")
	fleet.Disconnect(100)
	truck.Disconnect(100)

	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		b = start(addr, 3)
		if got := b.quota.heldBy("fleet"); got != 4 {
			t.Fatalf("start %d: fleet holds %d, want the 4 it retained before", round+1, got)
		}
		if got := b.quota.heldBy("t1"); got != 0 {
			t.Fatalf("start %d: t1 holds %d; trucks are not counted", round+1, got)
		}
		if round == 0 {
			// End fleet's persistent session: the second start can only
			// go by the records the first wrote.
			connect(t, fleetOpts(b).SetCleanSession(true)).Disconnect(100)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}

	b = start(addr, 3)
	fleet = connect(t, fleetOpts(b))
	publish(t, fleet, release, 1, true, "r")
	publish(t, fleet, pinT1, 1, true, "") // 3 held now
	publish(t, fleet, pinT2, 1, true, "pin2")
	publish(t, fleet, release, 1, true, "r") // a new slot: refused
	publish(t, fleet, pinT1, 1, true, "pin1")
	want := map[string]string{pinT2: "pin2", pinT3: "pin", pinT4: "pin", "linkedge/v1/trucks/t1/status": "online"}
	if got := retainedTopics(b); !maps.Equal(got, want) {
		t.Fatalf("retained = %v, want %v", got, want)
	}
	if got := b.auth.retainDropped.Load(); got != 3 {
		t.Errorf("retain_dropped_total = %d, want 3", got)
	}
	fleet.Disconnect(100)

	// Clears are stored too: after a restart fleet holds 3.
	b = restartWith(t, b, func(c *Config) { c.UsersFile, c.DataDir, c.MaxRetainedPerUser = users, dir, 3 })
	if got := b.quota.heldBy("fleet"); got != 3 {
		t.Errorf("after the clear and a restart fleet holds %d, want 3", got)
	}
}

// restartWith closes b and starts a new broker on its address, configured
// by mod.
func restartWith(t *testing.T, b *Broker, mod func(*Config)) *Broker {
	t.Helper()
	addr := b.Addr()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return startBroker(t, func(c *Config) {
		c.Listen = addr
		mod(c)
	})
}

func TestMaxRetainedPerUserConfig(t *testing.T) {
	if got := DefaultConfig().MaxRetainedPerUser; got != 50_000 {
		t.Errorf("default max_retained_per_user = %d, want 50,000", got)
	}
	for doc, want := range map[string]int{
		"":                             DefaultMaxRetainedPerUser,
		"max_retained_per_user: 0\n":   DefaultMaxRetainedPerUser,
		"max_retained_per_user: 100\n": 100,
		"max_retained_per_user: -1\n":  -1,
	} {
		cfg, err := ParseConfig([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		cfg.setDefaults()
		if cfg.MaxRetainedPerUser != want {
			t.Errorf("%q: max_retained_per_user = %d, want %d", doc, cfg.MaxRetainedPerUser, want)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%q: %v", doc, err)
		}
	}
	for _, doc := range []string{"max_retained_per_user: lots\n", "max_retained_per_users: 1\n"} {
		if _, err := ParseConfig([]byte(doc)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: err = %v, want ErrInvalidConfig", doc, err)
		}
	}
	// Without a users file there is no user to count.
	if b := newBroker(t, nil); b.quota != nil {
		t.Error("the cap is installed without a users file")
	}
}
