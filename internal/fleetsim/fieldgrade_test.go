package fleetsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// events records every truck event on the fleet broker, as an operator's
// tool (or the publisher's rollout logic) would hear them.
type events struct {
	mu   sync.Mutex
	list []status.Event
}

func watchEvents(t *testing.T, brokerURL string) *events {
	t.Helper()
	ev := &events{}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID(fmt.Sprintf("events-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("events client: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(topics.Prefix+"/trucks/+/events", 1, func(_ paho.Client, m paho.Message) {
		var e status.Event
		if json.Unmarshal(m.Payload(), &e) == nil {
			ev.mu.Lock()
			ev.list = append(ev.list, e)
			ev.mu.Unlock()
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe events: %v", tok.Error())
	}
	return ev
}

func (ev *events) kinds(version int64) []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []string
	for _, e := range ev.list {
		if e.Version == version {
			out = append(out, e.Kind)
		}
	}
	return out
}

// has reports whether truck sent an event of kind whose detail contains detail.
func (ev *events) has(truck, kind, detail string) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.list {
		if e.Truck == truck && e.Kind == kind && strings.Contains(e.Detail, detail) {
			return true
		}
	}
	return false
}

// noFailure fails the test if any event reported version as failed or
// rolled back: the publisher would count that against a healthy rollout.
func (ev *events) noFailure(t *testing.T, version int64) {
	t.Helper()
	for _, k := range ev.kinds(version) {
		if k == status.EventUpdateFailed || k == status.EventRolledBack {
			t.Fatalf("v%d reported %s (events %v); nothing was wrong with it", version, k, ev.kinds(version))
		}
	}
}

func approveBundle(ctx context.Context, t *testing.T, f *Fleet, data []byte) {
	t.Helper()
	e, err := f.Register(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.Approve(e.Model, e.Version, "test"); err != nil {
		t.Fatal(err)
	}
}

// oneTruckOnV1 starts a fleet of one truck with opts (Trucks is set to 1)
// and waits until it serves v1. The fleet closes with the test.
func oneTruckOnV1(ctx context.Context, t *testing.T, opts Options) (*Fleet, *Truck) {
	t.Helper()
	opts.Trucks = 1
	f, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	approveBundle(ctx, t, f, apsmodels.V1())
	if err := WaitVersion(ctx, 1, f.Trucks[0]); err != nil {
		t.Fatal(err)
	}
	return f, f.Trucks[0]
}

// TestBadArtifactResponsesDoNotBlacklist (C): a 404, a captive portal's
// HTML page and a flipped byte on the artifact link, one after the other,
// are retried; the truck commits the version once the link behaves, reports
// no failure, and records nothing against the version.
func TestBadArtifactResponsesDoNotBlacklist(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: dir, Probation: 300 * time.Millisecond, HTTPClients: 1})
	ev := watchEvents(t, f.BrokerURL)

	var n atomic.Int32
	f.SetArtifactFault(func(w http.ResponseWriter, r *http.Request) bool {
		switch n.Add(1) {
		case 1:
			http.Error(w, "no such key", http.StatusNotFound)
		case 2:
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>Please accept the terms of use.</body></html>\n")
		case 3:
			resp, err := http.Get(r.URL.String())
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return true
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body[len(body)/2] ^= 0x01
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body)
		default:
			return false
		}
		return true
	})
	approveBundle(ctx, t, f, apsmodels.V2())
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	if n.Load() < 4 {
		t.Fatalf("only %d artifact requests: the faults were not all met", n.Load())
	}
	ev.noFailure(t, 2)
	if data, err := os.ReadFile(filepath.Join(dir, tr.ID, "failed.json")); err == nil && len(bytes.TrimSpace(data)) > 2 {
		t.Fatalf("failed.json records a good version: %s", data)
	}
}

// TestLinkDropsDuringProbation (B): the fleet link going down while the new
// version is on probation does not roll it back: only what it serves judges it.
func TestLinkDropsDuringProbation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: t.TempDir(), Probation: 3 * time.Second, HTTPClients: 1})
	ev := watchEvents(t, f.BrokerURL)
	approveBundle(ctx, t, f, apsmodels.V2())
	if err := WaitFor(ctx, "v2 on probation", func() bool {
		st := tr.Agent.Status()
		return st.Phase == "probation" && st.Desired == 2
	}); err != nil {
		t.Fatal(err)
	}
	tr.Link.Cut()
	if err := WaitFor(ctx, "v2 committed while offline", func() bool {
		st := tr.Agent.Status()
		return st.Phase == "committed" && st.Version == 2
	}); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	tr.Link.Restore()
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatal(err)
	}
	ev.noFailure(t, 2)
}

// TestRestartsDuringUpdate (B): the agent stopped during the download and
// again during probation loses nothing: no attempt is counted, nothing is
// reported failed, and the update completes after the restarts.
func TestRestartsDuringUpdate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: dir, Probation: 4 * time.Second, HTTPClients: 1})
	ev := watchEvents(t, f.BrokerURL)
	tr.Link.SetRate(8 << 10) // v2 takes a few seconds to download
	approveBundle(ctx, t, f, apsmodels.V2())
	for i := range 2 {
		if err := WaitFor(ctx, "v2 downloading", func() bool {
			st := tr.agent().Status()
			return st.Phase == "downloading" && st.Downloaded > 0
		}); err != nil {
			t.Fatal(err)
		}
		if err := tr.Restart(ctx); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
	}
	tr.Link.SetRate(0)
	for i := range 3 {
		if err := WaitFor(ctx, "v2 on probation", func() bool {
			st := tr.agent().Status()
			return st.Phase == "probation" && st.Desired == 2
		}); err != nil {
			t.Fatal(err)
		}
		if err := tr.Restart(ctx); err != nil {
			t.Fatalf("restart in probation %d: %v", i, err)
		}
		if v := tr.Version(); v != 1 {
			t.Fatalf("after a restart in probation the truck serves v%d, want the committed v1", v)
		}
	}
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatalf("%v; status %+v", err, tr.agent().Status())
	}
	ev.noFailure(t, 2)
	var rec struct {
		Attempt int `json:"attempt"`
	}
	data, _ := os.ReadFile(filepath.Join(dir, tr.ID, "update.json"))
	if json.Unmarshal(data, &rec); rec.Attempt != 0 {
		t.Fatalf("update.json counts %d attempts after interruptions only", rec.Attempt)
	}
}

// TestSafetyHoldEndToEnd (9): two truck applications hold the switch, one
// over HTTP and one on the local bus; v2 downloads and is checked, the
// status says held and why, and the switch happens only once both let go.
func TestSafetyHoldEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	f, tr := oneTruckOnV1(ctx, t, Options{Dir: dir, Probation: 300 * time.Millisecond, HTTPClients: 1})

	base := "http://" + tr.Agent.HTTPAddr()
	req, _ := http.NewRequest("PUT", base+"/v1/hold/nav", strings.NewReader(`{"reason":"vehicle moving","ttl":"10m"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT hold: %v %v", resp, err)
	}
	resp.Body.Close()
	bus := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + tr.Agent.LocalBrokerAddr()).SetClientID("crane-app"))
	if tok := bus.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer bus.Disconnect(100)
	if tok := bus.Publish(topics.LocalHold("crane"), topics.LocalHoldQoS, topics.LocalHoldRetain, []byte(`{"reason":"unloading"}`)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	approveBundle(ctx, t, f, apsmodels.V2())
	if err := WaitFor(ctx, "v2 held by both", func() bool {
		st := tr.Agent.Status()
		return st.Phase == "held" && strings.Contains(st.Hold, "vehicle moving") && strings.Contains(st.Hold, "unloading")
	}); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	if v := tr.Version(); v != 1 {
		t.Fatalf("switched to v%d while held", v)
	}
	req, _ = http.NewRequest("DELETE", base+"/v1/hold/nav", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("DELETE hold: %v %v", resp, err)
	}
	time.Sleep(500 * time.Millisecond) // the crane still holds: nothing may switch
	if st := tr.Agent.Status(); st.Version != 1 || !strings.Contains(st.Hold, "unloading") {
		t.Fatalf("after one release of two: %+v", st)
	}
	if tok := bus.Publish(topics.LocalHold("crane"), topics.LocalHoldQoS, topics.LocalHoldRetain, []byte{}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	if st := tr.Agent.Status(); st.Hold != "" {
		t.Fatalf("hold still reported after release: %q", st.Hold)
	}
}
