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
		lost     bool
		rewatchs bool
	}{
		{"echo late, view from before the ack", 5, 5, ack.Add(-time.Minute), ack, false, false},
		{"view from after the ack lacks it", 5, 5, ack.Add(time.Second), ack, true, false},
		{"view from after the ack has nothing", 0, 0, ack.Add(time.Second), ack, true, false},
		{"view has it", 7, 7, ack.Add(-time.Minute), ack, false, false},
		{"an older document replaced ours after its echo", 6, 7, ack.Add(-time.Minute), ack, true, false},
		{"view not settled yet", 5, 7, now.Add(-retainedGrace / 2), ack, false, false},
		{"no echo for long: look again", 5, 5, now.Add(-time.Hour), now.Add(-echoWait - time.Second), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &session{retained: map[string]int64{"m": tt.serial}, echoed: map[string]int64{"m": tt.echoed}, watchSince: tt.since}
			if tt.serial == 0 {
				delete(s.retained, "m")
			}
			p := &Publisher{sess: s}
			got := p.lostByBroker("m", &Announcement{Serial: 7, AckedAt: tt.acked})
			if got != tt.lost {
				t.Errorf("lost = %v, want %v", got, tt.lost)
			}
			if rewatched := !p.rewatched.IsZero(); rewatched != tt.rewatchs {
				t.Errorf("looked again = %v, want %v", rewatched, tt.rewatchs)
			}
		})
	}
}
