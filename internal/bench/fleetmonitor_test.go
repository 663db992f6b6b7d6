package bench

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// The fleet monitor shows a truck online only if its status and its
// presence say so; each presence "online" marks when it came back (a
// retained one too: the monitor gets it only as it subscribes again, after
// a broker restart); an older agent's will on the status topic still shows
// it offline.
func TestFleetMonitorPresence(t *testing.T) {
	m := &fleetMonitor{trucks: map[string]truckView{}, presence: map[string]presenceSeen{}, changed: map[string]time.Time{}, seen: map[int64]bool{}}
	base := time.Unix(1_800_000_000, 0)
	line := func(i int, topic string, payload []byte, retained bool) {
		data, _ := json.Marshal(monitorLine{Topic: topic, At: base.Add(time.Duration(i) * time.Second).UnixNano(), Payload: payload, Retained: retained})
		m.observe(data)
	}
	st, _ := json.Marshal(status.Status{Schema: status.Schema, Truck: "t1", Online: true, Model: "m", Version: 2, Phase: "committed", LastSeen: base})
	steps := []struct {
		topic    string
		payload  []byte
		retained bool
		online   bool
		backAt   int // seconds after base; -1: none
	}{
		{topics.TruckPresence("t1"), []byte(status.PresenceOnline), true, false, -1}, // before any status: no truck yet
		{topics.TruckStatus("t1"), st, true, true, 0},
		{topics.TruckPresence("t1"), []byte(status.PresenceOffline), false, false, 0}, // the will
		{topics.TruckPresence("t1"), []byte(status.PresenceOnline), false, true, 3},   // back
		{topics.TruckPresence("t1"), []byte(status.PresenceOnline), true, true, 4},    // the retained copy, after the monitor subscribed again
		{topics.TruckStatus("t1"), []byte(`{"schema":"linkedge.status/v1","truck":"t1","model":"m","online":false,"phase":"offline"}`), false, false, 4},
	}
	for i, s := range steps {
		line(i, s.topic, s.payload, s.retained)
		v, ok := m.view("t1")
		if i == 0 {
			if ok {
				t.Fatalf("step 0: a presence alone made a truck: %+v", v)
			}
			continue
		}
		if !ok || v.online != s.online {
			t.Fatalf("step %d: view %+v (known %v), want online=%v", i, v, ok, s.online)
		}
		if want := base.Add(time.Duration(s.backAt) * time.Second); (s.backAt < 0 && !v.backAt.IsZero()) || (s.backAt >= 0 && !v.backAt.Equal(want)) {
			t.Fatalf("step %d: back at %v, want %d s after base", i, v.backAt, s.backAt)
		}
		if i < 5 && v.version != 2 {
			t.Fatalf("step %d: version %d, want the status's 2 kept", i, v.version)
		}
	}
}
