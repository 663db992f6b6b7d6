package publisher

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// TestCanaryFailuresSurviveRestart: with halt_after 2, one truck's failure
// heard before a publisher restart and another truck's after it halt the
// rollout. Before, the count started again at every restart. The same
// truck reporting twice counts once.
func TestCanaryFailuresSurviveRestart(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	e := newEnv(t)
	e.add("aps", 1, true)
	cfg := e.config(b.Addr())
	cfg.Rollout = &RolloutConfig{Groups: []string{"early"}, HaltAfter: 2, Soak: time.Hour}
	s := subscribe(t, b.Addr(), "aps")

	p1 := start(t, cfg)
	if r := e.verify(s.next()); r.Stable.Version != 1 || r.Canary != nil {
		t.Fatalf("first release: stable %d, canary %+v", r.Stable.Version, r.Canary)
	}
	e.add("aps", 2, true)
	if r := e.verify(s.next()); r.Stable.Version != 1 || r.Canary == nil || r.Canary.Version != 2 {
		t.Fatalf("second release: stable %d, canary %+v", r.Stable.Version, r.Canary)
	}
	waitState(t, e, "the canary's soak to start", func(ms *ModelState) bool {
		return ms.Rollout != nil && !ms.Rollout.StartedAt.IsZero()
	})

	t1 := truckClient(t, b.Addr(), "t1")
	failed(t, t1, "t1", 2, "golden samples failed")
	failed(t, t1, "t1", 2, "golden samples failed") // again: still one truck
	waitState(t, e, "t1's failure to be recorded", func(ms *ModelState) bool {
		return ms.Rollout.Failures["t1"] == "golden samples failed"
	})
	time.Sleep(300 * time.Millisecond) // several polls: one truck must not halt it
	if ms := e.state().Models["aps"]; ms.Rollout.Halted() || len(ms.Rollout.Failures) != 1 {
		t.Fatalf("after t1 alone: rollout %+v", ms.Rollout)
	}
	s.none(0)
	p1.stop()

	// The restarted publisher (same session, same state file) has heard
	// nothing of t1 itself: t1's events were acknowledged before the stop.
	p2 := start(t, cfg)
	waitConnected(t, p2.Publisher)
	t2 := truckClient(t, b.Addr(), "t2")
	failed(t, t2, "t2", 2, "probation: 3 failures")
	r := e.verify(s.next())
	if r.Stable.Version != 1 || r.Canary != nil {
		t.Fatalf("after t2: stable %d, canary %+v, want the canary withdrawn", r.Stable.Version, r.Canary)
	}
	// The broker passes the document on before it acknowledges it, and the
	// halt is recorded on the acknowledgement.
	waitState(t, e, "the halt to be recorded", func(ms *ModelState) bool { return ms.Rollout.Halted() })
	if ms := e.state().Models["aps"]; !strings.Contains(ms.Rollout.HaltReason, "2 canary truck(s) failed it: t1, t2") {
		t.Fatalf("rollout %+v, want halted by t1 and t2", ms.Rollout)
	}
	if h := p2.sess.CanaryHealth("aps", 2); len(h.Failed) != 1 || h.Failed["t2"] == "" {
		t.Errorf("the restarted publisher heard %v itself; t1 must have come from the state file", h.Failed)
	}
}

// waitState waits (bounded) until the state file's entry for aps satisfies
// ok.
func waitState(t *testing.T, e *env, what string, ok func(*ModelState) bool) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); ; {
		if ms := e.state().Models["aps"]; ms != nil && ok(ms) {
			return
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(e.reg.Dir(), DefaultStateFileName))
			t.Fatalf("waiting for %s; state file:\n%s", what, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func truckClient(t *testing.T, addr, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("test-truck-" + id).SetConnectTimeout(waitFor))
	if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// failed publishes what a canary truck whose update to version failed
// sends: its status while it tried, targeting the version (which is how the
// publisher knows it is in a canary group), and the update_failed event.
// (The status that says "failed" never arrives: the truck went offline
// first, the case the events are for.)
func failed(t *testing.T, c paho.Client, truck string, version int64, detail string) {
	t.Helper()
	st, _ := json.Marshal(status.Status{Schema: status.Schema, Truck: truck, Online: true, Model: "aps", Version: version - 1,
		Desired: version, Phase: "downloading"})
	if tok := c.Publish(topics.TruckStatus(truck), topics.StatusQoS, true, st); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("publish %s's status: %v", truck, tok.Error())
	}
	data, _ := json.Marshal(status.Event{Schema: status.Schema, Truck: truck, Model: "aps",
		Kind: status.EventUpdateFailed, Version: version, Detail: detail})
	if tok := c.Publish(topics.TruckEvents(truck), topics.EventsQoS, false, data); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("publish %s's event: %v", truck, tok.Error())
	}
}

// fakeMessage is a paho.Message that records its acknowledgement.
type fakeMessage struct {
	topic   string
	payload []byte
	acked   atomic.Bool
}

func (m *fakeMessage) Duplicate() bool   { return false }
func (m *fakeMessage) Qos() byte         { return 1 }
func (m *fakeMessage) Retained() bool    { return false }
func (m *fakeMessage) Topic() string     { return m.topic }
func (m *fakeMessage) MessageID() uint16 { return 1 }
func (m *fakeMessage) Payload() []byte   { return m.payload }
func (m *fakeMessage) Ack()              { m.acked.Store(true) }

func eventMessage(truck, kind string, version int64) *fakeMessage {
	data, _ := json.Marshal(status.Event{Schema: status.Schema, Truck: truck, Model: "aps", Kind: kind, Version: version, Detail: "d-" + truck})
	return &fakeMessage{topic: topics.TruckEvents(truck), payload: data}
}

// waitAcked waits (bounded) for m's acknowledgement.
func waitAcked(t *testing.T, m *fakeMessage, what string) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); !m.acked.Load(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never acknowledged", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFailureAckedOnlyOncePersisted: a failure event is acknowledged to the
// broker only once it is in the state file, so a publisher that stops or
// dies before gets it again from the broker. Other events are acknowledged
// at once, and so is a failure the file holds already, or one of a version
// that is not in rollout (recorded nowhere: it cannot halt anything).
func TestFailureAckedOnlyOncePersisted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	sha := strings.Repeat("ab", 32)
	st := &State{Schema: StateSchema, Models: map[string]*ModelState{
		"aps": {Rollout: &Rollout{Version: 2, SHA256: sha, StartedAt: time.Now().UTC()}},
	}}
	state := NewStateFile(path)
	if err := state.save(st); err != nil {
		t.Fatal(err)
	}
	cfg := Config{}
	pokes := atomic.Int32{}
	sess := newSession(&cfg, testLogger(), nil, nil, func() { pokes.Add(1) })
	p := &Publisher{log: testLogger(), state: state, sess: sess}

	committed := eventMessage("t0", status.EventUpdateCommitted, 2)
	sess.onEvent(committed)
	if !committed.acked.Load() {
		t.Error("a committed event was not acknowledged at once")
	}
	first := eventMessage("t1", status.EventUpdateFailed, 2)
	sess.onEvent(first)
	other := eventMessage("t2", status.EventRolledBack, 7) // no rollout of v7
	sess.onEvent(other)
	if first.acked.Load() || other.acked.Load() {
		t.Fatal("a failure was acknowledged before it was persisted")
	}
	if pokes.Load() == 0 {
		t.Error("the poll loop was not woken for a failure")
	}

	// The state file cannot be written (its folder is gone): nothing is
	// acknowledged, and the failures wait for the next try.
	p.state = NewStateFile(filepath.Join(dir, "gone", "state.json"))
	if err := p.persistFailures(t.Context()); err == nil {
		t.Fatal("persisting into a missing folder succeeded")
	}
	time.Sleep(50 * time.Millisecond)
	if first.acked.Load() || len(sess.pendingFailures()) != 2 {
		t.Fatalf("after a failed write: acked %v, pending %d", first.acked.Load(), len(sess.pendingFailures()))
	}

	p.state = state
	if err := p.persistFailures(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, first, "t1's failure, persisted")
	waitAcked(t, other, "t2's failure of a version not in rollout")
	got, err := state.Load()
	if err != nil {
		t.Fatal(err)
	}
	if f := got.Models["aps"].Rollout.Failures; len(f) != 1 || f["t1"] != "d-t1" {
		t.Fatalf("persisted failures %v, want t1 only", f)
	}
	if n := len(sess.pendingFailures()); n != 0 {
		t.Errorf("%d failures still pending", n)
	}

	// The same truck again (a redelivery): acknowledged at once.
	again := eventMessage("t1", status.EventUpdateFailed, 2)
	sess.onEvent(again)
	if !again.acked.Load() {
		t.Error("a failure the state file holds was not acknowledged at once")
	}
}

func TestParseStateWithFailures(t *testing.T) {
	doc := strings.Replace(goodState, `"acked_at": "2025-01-01T00:00:00.2Z"
      }`, `"acked_at": "2025-01-01T00:00:00.2Z"
      },
      "rollout": {"version": 3, "sha256": "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "started_at": "2025-01-01T00:00:00.2Z", "failures": {"t1": "golden samples failed", "t2": ""}}`, 1)
	s, err := ParseState([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if f := s.Models["aps"].Rollout.Failures; len(f) != 2 || f["t1"] != "golden samples failed" {
		t.Fatalf("failures %v", f)
	}
	for name, bad := range map[string]string{
		"bad truck id":   strings.Replace(doc, `"t1":`, `"t/1":`, 1),
		"long detail":    strings.Replace(doc, `"golden samples failed"`, `"`+strings.Repeat("x", maxFailureDetail+1)+`"`, 1),
		"not an object":  strings.Replace(doc, `{"t1": "golden samples failed", "t2": ""}`, `["t1"]`, 1),
		"too many":       strings.Replace(doc, `"t2": ""`, manyFailures(maxRolloutFailures), 1),
		"misspelt field": strings.Replace(doc, `"failures"`, `"failure"`, 1),
	} {
		if _, err := ParseState([]byte(bad)); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: %v, want ErrCorruptState", name, err)
		}
	}
}

// manyFailures lists n failed trucks as JSON members.
func manyFailures(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = `"t` + strconv.Itoa(i+10) + `": ""`
	}
	return strings.Join(parts, ", ")
}

// TestPlanForCountsPersistedFailures: the failures kept with the rollout
// count towards HaltAfter with those the trucks report now, each truck once,
// and not for a truck that has committed the version since.
func TestPlanForCountsPersistedFailures(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	cfg := &RolloutConfig{Groups: []string{"early"}, HaltAfter: 2}
	cfg.setDefaults()
	v1, v2 := testVersion(1), testVersion(2)
	v2.Artifact.SHA256 = strings.Repeat("cd", 32)
	ms := func(failures map[string]string) *ModelState {
		return &ModelState{
			Announced: &Announcement{Version: 1, SHA256: v1.Artifact.SHA256, Size: v1.Artifact.Size, Runtime: v1.Runtime},
			Rollout:   &Rollout{Version: 2, SHA256: v2.Artifact.SHA256, StartedAt: now.Add(-time.Minute), Failures: failures},
		}
	}
	reports := fixedHealth{Committed: []string{"t3"}, Failed: map[string]string{"t2": "now"}, Settled: true,
		Desired: map[string]int64{"t1": 2, "t2": 2, "t3": 2}} // the canary group's trucks target v2
	for _, tc := range []struct {
		name      string
		persisted map[string]string
		halt      bool
		trucks    string
	}{
		{"another truck before the restart", map[string]string{"t1": "before"}, true, "t1, t2"},
		{"the same truck before and after", map[string]string{"t2": "before"}, false, ""},
		{"a truck that made it since", map[string]string{"t3": "before"}, false, ""},
		{"none", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl, halting, note := planFor(cfg, reports, []Version{v1, v2}, v2, ms(tc.persisted), nil, now)
			if halting != tc.halt || pl.Rollout.Halted() != tc.halt {
				t.Fatalf("halting %v (rollout %+v), want %v; note %q", halting, pl.Rollout, tc.halt, note)
			}
			if tc.halt && !strings.Contains(note, tc.trucks) {
				t.Errorf("note %q does not name %s", note, tc.trucks)
			}
			if _, ok := reports.Failed["t1"]; ok {
				t.Fatal("planFor changed the session's report")
			}
		})
	}
}

func TestWithRecordedFailures(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	planned := &Rollout{Version: 2, SHA256: sha, Failures: map[string]string{"t1": "a"}}
	recorded := &Rollout{Version: 2, SHA256: sha, Failures: map[string]string{"t2": "b"}}
	got := withRecordedFailures(planned, recorded)
	keys := slices.Sorted(maps.Keys(got.Failures))
	if !slices.Equal(keys, []string{"t1", "t2"}) || len(planned.Failures) != 1 {
		t.Fatalf("merged %v (planned now %v)", got.Failures, planned.Failures)
	}
	other := &Rollout{Version: 3, SHA256: sha, Failures: map[string]string{"t9": "c"}}
	if got := withRecordedFailures(planned, other); got != planned {
		t.Errorf("failures of another rollout merged: %v", got.Failures)
	}
	if got := withRecordedFailures(nil, recorded); got != nil {
		t.Errorf("no rollout planned, got %+v", got)
	}
}
