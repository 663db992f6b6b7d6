package publisher

import (
	"testing"
	"time"
)

// TestLostByBroker: only a view of the retained releases subscribed after
// an announcement was acknowledged can show it lost. A view from before
// waits for the announcement's echo, which a busy broker delivers late:
// taking that wait for a loss announced the release again to every truck
// (seen with 1,000 trucks in `linkedge bench fleet`).
func TestLostByBroker(t *testing.T) {
	now := time.Now()
	ack := now.Add(-3 * time.Second) // past the old fixed 2 s grace
	tests := []struct {
		name     string
		serial   int64 // retained serial in the view
		echoed   int64 // highest serial the view saw
		since    time.Time
		acked    time.Time
		looked   time.Time // when the publisher last took a fresh view
		lost     bool
		rewatchs bool // takes a fresh view now
	}{
		{"echo late, view from before the ack: confirm", 5, 5, ack.Add(-time.Minute), ack, time.Time{}, false, true},
		{"echo late, already confirming", 5, 5, ack.Add(-time.Minute), ack, ack.Add(time.Second), false, false},
		{"view from after the ack lacks it", 5, 5, ack.Add(time.Second), ack, time.Time{}, true, false},
		{"view from after the ack has nothing", 0, 0, ack.Add(time.Second), ack, time.Time{}, true, false},
		{"view has it, from after the ack", 7, 7, ack.Add(time.Second), ack, time.Time{}, false, false},
		// The echoes came in the other order than the broker stored them:
		// only a fresh view can tell, so it is taken.
		{"view has it, from before the ack: confirm", 7, 7, ack.Add(-time.Minute), ack, time.Time{}, false, true},
		{"view has it, just acknowledged", 7, 7, ack.Add(-time.Minute), now, time.Time{}, false, false},
		{"an older document replaced ours after its echo", 6, 7, ack.Add(-time.Minute), ack, time.Time{}, true, false},
		{"view not settled yet", 5, 7, now.Add(-retainedGrace / 2), ack, time.Time{}, false, false},
		{"no echo for long: look again", 5, 5, now.Add(-time.Hour), now.Add(-echoWait - time.Second), time.Time{}, false, true},
		{"no echo, looked a moment ago", 5, 5, now.Add(-time.Hour), now.Add(-echoWait - time.Second), now.Add(-time.Second), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &session{retained: map[string]int64{"m": tt.serial}, echoed: map[string]int64{"m": tt.echoed}, watchSince: tt.since}
			if tt.serial == 0 {
				delete(s.retained, "m")
			}
			p := &Publisher{sess: s, rewatched: tt.looked}
			got := p.lostByBroker("m", &Announcement{Serial: 7, AckedAt: tt.acked})
			if got != tt.lost {
				t.Errorf("lost = %v, want %v", got, tt.lost)
			}
			if rewatched := !p.rewatched.Equal(tt.looked); rewatched != tt.rewatchs {
				t.Errorf("looked again = %v, want %v", rewatched, tt.rewatchs)
			}
		})
	}
}
