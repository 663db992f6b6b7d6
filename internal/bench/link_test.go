package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestLinkSmoke runs the link bench briefly over plain TCP, with intervals
// short enough that a few seconds of idle mean something, and checks that
// its numbers are sane: the idle rate within a factor of two of what the
// configured intervals predict, and every event costing something.
func TestLinkSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker, a publisher and an agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	rep, err := RunLink(ctx, LinkConfig{
		Transports: []string{TransportTCP}, Idle: 3 * time.Second, Reconnects: 1, Alerts: 5, AlertGap: 50 * time.Millisecond,
		StatusInterval: 500 * time.Millisecond, Probation: 500 * time.Millisecond, PublisherPoll: 100 * time.Millisecond,
		Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("took %s\n%s", time.Since(start).Round(100*time.Millisecond), rep.Markdown())
	if len(rep.Results) != 1 {
		t.Fatalf("%d results, want 1", len(rep.Results))
	}
	r := rep.Results[0]
	if r.StatusInterval != 500*time.Millisecond || r.KeepAlive <= 0 || r.Probation != 500*time.Millisecond {
		t.Errorf("effective settings %s %s %s", r.StatusInterval, r.KeepAlive, r.Probation)
	}
	if rate := r.IdleRate(); r.Expected <= 0 || rate < r.Expected/2 || rate > 2*r.Expected {
		t.Errorf("idle: %.0f B/s measured, %.0f B/s expected from a status every %s", rate, r.Expected, r.StatusInterval)
	}
	if r.Idle.Wire.Payload[0] < int64(3*r.StatusBytes) {
		t.Errorf("idle: %d bytes up in %s, less than three status documents of %d", r.Idle.Wire.Payload[0], r.Idle.Duration(), r.StatusBytes)
	}
	// The event figures have the idle rate times their window taken off,
	// which with a heartbeat every 0.5 s is most of a short window; so the
	// events are checked on their raw windows.
	f := r.Estimated()
	rc := r.Reconnects
	switch {
	case f.IdleMonth <= 0:
		t.Errorf("idle month %v", f.IdleMonth)
	case r.Update.Wire.Payload[1] < r.Artifact:
		t.Errorf("update: %d bytes down, less than the artifact's %d", r.Update.Wire.Payload[1], r.Artifact)
	case f.UpdateBeyond < 1000:
		t.Errorf("update beyond the artifact: %.0f B, want at least the release and a few status reports", f.UpdateBeyond)
	case len(rc) != 1 || rc[0].Wire.Conns != 1 || rc[0].Wire.Payload[0] < 300 || rc[0].Wire.Total() < 600: // CONNECT, CONNACK, a status and their segments; no SUBSCRIBE on a kept session
		t.Errorf("reconnect: %+v, want one connection carrying at least a CONNECT and a status", rc)
	case r.Alerts.Wire.Payload[0] < int64(r.AlertCount)*150 || f.Per1000Alerts == 0:
		t.Errorf("alerts: %d bytes up for %d alerts, want at least 150 each", r.Alerts.Wire.Payload[0], r.AlertCount)
	}
	if md := rep.Markdown(); !strings.Contains(md, "| plain TCP | idle |") || !strings.Contains(md, "per 30-day month") {
		t.Errorf("Markdown lacks its rows:\n%s", md)
	}
}
