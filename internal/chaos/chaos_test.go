//go:build linux

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/internal/status"
)

// Settings, from the environment so that `go tool task chaos` can pass them
// through `go test` without custom flags:
//
//	CHAOS_SEEDS     how many seeds (default 2: the slice run by `go test ./...`)
//	CHAOS_SEED0     the first seed (default 1)
//	CHAOS_RECOVERY  bound on the time to converge after the faults stop (default 60s)
//	CHAOS_BIN       a linkedge binary to test instead of building this tree's
//	CHAOS_REPORT    if set, a Markdown file the summary is also written to
//	                (relative to this package's folder, where go test runs)
type settings struct {
	seeds, seed0 uint64
	recovery     time.Duration
	report       string
}

func loadSettings(t *testing.T) settings {
	s := settings{seeds: 2, seed0: 1, recovery: 60 * time.Second, report: os.Getenv("CHAOS_REPORT")}
	for _, e := range []struct {
		name string
		dst  *uint64
	}{{"CHAOS_SEEDS", &s.seeds}, {"CHAOS_SEED0", &s.seed0}} {
		if v := os.Getenv(e.name); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("%s=%q: %v", e.name, v, err)
			}
			*e.dst = n
		}
	}
	if v := os.Getenv("CHAOS_RECOVERY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CHAOS_RECOVERY=%q: %v", v, err)
		}
		s.recovery = d
	}
	return s
}

// The invariants, numbered as in docs/reliability.md.
const (
	invSignedBytes    = iota // 1: serves only bytes of a signed release
	invConverges             // 2: converges within the bound after the faults stop
	invStatus                // 3: the retained status matches what serves
	invNoLitter              // 4: no stray files, bounded state
	invDownloadBytes         // 5: download bytes within budget
	invNoFalseFailure        // 6: no failure event or record for a good version
	numInv
)

var invNames = [numInv]string{"signed-bytes", "converges", "status", "no-litter", "download-bytes", "no-false-failure"}

type verdict struct {
	checked bool
	ok      bool
	detail  string
}

// result is one seed's run.
type result struct {
	seed      uint64
	faults    []string
	httpFault map[Fault]int
	converged bool
	recovery  time.Duration
	unserved  time.Duration // longest time the agent answered no request (v2 or v1 phase)
	inv       [numInv]verdict
	took      time.Duration
	setupErr  string
}

func (r *result) set(i int, ok bool, format string, args ...any) {
	r.inv[i] = verdict{checked: true, ok: ok, detail: fmt.Sprintf(format, args...)}
}

func (r *result) failed() bool {
	if r.setupErr != "" {
		return true
	}
	for _, v := range r.inv {
		if v.checked && !v.ok {
			return true
		}
	}
	return false
}

// TestChaos runs the seeded fault scenario once per seed against real
// processes: the fleet broker, the publisher and a truck agent, each a
// child process that can be SIGKILLed. See docs/reliability.md.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos runs real processes for about a minute per seed")
	}
	if raceEnabled {
		// The parts under test are child processes built without -race,
		// so the race detector would watch only the test's own plumbing,
		// for another two minutes of a two-core machine.
		t.Skip("not under -race: the processes under test are not race-instrumented")
	}
	cfg := loadSettings(t)
	bin := linkedgeBin(t)
	// Fetch the ONNX Runtime library once, here, rather than in the first
	// agent under a fault schedule.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := inference.Init(ctx, ""); err != nil {
		t.Fatalf("onnx runtime: %v", err)
	}
	bundles := map[int64]bundleInfo{1: loadBundle(t, 1), 2: loadBundle(t, 2)}

	var results []*result
	for seed := cfg.seed0; seed < cfg.seed0+cfg.seeds; seed++ {
		r := &result{seed: seed}
		results = append(results, r)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			start := time.Now()
			defer func() {
				r.took = time.Since(start)
				if t.Failed() && r.setupErr == "" && !r.inv[invConverges].checked {
					r.setupErr = "the seed stopped before its checks; see its log"
				}
			}()
			runSeed(t, bin, seed, cfg, bundles, r)
			for i, v := range r.inv {
				if v.checked && !v.ok {
					t.Errorf("invariant %d (%s) violated: %s", i+1, invNames[i], v.detail)
				}
			}
			if t.Failed() {
				t.Logf("replay: go tool task chaos SEEDS=1 SEED0=%d", seed)
			}
		})
	}
	summary := summarize(results, cfg)
	t.Log("\n" + summary)
	// The summary also goes to a file outside the test's temporary folder,
	// so a long run's table survives a scrolled-away terminal.
	kept := filepath.Join(os.TempDir(), "linkedge-chaos", fmt.Sprintf("summary-seeds-%d-%d.md", cfg.seed0, cfg.seed0+cfg.seeds-1))
	for _, p := range []string{kept, cfg.report} {
		if p == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			if err := os.WriteFile(p, []byte(summary), 0o644); err != nil {
				t.Errorf("write %s: %v", p, err)
			}
		}
	}
	t.Logf("summary written to %s", kept)
}

// step is one scheduled fault. Everything random about it is drawn when
// the schedule is made, so the schedule depends on the seed alone.
type step struct {
	at    time.Duration // after the approval of v2
	kind  string
	down  time.Duration // how long the part stays down, or the link cut
	n     int           // flaps
	gaps  []time.Duration
	phase string  // the update phase a targeted kill waits for
	pick  float64 // which stored file a bit flip hits
	pos   float64 // where in that file
	bit   uint
}

const (
	killAgent   = "kill-agent"
	killAgentAt = "kill-agent-at-phase"
	killBroker  = "kill-broker"
	cutMQTT     = "cut-mqtt"
	flapMQTT    = "flap-mqtt"
	flipStored  = "flip-stored-bit"
)

// updatePhases are the phases of an update a targeted kill aims at: the
// windows a kill at a random time rarely hits, the short ones from
// verifying to the end of probation above all.
var updatePhases = []string{"downloading", "verifying", "staging", "starting", "health_check", "switching", "probation"}

// schedule is a seed's whole plan.
type schedule struct {
	window   time.Duration // faults are injected from the approval of v2 for this long
	httpRate float64       // probability of an artifact-link fault per request during the window
	linkRate int           // artifact link speed, bytes/s
	steps    []step
}

func makeSchedule(seed uint64) schedule {
	rng := rand.New(rand.NewPCG(seed, 0x63686173)) // "chas"
	s := schedule{
		window:   4*time.Second + time.Duration(rng.Int64N(int64(8*time.Second))),
		linkRate: 4_000 + rng.IntN(12_000),
	}
	if rng.Float64() >= 0.2 {
		s.httpRate = 0.15 + 0.5*rng.Float64()
	}
	weights := []struct {
		kind string
		w    int
	}{{killAgent, 3}, {killAgentAt, 2}, {killBroker, 2}, {cutMQTT, 2}, {flapMQTT, 1}, {flipStored, 2}}
	total := 0
	for _, k := range weights {
		total += k.w
	}
	n := 2 + rng.IntN(4)
	for range n {
		x := rng.IntN(total)
		var kind string
		for _, k := range weights {
			if x < k.w {
				kind = k.kind
				break
			}
			x -= k.w
		}
		st := step{
			at:   time.Duration(rng.Int64N(int64(s.window))),
			kind: kind,
			down: time.Duration(rng.Int64N(int64(2500 * time.Millisecond))),
			n:    2 + rng.IntN(4),
			pick: rng.Float64(),
			pos:  rng.Float64(),
			bit:  uint(rng.IntN(8)),
		}
		st.phase = updatePhases[rng.IntN(len(updatePhases))]
		for range 2 * st.n {
			st.gaps = append(st.gaps, 100*time.Millisecond+time.Duration(rng.Int64N(int64(500*time.Millisecond))))
		}
		s.steps = append(s.steps, st)
	}
	sort.SliceStable(s.steps, func(i, j int) bool { return s.steps[i].at < s.steps[j].at })
	return s
}

func runSeed(t *testing.T, bin string, seed uint64, cfg settings, bundles map[int64]bundleInfo, r *result) {
	sch := makeSchedule(seed)
	w := newWorld(t, bin, seed, sch.linkRate)
	w.logf("seed %d: window %s, artifact-link fault rate %.2f, link %d B/s, %d steps", seed, sch.window.Round(time.Millisecond), sch.httpRate, sch.linkRate, len(sch.steps))
	smp := w.startSampler(bundles)

	// Phase A: v1, no faults. A failure here is a set-up problem, not a
	// finding, and ends the seed.
	w.approve(1)
	if ok, why := w.waitConverged(bundles[1], 60*time.Second); !ok {
		r.setupErr = "v1 did not converge without faults: " + why
		t.Fatalf("%s", r.setupErr)
	}
	w.logf("v1 serves")
	base, _ := scanDir(w.dataDir)
	from := len(w.art.Decisions())

	// Phase B: approve v2 and hurt everything while it rolls out.
	w.art.SetFaultRate(sch.httpRate)
	w.approve(2)
	t0 := time.Now()
	w.logf("v2 approved; faults on")
	var storedFlipsV2 int
	for _, st := range sch.steps {
		if d := time.Until(t0.Add(st.at)); d > 0 {
			time.Sleep(d)
		}
		desc, v2hit := w.inject(st, bundles)
		if v2hit {
			storedFlipsV2++
		}
		r.faults = append(r.faults, desc)
		w.logf("fault: %s", desc)
	}
	if d := time.Until(t0.Add(sch.window)); d > 0 {
		time.Sleep(d)
	}
	// Heal: every link up, every part running.
	w.art.SetFaultRate(0)
	w.mqtt.Restore()
	if w.proc("broker").Exited() {
		w.startBroker()
	}
	if w.proc("agent").Exited() {
		w.startAgent()
	}
	healed := time.Now()
	w.logf("faults off")

	r.converged, _ = w.waitConverged(bundles[2], cfg.recovery)
	r.recovery = time.Since(healed)
	_, why := w.convergedNow(bundles[2])
	if r.converged {
		w.logf("v2 serves, %s after the faults stopped", r.recovery.Round(time.Millisecond))
		r.set(invConverges, true, "recovered in %s", r.recovery.Round(time.Millisecond))
	} else {
		r.set(invConverges, false, "not converged to v2 %s after the faults stopped: %s", cfg.recovery, why)
	}
	// Let a last status heartbeat and any late event arrive before judging.
	time.Sleep(500 * time.Millisecond)
	smp.halt()

	// Which artifact-link faults hit during the update.
	r.httpFault = map[Fault]int{}
	for _, d := range w.art.Decisions()[from:] {
		if d.Fault != Pass {
			r.httpFault[d.Fault]++
		}
	}

	w.checkSignedBytes(r, smp, bundles)
	shas := map[int64]string{}
	for v, bi := range bundles {
		shas[v] = bi.sha
	}
	w.checkStatus(r, bundles[2], shas)
	w.checkLitter(r, base, bundles)
	w.checkDownloadBytes(r, from, bundles[2], storedFlipsV2)
	w.checkNoFalseFailure(r, bundles)
	if r.failed() {
		t.Logf("agent log, warnings and errors:\n%s", grepLog(filepath.Join(w.logs, "agent.log"), 40))
	}
}

// inject performs one step and describes it. It reports whether a bit flip
// hit a stored copy (full or partial) of v2, which costs one full download
// to repair and so widens the download budget.
func (w *world) inject(st step, bundles map[int64]bundleInfo) (string, bool) {
	switch st.kind {
	case killAgent:
		phase := w.phase()
		_ = w.proc("agent").Kill()
		time.Sleep(st.down)
		w.startAgent()
		return fmt.Sprintf("%s in %s (down %s)", st.kind, phase, st.down.Round(time.Millisecond)), false
	case killAgentAt:
		phase, reached := w.waitPhase(st.phase, 8*time.Second)
		_ = w.proc("agent").Kill()
		time.Sleep(st.down)
		w.startAgent()
		if !reached {
			return fmt.Sprintf("%s %s not reached, killed in %s (down %s)", st.kind, st.phase, phase, st.down.Round(time.Millisecond)), false
		}
		return fmt.Sprintf("%s %s (down %s)", st.kind, phase, st.down.Round(time.Millisecond)), false
	case killBroker:
		_ = w.proc("broker").Kill()
		time.Sleep(st.down)
		w.startBroker()
		return fmt.Sprintf("%s (down %s)", st.kind, st.down.Round(time.Millisecond)), false
	case cutMQTT:
		w.mqtt.Cut()
		time.Sleep(st.down)
		w.mqtt.Restore()
		return fmt.Sprintf("%s (%s)", st.kind, st.down.Round(time.Millisecond)), false
	case flapMQTT:
		for i := range st.n {
			w.mqtt.Cut()
			time.Sleep(st.gaps[2*i])
			w.mqtt.Restore()
			time.Sleep(st.gaps[2*i+1])
		}
		return fmt.Sprintf("%s (%d times)", st.kind, st.n), false
	case flipStored:
		phase := w.phase()
		_ = w.proc("agent").Kill()
		desc, v2 := w.flipStoredBit(st, bundles)
		time.Sleep(st.down)
		w.startAgent()
		return fmt.Sprintf("%s in %s: %s", st.kind, phase, desc), v2
	}
	return "unknown step " + st.kind, false
}

// phase is the agent's update phase as its update.json says, read just
// before a kill: it tells which step of the update a kill interrupted.
func (w *world) phase() string {
	b, err := os.ReadFile(filepath.Join(w.dataDir, "update.json"))
	if err != nil {
		return "no-update"
	}
	var rec struct {
		Phase  string `json:"phase"`
		Target struct {
			Version int64 `json:"version"`
		} `json:"target"`
	}
	if json.Unmarshal(b, &rec) != nil {
		return "unreadable-update.json"
	}
	return fmt.Sprintf("%s(v%d)", rec.Phase, rec.Target.Version)
}

// waitPhase polls update.json until the update of v2 is in phase want, for
// at most within; it gives up at once if the update is over.
func (w *world) waitPhase(want string, within time.Duration) (string, bool) {
	deadline := time.Now().Add(within)
	for {
		ph := w.phase()
		switch {
		case ph == want+"(v2)":
			return ph, true
		case strings.HasPrefix(ph, "committed(v2") || strings.HasPrefix(ph, "idle(v2") || time.Now().After(deadline):
			return ph, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// flipStoredBit inverts one bit of a bundle or partial download in the
// agent's artifacts folder, while the agent is down: a disk fault.
func (w *world) flipStoredBit(st step, bundles map[int64]bundleInfo) (string, bool) {
	dir := filepath.Join(w.dataDir, "artifacts")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "no artifacts folder", false
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".tar.gz") || strings.HasSuffix(n, ".partial") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "nothing stored to flip", false
	}
	name := names[min(int(st.pick*float64(len(names))), len(names)-1)]
	p := filepath.Join(dir, name)
	data, err := os.ReadFile(p)
	if err != nil || len(data) == 0 {
		return name + " empty or unreadable", false
	}
	off := min(int(st.pos*float64(len(data))), len(data)-1)
	data[off] ^= 1 << st.bit
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return fmt.Sprintf("%s: %v", name, err), false
	}
	which := "?"
	for v, b := range bundles {
		if strings.HasPrefix(name, b.sha) {
			which = fmt.Sprintf("v%d", v)
		}
	}
	return fmt.Sprintf("%s %s byte %d bit %d", which, name[min(len(name), 64):], off, st.bit), which == "v2"
}

// convergedNow reports whether the truck has fully arrived at b: it serves
// b's model, installed.json names b with b's digest and the file there has
// it, and the status on the broker says so.
func (w *world) convergedNow(b bundleInfo) (bool, string) {
	sv, err := w.servingNow()
	if err != nil {
		return false, "serving: " + err.Error()
	}
	if sv.Version != b.version || sv.ONNX != b.onnx {
		return false, fmt.Sprintf("serves v%d (onnx %s)", sv.Version, short(sv.ONNX))
	}
	in, err := w.installed()
	if err != nil {
		return false, err.Error()
	}
	if in.Current == nil || in.Current.Version != b.version || in.Current.SHA256 != b.sha {
		return false, "installed.json does not name it as current"
	}
	if got, err := fileSHA(in.Current.Bundle); err != nil || got != b.sha {
		return false, fmt.Sprintf("installed bundle %s does not hash to the release (%v)", in.Current.Bundle, err)
	}
	st, _ := w.obs.lastStatus()
	if st == nil {
		return false, "no status seen"
	}
	if st.Version != b.version || !st.Online || (st.Phase != "committed" && st.Phase != "idle") || (st.SHA256 != "" && st.SHA256 != b.sha) {
		return false, fmt.Sprintf("status says version %d (sha256 %q), online %v, phase %s", st.Version, short(st.SHA256), st.Online, st.Phase)
	}
	return true, ""
}

// waitConverged polls convergedNow until it holds or within passes.
func (w *world) waitConverged(b bundleInfo, within time.Duration) (bool, string) {
	deadline := time.Now().Add(within)
	for {
		ok, why := w.convergedNow(b)
		if ok {
			return true, ""
		}
		if time.Now().After(deadline) {
			return false, why
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkSignedBytes: invariant 1. The serving model must come from a bundle
// whose sha256 a verified release names: sampled during the whole run, and
// at the end through installed.json and the file it names.
func (w *world) checkSignedBytes(r *result, smp *sampler, bundles map[int64]bundleInfo) {
	var problems []string
	for _, v := range []int64{1, 2} {
		a, ok := w.obs.release(v)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("no verified release for v%d seen", v))
		case a.SHA256 != bundles[v].sha || a.Size != bundles[v].size:
			problems = append(problems, fmt.Sprintf("release for v%d names %s (%d B), the bundle is %s (%d B)", v, short(a.SHA256), a.Size, short(bundles[v].sha), bundles[v].size))
		}
	}
	smp.mu.Lock()
	problems = append(problems, smp.violations...)
	samples, errs, gap := smp.samples, smp.errors, smp.longestGap
	smp.mu.Unlock()
	r.unserved = gap
	// At the end, what serves must be what installed.json names, and that
	// file must still hash to the signed digest. A truck that serves
	// nothing serves no wrong bytes; whether it repairs itself is
	// invariant 2's business.
	if sv, err := w.servingNow(); err == nil {
		in, ierr := w.installed()
		switch {
		case ierr != nil:
			problems = append(problems, fmt.Sprintf("serves v%d, installed.json: %v", sv.Version, ierr))
		case in.Current == nil || in.Current.Version != sv.Version:
			problems = append(problems, fmt.Sprintf("serves v%d, installed.json names another current", sv.Version))
		default:
			if got, err := fileSHA(in.Current.Bundle); err != nil || got != bundles[sv.Version].sha {
				problems = append(problems, fmt.Sprintf("serves v%d from %s, which hashes to %s (%v)", sv.Version, in.Current.Bundle, short(got), err))
			}
		}
	}
	if len(problems) > 0 {
		r.set(invSignedBytes, false, "%s", strings.Join(problems, "; "))
		return
	}
	r.set(invSignedBytes, true, "%d samples (metadata and golden rows), %d without an answer, longest time without one %s", samples, errs, gap.Round(10*time.Millisecond))
}

// checkStatus: invariant 3. What a fresh subscriber reads as retained
// status must be what serves.
func (w *world) checkStatus(r *result, b bundleInfo, bundlesByVersion map[int64]string) {
	st, err := retainedStatus(w.brokerAddr, truck)
	if err != nil {
		r.set(invStatus, false, "%v", err)
		return
	}
	sv, serr := w.servingNow()
	switch {
	case serr != nil && st.Version == 0:
		// Both say nothing serves: honest, if sad; invariant 2 judges it.
		r.set(invStatus, true, "nothing serves and the status says v0 %s (%v)", st.Phase, serr)
	case serr != nil:
		r.set(invStatus, false, "the agent serves nothing (%v), the retained status says v%d %s", serr, st.Version, st.Phase)
	case st.Version != sv.Version:
		r.set(invStatus, false, "retained status says v%d, the agent serves v%d", st.Version, sv.Version)
	case st.SHA256 != "" && st.SHA256 != bundlesByVersion[sv.Version]:
		// Agents since 19e2137 report the serving bundle's digest; older
		// ones leave it empty, and then only the version can be compared.
		r.set(invStatus, false, "retained status says sha256 %s, the signed v%d is %s", short(st.SHA256), sv.Version, short(bundlesByVersion[sv.Version]))
	case sv.Version == b.version && (st.Phase == "failed" || st.Phase == "rolled_back"):
		r.set(invStatus, false, "serves good v%d but the retained status says phase %s (%s)", sv.Version, st.Phase, st.LastError)
	case !st.Online:
		r.set(invStatus, false, "retained status says offline while the agent is connected")
	default:
		r.set(invStatus, true, "v%d %s sha256 %q", st.Version, st.Phase, short(st.SHA256))
	}
}

// checkLitter: invariant 4. After convergence the data folder holds the
// state files, at most the current and previous bundles, no temporary or
// partial file, and a bounded failed.json.
func (w *world) checkLitter(r *result, base dirStats, bundles map[int64]bundleInfo) {
	if !r.converged {
		r.inv[invNoLitter] = verdict{detail: "not checked: no convergence"}
		return
	}
	st, err := scanDir(w.dataDir)
	if err != nil {
		r.set(invNoLitter, false, "%v", err)
		return
	}
	in, _ := w.installed()
	// The agent keeps each installed bundle with the signed release that
	// named it ({sha256}.release.json), to check it again offline.
	keep := map[string]bool{}
	for _, sp := range []*spec{in.Current, in.Previous} {
		if sp != nil {
			keep["artifacts/"+sp.SHA256+".tar.gz"] = true
			keep["artifacts/"+sp.SHA256+".release.json"] = true
		}
	}
	var problems []string
	var outbox int64
	for _, n := range st.Names {
		base := filepath.Base(n)
		switch {
		case strings.Contains(base, ".tmp-"):
			problems = append(problems, "temporary file "+n)
		case strings.Contains(base, ".partial"):
			problems = append(problems, "partial download "+n)
		case strings.HasPrefix(n, "artifacts/") && !keep[n]:
			problems = append(problems, "artifact neither current nor previous: "+n)
		case strings.HasPrefix(n, "outbox/"):
			if fi, err := os.Stat(filepath.Join(w.dataDir, n)); err == nil {
				outbox += fi.Size()
			}
		}
	}
	if fi, err := os.Stat(filepath.Join(w.dataDir, "failed.json")); err == nil && fi.Size() > 4096 {
		problems = append(problems, fmt.Sprintf("failed.json is %d B", fi.Size()))
	}
	if outbox > 1<<20 {
		problems = append(problems, fmt.Sprintf("outbox holds %d B with no sensor", outbox))
	}
	detail := fmt.Sprintf("%d files, %d B (after v1: %d files, %d B)", st.Files, st.Bytes, base.Files, base.Bytes)
	if len(problems) > 0 {
		r.set(invNoLitter, false, "%s: %s", strings.Join(problems, "; "), detail)
		return
	}
	r.set(invNoLitter, true, "%s", detail)
}

// checkDownloadBytes: invariant 5. The bytes of v2's file the artifact
// proxy delivered must be at most 1.05 × its size × (1 + R), where R counts
// the corruptions that force a full new download: answers with a flipped
// bit that reached the agent, and bit flips in a stored copy of v2. A
// digest mismatch is only found once the whole file is there, and the
// agent cannot tell which byte is bad, so each of those costs one file;
// anything else (cuts, stalls, made-up answers, restarts) must cost no
// more than the 5% slack, since downloads resume. Made-up answers (404,
// 503, captive page) are not file bytes and are not counted.
func (w *world) checkDownloadBytes(r *result, from int, b bundleInfo, storedFlips int) {
	tr := w.art.TrafficFor(fmt.Sprintf("/artifacts/%s/%d/", model, b.version), from)
	repairs := tr.Flips + storedFlips
	budget := int64(1.05 * float64(b.size) * float64(1+repairs))
	got := tr.Total()
	var parts []string
	for _, f := range append([]Fault{Pass}, AllFaults...) {
		if n := tr.FileBytes[f]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", f, n))
		}
	}
	detail := fmt.Sprintf("%d B of v2 (%d B) in %d requests [%s], budget %d B (%d repairs), made-up bodies %d B",
		got, b.size, tr.Requests, strings.Join(parts, ", "), budget, repairs, tr.MadeUpBytes)
	if !r.converged {
		detail += "; the update did not complete"
	}
	r.set(invDownloadBytes, got <= budget, "%s", detail)
}

// checkNoFalseFailure: invariant 6. Both versions are good, so no
// update_failed or update_rolled_back event may name either, and
// failed.json may not list either's artifact.
func (w *world) checkNoFalseFailure(r *result, bundles map[int64]bundleInfo) {
	var problems []string
	kinds := map[string]int{}
	for _, e := range w.obs.allEvents() {
		kinds[e.Kind]++
		if (e.Kind == status.EventUpdateFailed || e.Kind == status.EventRolledBack) && (e.Version == 1 || e.Version == 2) {
			problems = append(problems, fmt.Sprintf("%s v%d: %s", e.Kind, e.Version, e.Detail))
		}
	}
	if b, err := os.ReadFile(filepath.Join(w.dataDir, "failed.json")); err == nil {
		for v, bi := range bundles {
			if strings.Contains(string(b), bi.sha) {
				problems = append(problems, fmt.Sprintf("failed.json lists good v%d: %s", v, strings.TrimSpace(string(b))))
			}
		}
	}
	var ks []string
	for k, n := range kinds {
		ks = append(ks, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(ks)
	if len(problems) > 0 {
		r.set(invNoFalseFailure, false, "%s (events seen: %s)", strings.Join(problems, "; "), strings.Join(ks, " "))
		return
	}
	r.set(invNoFalseFailure, true, "events seen: %s", strings.Join(ks, " "))
}

// grepLog returns the last n warning, error, failure or rollback lines of a
// log: what explains a violation.
func grepLog(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		ll := strings.ToLower(l)
		if strings.Contains(ll, "warn") || strings.Contains(ll, "error") || strings.Contains(ll, "fail") ||
			strings.Contains(ll, "roll") || strings.Contains(ll, "=== chaos") {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

// summarize renders the runs as Markdown: one row per seed, then the
// recovery-time distribution and the seeds that broke each invariant.
func summarize(rs []*result, cfg settings) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Chaos run: seeds %d..%d, recovery bound %s\n\n", cfg.seed0, cfg.seed0+cfg.seeds-1, cfg.recovery)
	b.WriteString("| seed | took | faults | artifact-link faults | recovery | longest unserved |")
	for i := range numInv {
		fmt.Fprintf(&b, " %d %s |", i+1, invNames[i])
	}
	b.WriteString("\n|---|---|---|---|---|---|")
	for range numInv {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	var recov []time.Duration
	broken := make([][]uint64, numInv)
	var setup []string
	for _, r := range rs {
		rec := "—"
		if r.converged {
			rec = r.recovery.Round(10 * time.Millisecond).String()
			recov = append(recov, r.recovery)
		} else if r.inv[invConverges].checked {
			rec = "never"
		}
		var hf []string
		for _, f := range AllFaults {
			if n := r.httpFault[f]; n > 0 {
				hf = append(hf, fmt.Sprintf("%s×%d", f, n))
			}
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s |", r.seed, r.took.Round(time.Second), strings.Join(r.faults, "; "), strings.Join(hf, " "), rec, r.unserved.Round(10*time.Millisecond))
		for i, v := range r.inv {
			switch {
			case !v.checked:
				b.WriteString(" — |")
			case v.ok:
				b.WriteString(" ok |")
			default:
				b.WriteString(" **FAIL** |")
				broken[i] = append(broken[i], r.seed)
			}
		}
		b.WriteString("\n")
		if r.setupErr != "" {
			setup = append(setup, fmt.Sprintf("%d: %s", r.seed, r.setupErr))
		}
	}
	b.WriteString("\n")
	if len(recov) > 0 {
		slices.Sort(recov)
		q := func(p float64) time.Duration { return recov[min(int(p*float64(len(recov))), len(recov)-1)] }
		fmt.Fprintf(&b, "Recovery time over %d converged runs: min %s, median %s, p90 %s, max %s\n\n",
			len(recov), recov[0].Round(10*time.Millisecond), q(0.5).Round(10*time.Millisecond), q(0.9).Round(10*time.Millisecond), recov[len(recov)-1].Round(10*time.Millisecond))
	} else {
		b.WriteString("No run converged after its faults.\n\n")
	}
	for i, seeds := range broken {
		if len(seeds) > 0 {
			fmt.Fprintf(&b, "- invariant %d (%s) broken by %d of %d seeds: %v\n", i+1, invNames[i], len(seeds), len(rs), seeds)
		}
	}
	for _, s := range setup {
		fmt.Fprintf(&b, "- set-up failed, seed %s\n", s)
	}
	b.WriteString("\nDetails per seed:\n\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- seed %d:\n", r.seed)
		for i, v := range r.inv {
			if v.checked || v.detail != "" {
				mark := "ok"
				if !v.checked {
					mark = "n/a"
				} else if !v.ok {
					mark = "FAIL"
				}
				fmt.Fprintf(&b, "  - %d %s: %s: %s\n", i+1, invNames[i], mark, v.detail)
			}
		}
	}
	return b.String()
}
