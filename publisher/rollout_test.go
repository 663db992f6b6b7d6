package publisher

import (
	"cmp"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// fixedHealth is a HealthView with set answers. The planning is a pure
// function of what the trucks report; the fleet simulator's
// TestStagedRollout runs the same decisions over a real broker.
type fixedHealth CanaryHealth

func (h fixedHealth) CanaryHealth(string, int64) CanaryHealth { return CanaryHealth(h) }

func TestPlanFor(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	cfg := &RolloutConfig{Groups: []string{"early"}, Percent: 10}
	cfg.setDefaults()
	v1, v2, v3 := testVersion(1), testVersion(2), testVersion(3)
	v2.Artifact.SHA256 = strings.Repeat("cd", 32)
	announced := func(v Version) *Announcement {
		return &Announcement{Version: v.Version, SHA256: v.Artifact.SHA256, Size: v.Artifact.Size, Runtime: v.Runtime}
	}
	running := &Rollout{Version: 2, SHA256: v2.Artifact.SHA256, StartedAt: now.Add(-2 * time.Hour)}
	young := &Rollout{Version: 2, SHA256: v2.Artifact.SHA256, StartedAt: now.Add(-time.Minute)}
	unacked := &Rollout{Version: 2, SHA256: v2.Artifact.SHA256}
	halted := &Rollout{Version: 2, SHA256: v2.Artifact.SHA256, StartedAt: now.Add(-2 * time.Hour), HaltedAt: now.Add(-time.Hour), HaltReason: "x"}
	healthy := fixedHealth{Committed: []string{"t1"}, Failed: map[string]string{}, Settled: true}
	unsettled := fixedHealth{Committed: []string{"t1"}, Failed: map[string]string{}}
	failing := fixedHealth{Committed: []string{"t1"}, Failed: map[string]string{"t2": "golden samples failed"}, Desired: map[string]int64{"t2": 2}}
	// Trucks by their place in the 10 % bucket selection (release.Bucket).
	var inBucket, outBucket string
	for i := 0; inBucket == "" || outBucket == ""; i++ {
		id := fmt.Sprintf("truck-%d", i)
		if release.Bucket(v2.Model, id) < 10 {
			inBucket = cmp.Or(inBucket, id)
		} else {
			outBucket = cmp.Or(outBucket, id)
		}
	}
	// A4: a truck outside the canary (neither in the bucket nor targeting
	// the canary) reports a failure: it cannot have tried the version.
	outsider := fixedHealth{Committed: []string{"t1"}, Failed: map[string]string{outBucket: "made up"}, Desired: map[string]int64{outBucket: 1}, Settled: true}
	bucketFailure := fixedHealth{Committed: []string{"t1"}, Failed: map[string]string{inBucket: "golden samples failed"}}
	nobody := fixedHealth{Failed: map[string]string{}, Settled: true}
	all := []Version{v1, v2, v3}
	opHold := &Hold{Version: 2, HaltedBy: "olga", Reason: "brake alerts up", HaltedAt: now.Add(-time.Minute)}
	resumed := &Hold{Version: 2, HaltedBy: "olga", Reason: "brake alerts up", HaltedAt: now.Add(-time.Minute), ResumedBy: "ivan", ResumedAt: now}
	heldRunning, heldYoung := *running, *young
	heldRunning.Hold, heldYoung.Hold = opHold, opHold

	for _, tc := range []struct {
		name       string
		cfg        *RolloutConfig
		vs         []Version
		best       Version
		ms         *ModelState
		health     fixedHealth
		stable     int64
		canary     int64 // 0: none
		rollout    string
		halting    bool
		hold       bool
		opHold     *Hold
		noteSubstr string
	}{
		{name: "no policy", cfg: nil, vs: all, best: v2, ms: &ModelState{Announced: announced(v1)}, stable: 2, rollout: "none"},
		{name: "first version", cfg: cfg, vs: all, best: v1, stable: 1, rollout: "none"},
		{name: "same version", cfg: cfg, vs: all, best: v1, ms: &ModelState{Announced: announced(v1)}, stable: 1, rollout: "none"},
		{name: "way back", cfg: cfg, vs: all, best: v1, ms: &ModelState{Announced: announced(v2), Rollout: running}, stable: 1, rollout: "none"},
		{name: "new version starts a rollout", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1)}, stable: 1, canary: 2, rollout: "new"},
		{name: "old stable withdrawn", cfg: cfg, vs: []Version{v2}, best: v2, ms: &ModelState{Announced: announced(v1)}, stable: 2, rollout: "none", noteSubstr: "no longer approved"},
		{name: "canary not yet acknowledged", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: unacked}, health: failing, stable: 1, canary: 2, rollout: "same"},
		{name: "soaking", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: young}, health: healthy, stable: 1, canary: 2, rollout: "same"},
		{name: "failure halts", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: young}, health: failing, stable: 1, rollout: "halted", halting: true, noteSubstr: "t2 reported: golden samples failed"},
		{name: "a failure from outside the canary is ignored", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: young}, health: outsider, stable: 1, canary: 2, rollout: "same"},
		{name: "and noted when promoting", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: running}, health: outsider, stable: 2, rollout: "none", noteSubstr: "ignored failure reports on version 2 from trucks outside its canary: " + outBucket},
		{name: "a failure in the percent bucket halts", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: young}, health: bucketFailure, stable: 1, rollout: "halted", halting: true, noteSubstr: inBucket + " reported"},
		{name: "stays halted", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: halted}, health: healthy, stable: 1, rollout: "same", noteSubstr: "was halted"},
		{name: "soaked but nobody committed", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: running}, health: nobody, stable: 1, canary: 2, rollout: "same", noteSubstr: "waiting for 1 canary truck"},
		{name: "soaked, but the view is still filling up", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: running}, health: unsettled, stable: 1, canary: 2, rollout: "same"},
		{name: "halted, and the stable one withdrawn: hold", cfg: cfg, vs: []Version{v2}, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: halted}, stable: 0, rollout: "none", hold: true, noteSubstr: "announcing nothing"},
		{name: "operator hold: no promotion", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: running}, health: healthy, opHold: opHold, stable: 1, canary: 2, rollout: "held", noteSubstr: "halted by olga"},
		{name: "operator hold: failures still halt", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: young}, health: failing, opHold: opHold, stable: 1, rollout: "halted", halting: true, noteSubstr: "t2 reported"},
		{name: "operator hold of another version: promote", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: running}, health: healthy, opHold: &Hold{Version: 3, HaltedBy: "olga", Reason: "x", HaltedAt: now}, stable: 2, rollout: "none"},
		{name: "resumed: promote", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: &heldRunning}, health: healthy, opHold: resumed, stable: 2, rollout: "none"},
		{name: "resumed while soaking: the hold leaves the state", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: &heldYoung}, health: healthy, opHold: resumed, stable: 1, canary: 2, rollout: "unheld"},
		{name: "soaked and committed: promote", cfg: cfg, vs: all, best: v2, ms: &ModelState{Announced: announced(v1), Rollout: running}, health: healthy, stable: 2, rollout: "none"},
		{name: "a newer version replaces the rollout", cfg: cfg, vs: all, best: v3, ms: &ModelState{Announced: announced(v1), Rollout: halted}, stable: 1, canary: 3, rollout: "new"},
		{name: "same number, new content", cfg: cfg, vs: []Version{v1, func() Version { v := v2; v.Artifact.SHA256 = strings.Repeat("ef", 32); return v }()},
			best: func() Version { v := v2; v.Artifact.SHA256 = strings.Repeat("ef", 32); return v }(),
			ms:   &ModelState{Announced: announced(v1), Rollout: halted}, stable: 1, canary: 2, rollout: "new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl, halting, note := planFor(tc.cfg, tc.health, tc.vs, tc.best, tc.ms, tc.opHold, now)
			if pl.Stable.Version != tc.stable {
				t.Errorf("stable %d, want %d", pl.Stable.Version, tc.stable)
			}
			switch {
			case tc.canary == 0 && pl.Canary != nil:
				t.Errorf("canary %d, want none", pl.Canary.Version)
			case tc.canary != 0 && (pl.Canary == nil || pl.Canary.Version != tc.canary):
				t.Errorf("canary %v, want %d", pl.Canary, tc.canary)
			case tc.canary != 0 && (pl.Percent != 10 || len(pl.Groups) != 1):
				t.Errorf("selection %d%% %v", pl.Percent, pl.Groups)
			}
			var prev *Rollout
			if tc.ms != nil {
				prev = tc.ms.Rollout
			}
			switch tc.rollout {
			case "none":
				if pl.Rollout != nil {
					t.Errorf("rollout %+v, want none", pl.Rollout)
				}
			case "new":
				if pl.Rollout == nil || pl.Rollout == prev || pl.Rollout.Version != tc.best.Version || pl.Rollout.Halted() || !pl.Rollout.StartedAt.IsZero() {
					t.Errorf("rollout %+v, want a new one for v%d", pl.Rollout, tc.best.Version)
				}
			case "same":
				if pl.Rollout != prev {
					t.Errorf("rollout %+v, want the running one %+v", pl.Rollout, prev)
				}
			case "held":
				if pl.Rollout == nil || pl.Rollout.Hold == nil || pl.Rollout.Hold.HaltedBy != "olga" || pl.Rollout.Version != 2 || pl.Rollout.Halted() || prev.Hold != nil {
					t.Errorf("rollout %+v, want the running one with olga's hold (and the state's record untouched)", pl.Rollout)
				}
			case "unheld":
				if pl.Rollout == nil || pl.Rollout.Hold != nil || pl.Rollout.Version != 2 || prev.Hold == nil {
					t.Errorf("rollout %+v, want the running one without its hold", pl.Rollout)
				}
			case "halted":
				if !pl.Rollout.Halted() || !pl.Rollout.HaltedAt.Equal(now) || prev.Halted() {
					t.Errorf("rollout %+v, want halted now (and the state's record untouched)", pl.Rollout)
				}
			}
			if pl.hold != tc.hold {
				t.Errorf("hold %v, want %v", pl.hold, tc.hold)
			}
			if halting != tc.halting {
				t.Errorf("halting %v, want %v", halting, tc.halting)
			}
			if tc.noteSubstr != "" && !strings.Contains(note, tc.noteSubstr) {
				t.Errorf("note %q, want it to mention %q", note, tc.noteSubstr)
			}
			if tc.noteSubstr == "" && note != "" {
				t.Errorf("unexpected note %q", note)
			}
		})
	}
}

func TestRolloutConfigValidate(t *testing.T) {
	base := func() Config {
		return Config{Broker: "tcp://127.0.0.1:1883", RegistryDir: t.TempDir(), KeyFile: "k.pem"}
	}
	for _, tc := range []struct {
		name string
		r    RolloutConfig
		want string // "" = valid
	}{
		{"groups only", RolloutConfig{Groups: []string{"early"}}, ""},
		{"percent only", RolloutConfig{Percent: 5}, ""},
		{"selects nobody", RolloutConfig{Soak: time.Minute}, "selects no truck"},
		{"percent above 100", RolloutConfig{Percent: 101}, "rollout.percent"},
		{"bad group", RolloutConfig{Groups: []string{"a/b"}}, "rollout.groups"},
		{"negative soak", RolloutConfig{Percent: 5, Soak: -time.Second}, "rollout.soak"},
		{"negative min_committed", RolloutConfig{Percent: 5, MinCommitted: -1}, "rollout.min_committed"},
		{"negative halt_after", RolloutConfig{Percent: 5, HaltAfter: -1}, "rollout.halt_after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			r := tc.r
			c.Rollout = &r
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				c.setDefaults()
				if c.Rollout.Soak != DefaultRolloutSoak || c.Rollout.MinCommitted != 1 || c.Rollout.HaltAfter != 1 || r.Soak != 0 {
					t.Fatalf("defaults %+v (caller's copy %+v)", c.Rollout, r)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrInvalidConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestRolloutConfigFromYAML(t *testing.T) {
	c, err := ParseConfig([]byte(`
broker: tcp://127.0.0.1:1883
registry_dir: /srv/registry
key_file: /etc/linkedge/publisher.pem
rollout:
  groups: [early, test-bench]
  percent: 5
  soak: 30m
  min_committed: 2
  halt_after: 1
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rollout
	if r == nil || r.Percent != 5 || r.Soak != 30*time.Minute || r.MinCommitted != 2 || len(r.Groups) != 2 {
		t.Fatalf("rollout %+v", r)
	}
	if _, err := ParseConfig([]byte("broker: tcp://x:1\nregistry_dir: /r\nkey_file: k\nrollout:\n  percnt: 5\n")); err == nil {
		t.Fatal("a misspelt rollout key was accepted")
	}
}

func TestParseStateWithRollout(t *testing.T) {
	doc := strings.Replace(goodState, `"acked_at": "2025-01-01T00:00:00.2Z"
      }`, `"acked_at": "2025-01-01T00:00:00.2Z",
        "canary": {"version": 3, "sha256": "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
          "size": 43, "runtime": {"kind": "inprocess"}, "percent": 10, "groups": ["early"]}
      },
      "rollout": {"version": 3, "sha256": "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "started_at": "2025-01-01T00:00:00.2Z"}`, 1)
	s, err := ParseState([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ms := s.Models["aps"]
	if ms.Announced.Canary == nil || ms.Announced.Canary.Version != 3 || ms.Rollout == nil || ms.Rollout.Halted() {
		t.Fatalf("parsed %+v, rollout %+v", ms.Announced, ms.Rollout)
	}
	for name, bad := range map[string]string{
		"canary not above stable": strings.Replace(doc, `"canary": {"version": 3`, `"canary": {"version": 2`, 1),
		"canary percent":          strings.Replace(doc, `"percent": 10`, `"percent": 101`, 1),
		"canary digest":           strings.Replace(doc, `"canary": {"version": 3, "sha256": "1123`, `"canary": {"version": 3, "sha256": "X123`, 1),
		"rollout digest":          strings.Replace(doc, `"rollout": {"version": 3, "sha256": "1123`, `"rollout": {"version": 3, "sha256": "nope`, 1),
		"rollout unknown field":   strings.Replace(doc, `"started_at"`, `"begun_at"`, 1),
	} {
		if _, err := ParseState([]byte(bad)); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: %v, want ErrCorruptState", name, err)
		}
	}
}

// TestAnnouncePlanWithCanary: the signed document carries both targets and
// the selection, trucks pick their target from it, and the state records
// the canary and starts the soak at the acknowledgement.
func TestAnnouncePlanWithCanary(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, s, pub := newTestAnnouncer(t, &now)
	ctx := t.Context()
	v1, v2 := testVersion(1), testVersion(2)
	pl := Plan{Stable: v1, Canary: &v2, Groups: []string{"early"}, Percent: 0, Rollout: &Rollout{Version: 2, SHA256: v2.Artifact.SHA256}}
	rel, err := a.AnnouncePlan(ctx, pl, IfDue)
	if err != nil || rel == nil {
		t.Fatalf("announce: %v, %v", rel, err)
	}
	got, err := (&release.Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return now }}).Verify(s.sent[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.Stable.Version != 1 || got.Canary == nil || got.Canary.Version != 2 || got.Canary.Groups[0] != "early" {
		t.Fatalf("document: stable %d, canary %+v", got.Stable.Version, got.Canary)
	}
	if tg, canary := got.TargetFor("truck-9", []string{"early"}); !canary || tg.Version != 2 {
		t.Fatal("a truck of the early group does not run the canary")
	}
	if tg, canary := got.TargetFor("truck-9", nil); canary || tg.Version != 1 {
		t.Fatal("a truck outside the canary does not run the stable version")
	}
	st, _ := a.State.Load()
	ms := st.Models["aps"]
	if ms.Announced.Canary == nil || ms.Rollout == nil || !ms.Rollout.StartedAt.Equal(now) {
		t.Fatalf("state: canary %+v, rollout %+v", ms.Announced.Canary, ms.Rollout)
	}
	if r, err := a.AnnouncePlan(ctx, pl, IfDue); r != nil || err != nil {
		t.Fatalf("the same plan again is not due, but got %v, %v", r, err)
	}
	// Another selection is new content.
	pl.Percent = 20
	if r, err := a.AnnouncePlan(ctx, pl, IfDue); r == nil || err != nil || r.Canary.Percent != 20 {
		t.Fatalf("a changed selection was not announced: %v, %v", r, err)
	}
	// Withdrawing the canary is new content too, and records the halt.
	halted := *ms.Rollout
	halted.HaltedAt, halted.HaltReason = now, "test"
	if r, err := a.AnnouncePlan(ctx, Plan{Stable: v1, Rollout: &halted}, IfDue); r == nil || err != nil || r.Canary != nil {
		t.Fatalf("withdrawal: %v, %v", r, err)
	}
	st, _ = a.State.Load()
	if ms := st.Models["aps"]; ms.Announced.Canary != nil || !ms.Rollout.Halted() {
		t.Fatalf("after the withdrawal: canary %+v, rollout %+v", ms.Announced.Canary, ms.Rollout)
	}
	// A canary in another model's plan, or a canary not approved, is refused.
	other := testVersion(3)
	other.Model = "other"
	if _, err := a.AnnouncePlan(ctx, Plan{Stable: v1, Canary: &other}, Always); err == nil {
		t.Fatal("a canary of another model was announced")
	}
	pending := testVersion(3)
	pending.Status = StatusPending
	if _, err := a.AnnouncePlan(ctx, Plan{Stable: v1, Canary: &pending}, Always); !errors.Is(err, ErrNotApproved) {
		t.Fatalf("pending canary: %v, want ErrNotApproved", err)
	}
}

// TestSessionHearsTrucks runs the publisher's MQTT session against a real
// broker and plays trucks that report over it: statuses (retained), a last
// will, and events.
func TestSessionHearsTrucks(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	e := newEnv(t)
	p := start(t, e.config(b.Addr()))
	truck := func(id string) paho.Client {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("test-" + id).SetConnectTimeout(waitFor))
		if tok := c.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", id, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(0) })
		return c
	}
	send := func(c paho.Client, topic string, retained bool, v any) {
		data, _ := json.Marshal(v)
		if tok := c.Publish(topic, 1, retained, data); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	reportStatus := func(c paho.Client, id string, online bool, version, desired int64, phase, lastErr string) {
		send(c, topics.TruckStatus(id), true, status.Status{Schema: status.Schema, Truck: id, Online: online, Model: "aps",
			Version: version, Desired: desired, Phase: phase, LastError: lastErr})
	}
	t1, t2, t3, t4, t5 := truck("t1"), truck("t2"), truck("t3"), truck("t4"), truck("t5")
	reportStatus(t1, "t1", true, 2, 2, "committed", "")
	// Once the session hears t1, it is subscribed: what follows is live.
	for deadline := time.Now().Add(waitFor); len(p.sess.CanaryHealth("aps", 2).Committed) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the session never heard t1's status")
		}
		time.Sleep(20 * time.Millisecond)
	}
	reportStatus(t2, "t2", true, 1, 2, "failed", "golden samples failed")
	reportStatus(t3, "t3", true, 2, 2, "committed", "")
	reportStatus(t3, "t3", false, 0, 0, "offline", "") // its last will: still on v2
	reportStatus(t5, "t5", true, 2, 2, "idle", "")     // restarted since it committed
	send(t4, topics.TruckEvents("t4"), false, status.Event{Schema: status.Schema, Truck: "t4", Model: "aps", Kind: status.EventUpdateFailed, Version: 2, Detail: "probation: 3 failures"})
	send(t4, topics.TruckStatus("t6"), true, map[string]any{"schema": "nonsense"})

	var h CanaryHealth
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		h = p.sess.CanaryHealth("aps", 2)
		if len(h.Committed) == 3 && len(h.Failed) == 2 && h.Settled {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	slices.Sort(h.Committed)
	if !slices.Equal(h.Committed, []string{"t1", "t3", "t5"}) || h.Failed["t2"] != "golden samples failed" || h.Failed["t4"] != "probation: 3 failures" || len(h.Failed) != 2 {
		t.Fatalf("health of aps v2: committed %v, failed %v", h.Committed, h.Failed)
	}
	if h := p.sess.CanaryHealth("aps", 3); len(h.Committed)+len(h.Failed) != 0 {
		t.Fatalf("health of aps v3, which nobody ran: %+v", h)
	}
}
