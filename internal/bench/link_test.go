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
		Transports: []string{TransportTCP}, Idle: 3 * time.Second, Reconnects: 1, Alerts: 5, AlertGap: 50 * time.Millisecond, Burst: 200,
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
	case len(rc) != 1 || rc[0].Wire.Conns != 1 || rc[0].Wire.Payload[0] < 150 || rc[0].Wire.Total() < 600: // CONNECT with its will, CONNACK, the presence and their segments; no SUBSCRIBE on a kept session
		t.Errorf("reconnect: %+v, want one connection carrying at least a CONNECT and the presence", rc)
	case r.Alerts.Wire.Payload[0] < int64(r.AlertCount)*150 || f.Per1000Alerts == 0:
		t.Errorf("alerts: %d bytes up for %d alerts, want at least 150 each", r.Alerts.Wire.Payload[0], r.AlertCount)
	case r.BurstCount != 200 || r.Burst.Wire.Payload[0] < 200*100:
		t.Errorf("burst: %d bytes up for %d alerts, want 200 alerts of at least 100 B", r.Burst.Wire.Payload[0], r.BurstCount)
	}
	// A burst goes out in batches: per alert, it must cost well under an
	// alert sent alone (its own PUBLISH, PUBACK and segments).
	perAlone := float64(r.Alerts.Wire.Total()) / float64(r.AlertCount)
	if perBurst := float64(r.Burst.Wire.Total()) / float64(r.BurstCount); perBurst > 0.75*perAlone {
		t.Errorf("burst: %.0f B per alert, alone %.0f B: the burst was not batched", perBurst, perAlone)
	}
	if md := rep.Markdown(); !strings.Contains(md, "| plain TCP | idle |") || !strings.Contains(md, "per 30-day month") {
		t.Errorf("Markdown lacks its rows:\n%s", md)
	}
}

// TestLinkSmokeKeepaliveCycles runs the idle window the way the cellular
// profile needs it, with a heartbeat rarer than an hour: two keepalive
// cycles, burst to burst, and the heartbeats added from the status
// document's size.
func TestLinkSmokeKeepaliveCycles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker, a publisher and an agent")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := RunLink(ctx, LinkConfig{
		Transports: []string{TransportTCP}, Reconnects: 1, Alerts: 1, AlertGap: 50 * time.Millisecond, Burst: -1,
		StatusInterval: 2 * time.Hour, KeepAlive: 2 * time.Second, Probation: 500 * time.Millisecond, PublisherPoll: 100 * time.Millisecond,
		Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results[0]
	t.Logf("%s", rep.Markdown())
	if r.HeartbeatInWindow || r.Cycle != 2*time.Second || r.Pings != 2 {
		t.Fatalf("cycle %s, heartbeat in window %v, pings %d; want 2s, false, 2", r.Cycle, r.HeartbeatInWindow, r.Pings)
	}
	// paho checks every keepalive/4 for a keepalive of 10 s or less, so
	// two cycles are 2 to 2.5 keepalives apart.
	if r.IdleSpan < 3900*time.Millisecond || r.IdleSpan > 5200*time.Millisecond {
		t.Errorf("idle span %s, want two keepalive cycles of 2 s", r.IdleSpan)
	}
	// Two pings: PINGREQ and PINGRESP are 2 bytes each.
	if up, down := r.Idle.Wire.Payload[0], r.Idle.Wire.Payload[1]; up != 4 || down != 4 {
		t.Errorf("idle payload %d up, %d down; want two PINGREQs and two PINGRESPs", up, down)
	}
	hb, renew := r.MonthlyDocuments()
	if want := 360 * documentBytes(r.StatusBytes, "x", false); hb < want || renew <= 0 || r.ReleaseBytes < 500 {
		t.Errorf("monthly heartbeats %.0f B (want above %.0f: 360 status documents of %d B), renewals %.0f B (release %d B)", hb, want, r.StatusBytes, renew, r.ReleaseBytes)
	}
	if f := r.Estimated(); f.IdleMonth < r.IdleRate()*Month.Seconds()+hb+renew-1 {
		t.Errorf("idle month %.0f B lacks the documents", f.IdleMonth)
	}
}

func TestIdleCycle(t *testing.T) {
	for _, tc := range []struct {
		status, keepAlive, cycle time.Duration
		heartbeat                bool
	}{
		{30 * time.Second, 30 * time.Second, 30 * time.Second, true},
		{5 * time.Minute, time.Minute, 5 * time.Minute, true},       // wifi
		{time.Hour, 10 * time.Minute, time.Hour, true},              // an hour is still waited for
		{24 * time.Hour, 10 * time.Minute, 10 * time.Minute, false}, // cellular
		{24 * time.Hour, 20 * time.Minute, 20 * time.Minute, false}, // satellite
		{24 * time.Hour, 0, 24 * time.Hour, true},                   // no keepalive: only heartbeats
		{2 * time.Hour, 3 * time.Hour, 2 * time.Hour, true},         // keepalive longer than the heartbeat
	} {
		c, hb := IdleCycle(tc.status, tc.keepAlive)
		if c != tc.cycle || hb != tc.heartbeat {
			t.Errorf("IdleCycle(%s, %s) = %s, %v; want %s, %v", tc.status, tc.keepAlive, c, hb, tc.cycle, tc.heartbeat)
		}
	}
}

func TestArtifactFraming(t *testing.T) {
	for _, tc := range []struct{ n, want int64 }{
		{0, 0},
		{1, 104},                      // one segment and its ACK
		{1448, 104},                   // still one
		{1449, 156},                   // two segments, one ACK
		{41512, 29*52 + 15*52},        // the APS v2 bundle
		{10 << 20, 7242*52 + 3621*52}, // a 10 MiB model: about 5.4 %
	} {
		if got := ArtifactFraming(tc.n); got != tc.want {
			t.Errorf("ArtifactFraming(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}
