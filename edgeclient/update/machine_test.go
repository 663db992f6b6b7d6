package update

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/internal/download"
	"github.com/linkedge/linkedge/internal/release"
)

// fakeRuntime records what serves. The real in-process runtime is exercised
// by the agent's end-to-end tests; here the subject is the state machine.
type fakeRuntime struct {
	mu        sync.Mutex
	stages    int
	serving   *fakeCand
	stageErr  map[int64]error // by version
	checkErr  map[int64]error
	failAfter map[int64]int64 // failures a candidate reports once serving
}

type fakeCand struct {
	spec     runtime.Spec
	rt       *fakeRuntime
	failures atomic.Int64
	closed   atomic.Bool
}

func (c *fakeCand) Spec() runtime.Spec { return c.spec }
func (c *fakeCand) Check(context.Context) error {
	c.rt.mu.Lock()
	defer c.rt.mu.Unlock()
	return c.rt.checkErr[c.spec.Version]
}
func (c *fakeCand) Failures() int64 { return c.failures.Load() }
func (c *fakeCand) Close() error    { c.closed.Store(true); return nil }

func (r *fakeRuntime) Stage(ctx context.Context, s runtime.Spec) (runtime.Candidate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stages++
	if err := r.stageErr[s.Version]; err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.Bundle); err != nil {
		return nil, err
	}
	return &fakeCand{spec: s, rt: r}, nil
}

func (r *fakeRuntime) Activate(ctx context.Context, c runtime.Candidate) (runtime.Candidate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fc := c.(*fakeCand)
	if fc.closed.Load() {
		return nil, errors.New("activated a closed candidate")
	}
	prev := r.serving
	r.serving = fc
	if n := r.failAfter[fc.spec.Version]; n > 0 {
		// Requests fail once it serves. Counted at the switch, not on a
		// timer that a loaded machine could fire after probation ended.
		fc.failures.Add(n)
	}
	if prev == nil {
		return nil, nil
	}
	return prev, nil
}

func (r *fakeRuntime) Serving() runtime.Candidate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.serving == nil {
		return nil
	}
	return r.serving
}

func (r *fakeRuntime) version() int64 {
	if c := r.Serving(); c != nil {
		return c.Spec().Version
	}
	return 0
}

type harness struct {
	m      *Machine
	priv   ed25519.PrivateKey
	rt     *fakeRuntime
	phases []Phase
	blobs  map[string][]byte
	fetchN atomic.Int32
}

func newHarness(t *testing.T, dir string) *harness {
	t.Helper()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	seed := sha256.Sum256([]byte("update test key"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	verifier := &release.Verifier{Keys: []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}}
	h := &harness{rt: &fakeRuntime{stageErr: map[int64]error{}, checkErr: map[int64]error{}, failAfter: map[int64]int64{}}, blobs: map[string][]byte{}, priv: priv}
	h.m = &Machine{Store: st, Runtime: h.rt, Probation: 50 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
		RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond, VerifyRelease: verifier.VerifyAtRest,
		Fetch: func(ctx context.Context, tg Target, dst string, progress func(int64, int64)) error {
			h.fetchN.Add(1)
			if err := ctx.Err(); err != nil {
				return err
			}
			b := h.blobs[tg.Artifact.SHA256]
			progress(int64(len(b)), int64(len(b)))
			return os.WriteFile(dst, b, 0o644)
		},
		OnChange: func(r Record) {
			if len(h.phases) == 0 || h.phases[len(h.phases)-1] != r.Phase {
				h.phases = append(h.phases, r.Phase)
			}
		},
	}
	return h
}

func (h *harness) target(version, serial int64) Target {
	return h.targetAt(version, serial, "http://x/y", []byte{byte(version), 'x', 'y'})
}

// targetAt is a target whose artifact is b, at url.
func (h *harness) targetAt(version, serial int64, url string, b []byte) Target {
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	h.blobs[sha] = b
	tg := Target{Model: "m", Serial: serial, Version: version,
		Artifact: release.Artifact{URL: url, SHA256: sha, Size: int64(len(b)), MediaType: release.MediaTypeBundle},
		Runtime:  release.Runtime{Kind: release.RuntimeInProcess}}
	// Signed as the publisher would, but already expired: documents kept
	// at rest are checked without their validity window.
	doc, err := release.Sign(&release.Release{Schema: release.Schema, Model: "m", Serial: serial,
		IssuedAt: time.Now().Add(-48 * time.Hour), ExpiresAt: time.Now().Add(-24 * time.Hour),
		Stable: release.Target{Version: version, Artifact: tg.Artifact, Runtime: tg.Runtime, Source: release.Source{Registry: release.RegistryLocal}}}, h.priv)
	if err != nil {
		panic(err)
	}
	tg.Document = doc
	return tg
}

// apply runs Apply with the fleet link up for as long as ctx lives.
func (h *harness) apply(ctx context.Context, t Target) (Record, error) {
	return h.m.Apply(ctx, ctx, t)
}

func TestApplyCommits(t *testing.T) {
	h := newHarness(t, t.TempDir())
	ctx := context.Background()
	for v := int64(1); v <= 2; v++ {
		rec, err := h.apply(ctx, h.target(v, v*10))
		if err != nil || rec.Phase != Committed {
			t.Fatalf("v%d: phase %s err %v", v, rec.Phase, err)
		}
	}
	want := []Phase{Downloading, Verifying, Staging, Starting, HealthCheck, Switching, Probation, Committed}
	if got := h.phases[len(h.phases)-len(want):]; !slices.Equal(got, want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
	in, _ := h.m.Store.Installed()
	if in.Current.Version != 2 || in.Previous.Version != 1 || h.rt.version() != 2 {
		t.Fatalf("installed %+v / %+v, serving v%d", in.Current, in.Previous, h.rt.version())
	}
	// A third version prunes the oldest artifact: only current and previous stay.
	h.apply(ctx, h.target(3, 30))
	ents, _ := os.ReadDir(h.m.Store.Dir() + "/artifacts")
	if len(ents) != 4 { // two bundles, each with its kept release
		t.Fatalf("%d files kept in artifacts/, want 4", len(ents))
	}
}

func TestApplyFailuresKeepServing(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(rt *fakeRuntime)
		wantPhase Phase
		wantErr   error
	}{
		{"model does not load", func(rt *fakeRuntime) {
			rt.stageErr[2] = fmt.Errorf("%w: not an onnx model", inference.ErrModelMismatch)
		}, Failed, ErrPermanent},
		{"golden fails", func(rt *fakeRuntime) { rt.checkErr[2] = runtime.ErrUnhealthy }, Failed, ErrPermanent},
		{"requests fail in probation", func(rt *fakeRuntime) { rt.failAfter[2] = 3 }, RolledBack, ErrPermanent},
		{"runtime unavailable", func(rt *fakeRuntime) { rt.stageErr[2] = fmt.Errorf("%w: engine down", runtime.ErrUnavailable) }, Retrying, ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, t.TempDir())
			ctx := context.Background()
			if _, err := h.apply(ctx, h.target(1, 1)); err != nil {
				t.Fatal(err)
			}
			tt.setup(h.rt)
			t2 := h.target(2, 2)
			for try := 1; try <= 3; try++ {
				before := time.Now()
				rec, err := h.apply(ctx, t2)
				if !errors.Is(err, tt.wantErr) || rec.Phase != tt.wantPhase {
					t.Fatalf("try %d: phase %s err %v, want %s and %v", try, rec.Phase, err, tt.wantPhase, tt.wantErr)
				}
				if h.rt.version() != 1 {
					t.Fatalf("serving v%d after a failed update, want v1", h.rt.version())
				}
				in, _ := h.m.Store.Installed()
				if in.Current.Version != 1 {
					t.Fatalf("committed v%d, want v1", in.Current.Version)
				}
				if at := h.m.NextTry(t2); !at.After(before) {
					t.Fatalf("try %d: next try at %v, want a backoff after %v", try, at, before)
				}
			}
			// Three permanent failures give the target up; transient ones never do.
			n := h.fetchN.Load()
			_, err := h.apply(ctx, t2)
			if given := errors.Is(err, ErrGivenUp); given != (tt.wantErr == ErrPermanent) {
				t.Fatalf("fourth apply: %v; given up %v, want %v", err, given, tt.wantErr == ErrPermanent)
			}
			if errors.Is(err, ErrGivenUp) && h.fetchN.Load() != n {
				t.Fatal("a given-up target was fetched again")
			}
		})
	}
}

func TestInterruptedDownloadResumes(t *testing.T) {
	h := newHarness(t, t.TempDir())
	link, cancel := context.WithCancel(context.Background())
	cancel()
	for range 5 { // more than MaxAttempts: an interruption costs nothing
		rec, err := h.m.Apply(context.Background(), link, h.target(1, 1))
		if !errors.Is(err, ErrInterrupted) || rec.Phase != Downloading || rec.Attempt != 0 {
			t.Fatalf("phase %s attempt %d err %v, want downloading, 0 and ErrInterrupted", rec.Phase, rec.Attempt, err)
		}
	}
	if p := h.m.Pending(); p == nil || p.Target.Version != 1 {
		t.Fatalf("pending = %+v, want the interrupted v1", p)
	}
	rec, err := h.apply(context.Background(), h.target(1, 1))
	if err != nil || rec.Phase != Committed || rec.Attempt != 0 {
		t.Fatalf("resume: phase %s attempt %d err %v", rec.Phase, rec.Attempt, err)
	}
}

// B: probation runs on the agent's lifetime, not on the fleet link: the
// link dropping during probation changes nothing.
func TestLinkDropDuringProbationCommits(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.m.Probation = 300 * time.Millisecond
	ctx := context.Background()
	if _, err := h.apply(ctx, h.target(1, 1)); err != nil {
		t.Fatal(err)
	}
	link, drop := context.WithCancel(ctx)
	h.m.OnChange = func(r Record) {
		if r.Phase == Probation {
			drop()
		}
	}
	rec, err := h.m.Apply(ctx, link, h.target(2, 2))
	if err != nil || rec.Phase != Committed || h.rt.version() != 2 {
		t.Fatalf("phase %s err %v serving v%d, want committed v2", rec.Phase, err, h.rt.version())
	}
}

// B: the agent stopping during probation puts the committed version back
// and leaves the update to run again, at no cost.
func TestStopDuringProbationIsFree(t *testing.T) {
	h := newHarness(t, t.TempDir())
	if _, err := h.apply(context.Background(), h.target(1, 1)); err != nil {
		t.Fatal(err)
	}
	h.m.Probation = time.Minute
	t2 := h.target(2, 2)
	for range 5 {
		ctx, stop := context.WithCancel(context.Background())
		h.m.OnChange = func(r Record) {
			if r.Phase == Probation {
				stop()
			}
		}
		rec, err := h.m.Apply(ctx, context.Background(), t2)
		if !errors.Is(err, ErrInterrupted) || rec.Phase == RolledBack || rec.Phase.Done() || rec.Attempt != 0 {
			t.Fatalf("phase %s attempt %d err %v, want a resumable record, no attempt, ErrInterrupted", rec.Phase, rec.Attempt, err)
		}
		if h.rt.version() != 1 {
			t.Fatalf("serving v%d after a stop in probation, want v1", h.rt.version())
		}
	}
	h.m.OnChange, h.m.Probation = nil, 10*time.Millisecond
	if rec, err := h.apply(context.Background(), t2); err != nil || rec.Phase != Committed {
		t.Fatalf("after the restarts: %s %v", rec.Phase, err)
	}
}

// E: a context cancelled during the health check is an interruption, not a
// failed golden sample.
func TestCancelDuringHealthCheckIsInterrupted(t *testing.T) {
	h := newHarness(t, t.TempDir())
	ctx, stop := context.WithCancel(context.Background())
	h.m.OnChange = func(r Record) {
		if r.Phase == HealthCheck {
			stop()
		}
	}
	h.rt.checkErr[1] = context.Canceled // what a cancelled golden run returns
	rec, err := h.m.Apply(ctx, context.Background(), h.target(1, 1))
	if !errors.Is(err, ErrInterrupted) || rec.Attempt != 0 {
		t.Fatalf("phase %s attempt %d err %v, want ErrInterrupted and no attempt", rec.Phase, rec.Attempt, err)
	}
	if _, ok := h.m.Store.Failed(h.target(1, 1).Key()); ok {
		t.Fatal("an interrupted health check was recorded as a failure")
	}
}

// C: one bad response from the artifact source (404, a captive-portal
// page, a flipped byte) is transient: retried with backoff, never counted,
// and a re-announcement retries at once.
func TestBadResponsesAreTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"404", &download.HTTPStatusError{StatusCode: 404, URL: "http://x/y"}},
		{"html page", fmt.Errorf("%w: 77 bytes, want 3", download.ErrSizeMismatch)},
		{"flipped byte", download.ErrDigestMismatch},
		{"timeout", fmt.Errorf("%w after 60s", download.ErrStalled)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, t.TempDir())
			fetch := h.m.Fetch
			fails := 6
			h.m.Fetch = func(ctx context.Context, tg Target, dst string, p func(int64, int64)) error {
				if fails > 0 {
					fails--
					return tt.err
				}
				return fetch(ctx, tg, dst, p)
			}
			tg := h.target(1, 1)
			for i := range 5 {
				rec, err := h.apply(context.Background(), tg)
				if !errors.Is(err, ErrTransient) || rec.Phase != Retrying || rec.Attempt != 0 || rec.Retries != i+1 {
					t.Fatalf("try %d: phase %s attempt %d retries %d err %v", i, rec.Phase, rec.Attempt, rec.Retries, err)
				}
				if !h.m.NextTry(tg).After(time.Now().Add(-time.Second)) {
					t.Fatal("no backoff after a transient failure")
				}
			}
			if _, given := h.m.GivenUp(tg); given {
				t.Fatal("transient failures gave the target up")
			}
			// The publisher re-announces: a new serial is due at once.
			tg2 := h.target(1, 2)
			if !h.m.NextTry(tg2).IsZero() {
				t.Fatal("a re-announced target waits for the old backoff")
			}
			h.apply(context.Background(), tg2) // the sixth failure
			rec, err := h.apply(context.Background(), tg2)
			if err != nil || rec.Phase != Committed {
				t.Fatalf("after the fault cleared: %s %v", rec.Phase, err)
			}
		})
	}
}

// A: a power cut between the commit write (installed.json) and the record
// (update.json) must not report a rollback: the new version serves.
func TestPowerCutOnCommitWrite(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	if _, err := h.apply(ctx, h.target(1, 1)); err != nil {
		t.Fatal(err)
	}
	committed := false
	h.m.Store.beforeWrite = func(name string) error {
		if name == "installed.json" {
			committed = true
			return nil
		}
		if committed {
			return errors.New("power cut")
		}
		return nil
	}
	h.apply(ctx, h.target(2, 2))
	if rec, _ := h.m.Store.Record(); rec.Phase != Probation {
		t.Fatalf("record on disk says %s, want probation (the cut fell after the commit write)", rec.Phase)
	}
	h2 := newHarness(t, dir)
	var phases []Phase
	h2.m.OnChange = func(r Record) { phases = append(phases, r.Phase) }
	spec, err := h2.m.Boot(ctx)
	if err != nil || spec == nil || spec.Version != 2 || h2.rt.version() != 2 {
		t.Fatalf("boot serves %+v (err %v), want v2", spec, err)
	}
	if rec, _ := h2.m.Store.Record(); rec.Phase != Committed || slices.Contains(phases, RolledBack) {
		t.Fatalf("record %s, phases %v: want committed and no rollback", rec.Phase, phases)
	}
}

func TestBootAfterCrashInProbation(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	if _, err := h.apply(ctx, h.target(1, 1)); err != nil {
		t.Fatal(err)
	}
	// Power cuts during v2's probation: v2's record says Probation,
	// installed.json still names v1. A cut is not the model's fault, but
	// MaxCrashes of them in a row are.
	t2 := h.target(2, 2)
	os.WriteFile(h.m.Store.ArtifactPath(t2.Artifact.SHA256), h.blobs[t2.Artifact.SHA256], 0o644)
	rec := Record{Phase: Probation, Target: t2}
	for crash := 1; crash <= 5; crash++ {
		rec.Phase = Probation
		h.m.Store.SetRecord(rec)
		h2 := newHarness(t, dir)
		spec, err := h2.m.Boot(ctx)
		if err != nil || spec == nil || spec.Version != 1 || h2.rt.version() != 1 {
			t.Fatalf("crash %d: boot serves %+v (err %v), want v1", crash, spec, err)
		}
		got, _ := h2.m.Store.Record()
		rec = *got
		want, attempts := Verifying, 0
		if crash == 5 {
			want, attempts = RolledBack, 1
		}
		if rec.Phase != want || rec.Attempt != attempts || rec.Crashes != crash {
			t.Fatalf("crash %d: record %s attempt %d crashes %d, want %s %d", crash, rec.Phase, rec.Attempt, rec.Crashes, want, attempts)
		}
	}
	// One attempt of three: the update may run again, and succeeds.
	h2 := newHarness(t, dir)
	h2.blobs = h.blobs
	h2.m.Boot(ctx)
	if rec, err := h2.apply(ctx, t2); err != nil || rec.Phase != Committed {
		t.Fatalf("retry after crashes: %s %v", rec.Phase, err)
	}
}

func TestBootFallsBackToPrevious(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	h.apply(ctx, h.target(1, 1))
	h.apply(ctx, h.target(2, 2))
	in, _ := h.m.Store.Installed()
	os.Remove(in.Current.Bundle) // the committed bundle is gone (disk fault)
	h2 := newHarness(t, dir)
	spec, err := h2.m.Boot(ctx)
	if err != nil || spec == nil || spec.Version != 1 {
		t.Fatalf("boot serves %+v (%v), want the previous v1", spec, err)
	}
}

// D: a bundle corrupted at rest is never served: boot falls back to the
// verified previous version and drops the corrupt bytes.
func TestBootVerifiesAtRest(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	h.apply(ctx, h.target(1, 1))
	h.apply(ctx, h.target(2, 2))
	in, _ := h.m.Store.Installed()
	b, _ := os.ReadFile(in.Current.Bundle)
	b[1] ^= 0x10 // one bit
	os.WriteFile(in.Current.Bundle, b, 0o644)
	h2 := newHarness(t, dir)
	spec, err := h2.m.Boot(ctx)
	if err != nil || spec == nil || spec.Version != 1 || h2.rt.version() != 1 {
		t.Fatalf("boot serves %+v (%v), want the verified previous v1", spec, err)
	}
	if _, err := os.Stat(in.Current.Bundle); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the corrupt bundle is still there (%v)", err)
	}
	// The release still names v2: it is downloaded again and committed,
	// with v1 as the fallback.
	h2.blobs = h.blobs
	if rec, err := h2.apply(ctx, h.target(2, 3)); err != nil || rec.Phase != Committed {
		t.Fatalf("re-download: %s %v", rec.Phase, err)
	}
	in, _ = h2.m.Store.Installed()
	if in.Current.Version != 2 || in.Previous == nil || in.Previous.Version != 1 {
		t.Fatalf("installed %+v / %+v, want v2 over v1", in.Current, in.Previous)
	}
}

// D: bytes on disk are verified again before an update stages them.
func TestApplyVerifiesStoredBytes(t *testing.T) {
	h := newHarness(t, t.TempDir())
	tg := h.target(1, 1)
	bad := slices.Clone(h.blobs[tg.Artifact.SHA256])
	bad[0] ^= 1
	os.WriteFile(h.m.Store.ArtifactPath(tg.Artifact.SHA256), bad, 0o644)
	if rec, err := h.apply(context.Background(), tg); err != nil || rec.Phase != Committed {
		t.Fatalf("%s %v", rec.Phase, err)
	}
	if h.fetchN.Load() != 1 {
		t.Fatalf("fetched %d times, want the corrupt bytes replaced once", h.fetchN.Load())
	}
	if err := h.m.Store.VerifyArtifact(tg.Artifact.SHA256, tg.Artifact.Size); err != nil {
		t.Fatal(err)
	}
}

// F: an unreadable installed.json is rebuilt from the signed releases kept
// beside the bundles, so an offline truck still serves.
func TestBootRebuildsInstalled(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	h.apply(ctx, h.target(1, 1))
	h.apply(ctx, h.target(2, 2))
	if err := os.WriteFile(dir+"/installed.json", []byte(`{"current":{"mod`), 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, dir)
	spec, err := h2.m.Boot(ctx)
	if err != nil || spec == nil || spec.Version != 2 || h2.rt.version() != 2 {
		t.Fatalf("boot serves %+v (%v), want v2 rebuilt from its kept release", spec, err)
	}
	in, err := h2.m.Store.Installed()
	if err != nil || in.Previous == nil || in.Previous.Version != 1 {
		t.Fatalf("rebuilt installed.json %+v (%v), want v1 as previous", in, err)
	}

	// A kept release whose signature does not verify is not trusted.
	for sha, k := range h2.m.Store.keptReleases() {
		k.Document[len(k.Document)/2] ^= 1
		h2.m.Store.SetRelease(sha, k.Document, k.CommittedAt)
	}
	os.WriteFile(dir+"/installed.json", []byte("{"), 0o644)
	h3 := newHarness(t, dir)
	if spec, err := h3.m.Boot(ctx); spec != nil || err != nil {
		t.Fatalf("boot from tampered releases serves %+v (%v), want nothing", spec, err)
	}
}

func TestBootEmptyAndCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	if spec, err := h.m.Boot(context.Background()); spec != nil || err != nil {
		t.Fatalf("empty store: %+v %v", spec, err)
	}
	h.apply(context.Background(), h.target(1, 1))
	os.WriteFile(dir+"/update.json", []byte("{not json"), 0o644)
	h2 := newHarness(t, dir)
	if spec, err := h2.m.Boot(context.Background()); err != nil || spec == nil || spec.Version != 1 {
		t.Fatalf("corrupt update.json: serves %+v (%v), want v1", spec, err)
	}
	if _, err := os.Stat(dir + "/update.json"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the unreadable update.json is still there")
	}
}

// G: temporary files of interrupted writes are swept at boot, and
// failed.json stays bounded.
func TestHousekeeping(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	h.apply(ctx, h.target(1, 1))
	for _, name := range []string{".installed.json.tmp-123", ".update.json.tmp-9", "artifacts/.abc.tar.gz.tmp-1"} {
		os.WriteFile(dir+"/"+name, []byte("x"), 0o644)
	}
	os.WriteFile(h.m.Store.ArtifactPath("deadbeef")+".partial", []byte("old"), 0o644)
	h.m.Boot(ctx)
	for _, name := range []string{".installed.json.tmp-123", ".update.json.tmp-9", "artifacts/.abc.tar.gz.tmp-1", "artifacts/deadbeef.tar.gz.partial"} {
		if _, err := os.Stat(dir + "/" + name); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived boot", name)
		}
	}
	for i := range 100 {
		h.m.Store.MarkFailed(fmt.Sprint(i), FailedTarget{Attempts: 3, At: time.Now().Add(time.Duration(i) * time.Second)})
	}
	m, _ := h.m.Store.failed()
	if len(m) != failedMaxEntries {
		t.Fatalf("failed.json holds %d entries, want %d", len(m), failedMaxEntries)
	}
	if _, ok := m["99"]; !ok {
		t.Fatal("the newest failure was pruned")
	}
}

// J: a failure is keyed by the whole target: the same bundle in a fixed
// image is tried again.
func TestFailureKeyedByTarget(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.m.MaxAttempts = 1
	tg := h.target(1, 1)
	tg.Runtime = release.Runtime{Kind: release.RuntimeContainer, Image: "r/aps@sha256:aa"}
	h.rt.checkErr[1] = runtime.ErrUnhealthy
	if _, err := h.apply(context.Background(), tg); !errors.Is(err, ErrPermanent) {
		t.Fatal(err)
	}
	if _, given := h.m.GivenUp(tg); !given {
		t.Fatal("not given up after MaxAttempts")
	}
	fixed := tg
	fixed.Runtime.Image = "r/aps@sha256:bb"
	if _, given := h.m.GivenUp(fixed); given {
		t.Fatal("a fixed image is refused because the old one failed")
	}
	delete(h.rt.checkErr, 1)
	if rec, err := h.apply(context.Background(), fixed); err != nil || rec.Phase != Committed {
		t.Fatalf("fixed image: %s %v", rec.Phase, err)
	}
}

func TestDeferredFetchErrorWaitsWithoutCountingAttempts(t *testing.T) {
	h := newHarness(t, t.TempDir())
	fetch := h.m.Fetch
	fails := 5
	h.m.Fetch = func(ctx context.Context, tg Target, dst string, p func(int64, int64)) error {
		if fails > 0 {
			fails--
			return &download.HTTPStatusError{StatusCode: 403, URL: "http://x/y"}
		}
		return fetch(ctx, tg, dst, p)
	}
	tg := h.target(1, 1)
	for range 5 { // more than MaxAttempts: none of them may count
		if _, err := h.apply(context.Background(), tg); !errors.Is(err, ErrDeferred) {
			t.Fatalf("expired URL: %v, want ErrDeferred", err)
		}
	}
	if _, failed := h.m.Store.Failed(tg.Key()); failed {
		t.Fatal("an expired URL marked the target as failed")
	}
	rec, err := h.apply(context.Background(), tg)
	if err != nil || rec.Phase != Committed || rec.Attempt != 0 {
		t.Fatalf("after a fresh URL: %s attempt %d %v", rec.Phase, rec.Attempt, err)
	}
}

// 9: the safety hold lets the download and the checks run and holds only
// the switch; while it lasts, nothing is staged again.
func TestSafetyHold(t *testing.T) {
	h := newHarness(t, t.TempDir())
	ctx := context.Background()
	if _, err := h.apply(ctx, h.target(1, 1)); err != nil {
		t.Fatal(err)
	}
	held := true
	h.m.Hold = func() (bool, string) { return held, "held by nav (vehicle moving)" }
	t2 := h.target(2, 2)
	stages := h.rt.stages
	for try := range 3 {
		rec, err := h.apply(ctx, t2)
		if !errors.Is(err, ErrDeferred) || rec.Phase != Held || !strings.Contains(rec.Error, "vehicle moving") {
			t.Fatalf("try %d: phase %s err %v, want held and ErrDeferred", try, rec.Phase, err)
		}
		if h.rt.version() != 1 {
			t.Fatalf("switched to v%d during a hold", h.rt.version())
		}
	}
	if h.fetchN.Load() != 2 || h.rt.stages != stages+1 {
		t.Fatalf("fetched %d times, staged %d times during the hold; want the download and one check", h.fetchN.Load(), h.rt.stages-stages)
	}
	held = false
	if rec, err := h.apply(ctx, t2); err != nil || rec.Phase != Committed || h.rt.version() != 2 {
		t.Fatalf("after the hold: %s %v serving v%d", rec.Phase, err, h.rt.version())
	}
}
