package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/topics"
)

// TestFleetTable reads retained statuses and presences from a real broker:
// a truck whose presence is its last will shows offline, with its status.
func TestFleetTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	url := "tcp://" + b.Addr()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-trucks"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	for _, s := range []status.Status{
		{Schema: status.Schema, Truck: "truck-1", Online: true, Model: "aps-failure", Version: 2, Desired: 2, Phase: "committed", Predictions: 1200, Alerts: 17, LastSeen: time.Now()},
		{Schema: status.Schema, Truck: "truck-2", Online: true, Model: "aps-failure", Version: 1, Desired: 2, Phase: "downloading", Downloaded: 50, Total: 100, LastSeen: time.Now(), LastError: "paused"},
	} {
		data, _ := json.Marshal(s)
		c.Publish(topics.TruckStatus(s.Truck), 1, true, data).Wait()
	}
	// Presence: truck-1 connected, truck-2's last will (on its presence
	// topic; its status stays as it was).
	c.Publish(topics.TruckPresence("truck-1"), 1, true, status.PresenceOnline).Wait()
	c.Publish(topics.TruckPresence("truck-2"), 1, true, status.PresenceOffline).Wait()
	// A7: truck-3's login writes a status that claims to be truck-1's; the
	// table goes by the topic.
	liar, _ := json.Marshal(status.Status{Schema: status.Schema, Truck: "truck-1", Online: true, Model: "aps-failure", Version: 9, Phase: "committed"})
	c.Publish(topics.TruckStatus("truck-3"), 1, true, liar).Wait()
	if tok := c.Publish(topics.ModelRelease("aps-failure"), 1, true,
		[]byte(`{"schema":"linkedge.release/v1","model":"aps-failure","serial":17,"stable":{"version":1},"canary":{"version":2,"percent":5,"groups":["early"]}}`)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	var out bytes.Buffer
	if err := runFleet(ctx, &out, io.Discard, url, "", "", tlsconfig.Client{}, 500*time.Millisecond, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"release aps-failure: stable v1, canary v2 for groups early and 5% of the other trucks (serial 17)", "truck-1  true", "v2", "truck-2  false", "downloading", "50%", "paused", "17/1200", "truck-3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "truck-1 ") && strings.Contains(line, "v9") {
			t.Errorf("truck-3's status was shown as truck-1's: %q", line)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
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

// Issue 12 #10: --watch stays current across a broker restart (it
// subscribes again on every connect), and says on stderr while it is not.
func TestFleetWatchSurvivesBrokerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(addr string) *broker.Broker {
		b, err := broker.New(broker.Config{Listen: addr})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := start("127.0.0.1:0")
	addr := b.Addr()
	url := "tcp://" + addr
	publishStatus := func(truck string, version int64) {
		t.Helper()
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-" + truck))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		defer c.Disconnect(100)
		data, _ := json.Marshal(status.Status{Schema: status.Schema, Truck: truck, Online: true, Model: "aps-failure", Version: version, Phase: "committed", LastSeen: time.Now()})
		c.Publish(topics.TruckStatus(truck), 1, true, data).WaitTimeout(5 * time.Second)
	}
	publishStatus("truck-1", 1)
	var out, notes syncBuffer
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- runFleet(wctx, &out, &notes, url, "", "", tlsconfig.Client{}, 200*time.Millisecond, true)
	}()
	defer func() {
		stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the watch did not stop")
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("waiting for %s; output:\n%s\nnotes:\n%s", what, out.String(), notes.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("truck-1 in the table", func() bool { return strings.Contains(out.String(), "truck-1") })
	b.Close()
	waitFor("the stale note", func() bool { return strings.Contains(notes.String(), "lost the connection") })
	b = start(addr)
	defer b.Close()
	publishStatus("truck-2", 2)
	waitFor("truck-2, reported after the restart", func() bool { return strings.Contains(out.String(), "truck-2") })
	waitFor("the note that the view is current", func() bool { return strings.Contains(notes.String(), "current again") })
}
