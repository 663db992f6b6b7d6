package console

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/fleetsim"
	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/publisher"
)

// TestConsoleHaltResume halts a staged rollout of a real fleet from the
// console (operator only, CSRF, confirmation, audit log) while its canary
// runs: past the soak nothing is promoted, and the model page says who
// halted it and why and charts the trucks per version. Resuming from the
// console lets v2 reach every truck.
func TestConsoleHaltResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, s, audit := startRolloutFleet(t, ctx)
	early, rest := f.Trucks[0], f.Trucks[1:]
	wait := func(what string, cond func() bool) {
		t.Helper()
		if err := fleetsim.WaitFor(ctx, what, cond); err != nil {
			t.Fatal(err)
		}
	}
	rollout := func() *publisher.Rollout { return rolloutOf(t, f) }
	olga, vic := newClient(t, s.URL()), newClient(t, s.URL())
	olga.login("olga", "olga-secret")
	vic.login("vic", "vic-secret")
	// The canary group, from the first truck's configuration through its
	// status: the filter shows that truck alone.
	gctx, gcancel := context.WithTimeout(ctx, 30*time.Second)
	rows := map[string]Row{}
	waitLive(t, gctx, olga.live(gctx, "?group=early"), rows, "the early truck in the group filter", func(rs map[string]Row) bool {
		return rs[early.ID].Groups == "early"
	})
	gcancel()
	if len(rows) != 1 {
		t.Errorf("group early lists %d trucks, want the one canary: %+v", len(rows), rows)
	}
	if _, page := olga.do("GET", "/models/aps-failure", nil); !strings.Contains(page, "No staged rollout running") || strings.Contains(page, `id="halt"`) {
		t.Errorf("model page before the rollout:\n%s", page)
	}

	f.Registry.Approve("aps-failure", 2, "test")
	wait("the v2 rollout started", func() bool { r := rollout(); return r != nil && r.Version == 2 && !r.StartedAt.IsZero() })
	started := rollout().StartedAt
	halt := url.Values{"action": {"halt"}, "model": {"aps-failure"}, "reason": {"brake alerts doubled"}}
	form := func(c *client, v url.Values, extra ...string) url.Values {
		out := url.Values{"csrf": {c.csrf}}
		for k, vs := range v {
			out[k] = vs
		}
		for i := 0; i+1 < len(extra); i += 2 {
			out.Set(extra[i], extra[i+1])
		}
		return out
	}
	if code, _ := vic.do("POST", "/actions", form(vic, halt, "confirm", "yes")); code != http.StatusForbidden {
		t.Errorf("a viewer's halt: %d, want 403", code)
	}
	if code, _ := olga.do("POST", "/actions", halt); code != http.StatusForbidden {
		t.Errorf("a halt without CSRF token: %d, want 403", code)
	}
	for _, tc := range []struct {
		name string
		form url.Values
		want int
	}{
		{"reason too long", url.Values{"action": {"halt"}, "model": {"aps-failure"}, "reason": {strings.Repeat("x", publisher.MaxHoldReason+1)}}, http.StatusBadRequest},
		{"control character", url.Values{"action": {"halt"}, "model": {"aps-failure"}, "reason": {"a\nb"}}, http.StatusBadRequest},
		{"resume takes no reason", url.Values{"action": {"resume"}, "model": {"aps-failure"}, "reason": {"x"}}, http.StatusBadRequest},
		{"halt takes no version", url.Values{"action": {"halt"}, "model": {"aps-failure"}, "version": {"2"}}, http.StatusBadRequest},
		{"nothing to resume", url.Values{"action": {"resume"}, "model": {"aps-failure"}}, http.StatusConflict},
		{"no rollout of that model", url.Values{"action": {"halt"}, "model": {"other"}}, http.StatusConflict},
	} {
		if code, page := olga.do("POST", "/actions", form(olga, tc.form, "confirm", "yes")); code != tc.want {
			t.Errorf("%s: %d, want %d:\n%s", tc.name, code, tc.want, page)
		}
	}
	if _, page := olga.do("GET", "/models/aps-failure", nil); !strings.Contains(page, `id="halt"`) {
		t.Fatalf("the model page offers no halt during the rollout:\n%s", page)
	}
	if code, page := olga.do("POST", "/actions", form(olga, halt)); code != http.StatusOK ||
		!strings.Contains(page, "halt the staged rollout of aps-failure (brake alerts doubled)") || !strings.Contains(page, `name="reason" value="brake alerts doubled"`) {
		t.Fatalf("halt confirmation: %d\n%s", code, page)
	}
	if code, page := olga.do("POST", "/actions", form(olga, halt, "confirm", "yes")); code != http.StatusOK || !strings.Contains(page, "halted the rollout of aps-failure version 2") {
		t.Fatalf("halt: %d\n%s", code, page)
	}
	if time.Since(started) >= rolloutSoak {
		t.Skipf("the halt came %s after the canary started, after the %s soak: this machine is too slow for the test", time.Since(started), rolloutSoak)
	}
	if code, _ := olga.do("POST", "/actions", form(olga, halt, "confirm", "yes")); code != http.StatusConflict {
		t.Errorf("second halt: %d, want 409", code)
	}
	wait("olga's hold in the state file", func() bool {
		r := rollout()
		return r != nil && r.Hold != nil && r.Hold.HaltedBy == "olga" && r.Hold.Reason == "brake alerts doubled"
	})
	if err := fleetsim.WaitVersion(ctx, 2, early); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithDeadline(ctx, started.Add(rolloutSoak+2*time.Second))
	<-wctx.Done()
	wcancel()
	for _, tr := range rest {
		if st := tr.Agent.Status(); st.Version != 1 || st.Desired == 2 {
			t.Fatalf("truck %s outside the canary moved to v2 while the rollout was halted: %+v", tr.ID, st)
		}
	}
	_, page := olga.do("GET", "/models/aps-failure", nil)
	for _, want := range []string{"halted by olga", "brake alerts doubled", "not promoted until resumed", `id="resume"`, `<svg id="chart"`, `class="v2"`, `class="v1"`, "v2: 1 now", "v1: 2 now"} {
		if !strings.Contains(page, want) {
			t.Errorf("the model page while halted lacks %q:\n%s", want, page)
		}
	}
	if code, chart := vic.do("GET", "/models/aps-failure/progress", nil); code != http.StatusOK || !strings.HasPrefix(strings.TrimSpace(chart), `<svg id="chart"`) || !strings.Contains(chart, "v2: 1 now") {
		t.Errorf("the chart alone: %d\n%s", code, chart)
	}
	if code, _ := newClient(t, s.URL()).do("GET", "/models/aps-failure/progress", nil); code != http.StatusSeeOther {
		t.Errorf("the chart without a login: %d, want 303 to the login page", code)
	}
	if code, _ := vic.do("GET", "/models/a+b/progress", nil); code != http.StatusBadRequest {
		t.Errorf("the chart of a bad model name: %d, want 400", code)
	}
	if _, page := vic.do("GET", "/models/aps-failure", nil); !strings.Contains(page, "halted by olga") || strings.Contains(page, `id="resume"`) {
		t.Errorf("a viewer's model page: wants the hold and no resume button:\n%s", page)
	}

	resume := url.Values{"action": {"resume"}, "model": {"aps-failure"}}
	if code, page := olga.do("POST", "/actions", form(olga, resume, "confirm", "yes")); code != http.StatusOK || !strings.Contains(page, "resumed the rollout of aps-failure version 2 (halted by olga)") {
		t.Fatalf("resume: %d\n%s", code, page)
	}
	if err := fleetsim.WaitVersion(ctx, 2, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	var halts, resumes int
	for _, r := range readAudit(t, audit) {
		switch {
		case r.Kind == ActionHalt && r.User == "olga" && r.Reason == "brake alerts doubled" && r.Result == "ok":
			halts++
		case r.Kind == ActionResume && r.User == "olga" && r.Result == "ok":
			resumes++
		case r.Kind == ActionHalt && r.Result == "ok" && r.User != "olga":
			t.Errorf("audit: %+v", r)
		}
	}
	if halts != 1 || resumes != 1 {
		t.Errorf("audit log: %d halts and %d resumes ok, want 1 and 1", halts, resumes)
	}
	wait("v2 on every truck in the chart", func() bool {
		_, page := olga.do("GET", "/models/aps-failure", nil)
		return strings.Contains(page, "v2: 3 now") && strings.Contains(page, "No staged rollout running")
	})
}

// rolloutSoak is the soak of startRolloutFleet's policy.
const rolloutSoak = 5 * time.Second

// startRolloutFleet starts a real fleet with a staged rollout policy (the
// first truck in group early, rolloutSoak) on v1, v2 registered and
// pending, and a console that can halt and resume (and approve) but not
// pin, with its audit log.
func startRolloutFleet(t *testing.T, ctx context.Context) (*fleetsim.Fleet, *Server, string) {
	t.Helper()
	f, err := fleetsim.Start(ctx, fleetsim.Options{Dir: t.TempDir(), Trucks: 3, Probation: 300 * time.Millisecond, HTTPClients: -1,
		Rollout: &publisher.RolloutConfig{Groups: []string{"early"}, Soak: rolloutSoak}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Trucks[0].RestartWith(ctx, func(c *edgeclient.Config) { c.Groups = []string{"early"} }); err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		if _, err := f.Register(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	f.Registry.Approve("aps-failure", 1, "test")
	if err := fleetsim.WaitVersion(ctx, 1, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.jsonl")
	s, err := New(Config{Listen: "127.0.0.1:0", UsersFile: writeUsers(t, dir), AuditLog: audit,
		Fleet:         fleetview.Config{Broker: f.BrokerURL},
		Actions:       &publisher.Config{RegistryDir: f.Registry.Dir()}, // halting needs neither broker nor key
		ChartInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return f, s, audit
}

// rolloutOf is aps-failure's rollout in the fleet publisher's state file.
func rolloutOf(t *testing.T, f *fleetsim.Fleet) *publisher.Rollout {
	t.Helper()
	ro, err := publisher.RolloutOf(publisher.Config{RegistryDir: f.Registry.Dir()}, "aps-failure")
	if err != nil {
		t.Fatal(err)
	}
	return ro
}

// TestChartOf: a step line per version, highest first, nothing without
// trucks.
func TestChartOf(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	if c := chartOf(nil, t0); c != nil {
		t.Errorf("chart of nothing: %+v", c)
	}
	ss := []sample{
		{at: t0, counts: map[int64]int{1: 3}},
		{at: t0.Add(time.Minute), counts: map[int64]int{1: 2, 2: 1}},
		{at: t0.Add(2 * time.Minute), counts: map[int64]int{2: 3}},
	}
	c := chartOf(ss, t0.Add(4*time.Minute))
	if c == nil || c.MaxY != 3 || len(c.Lines) != 2 || c.Lines[0].Version != 2 || c.Lines[0].Now != 3 || c.Lines[1].Now != 0 {
		t.Fatalf("chart %+v", c)
	}
	// v2: 0 until minute 1 (x 187), then 1, then 3 from minute 2 (x 335) to minute 4 (x 630).
	if got, want := c.Lines[0].Points, "40,190 187,190 187,130 335,130 335,10 630,10"; got != want {
		t.Errorf("v2 points %q, want %q", got, want)
	}
	h := newHistory()
	rows := []Row{{ID: "a", Model: "m", Version: 1}, {ID: "b", Model: "m", Version: 1}}
	h.record(t0, rows)
	h.record(t0.Add(time.Second), rows) // no change: no sample
	h.record(t0.Add(2*time.Second), nil)
	if ss := h.samples("m"); len(ss) != 2 || ss[1].counts[1] != 0 {
		t.Errorf("history %+v", ss)
	}
	for i := range maxSamples + 10 {
		h.record(t0.Add(time.Duration(i)*time.Second), []Row{{ID: "a", Model: "m", Version: int64(i%2 + 1)}})
	}
	if n := len(h.samples("m")); n != maxSamples {
		t.Errorf("%d samples kept, want %d", n, maxSamples)
	}
}
