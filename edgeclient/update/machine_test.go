package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/internal/release"
)

// fakeRuntime records what serves. The real in-process runtime is exercised
// by the agent's end-to-end tests; here the subject is the state machine.
type fakeRuntime struct {
	mu        sync.Mutex
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
		// Requests start failing shortly after the switch, as they would.
		time.AfterFunc(5*time.Millisecond, func() { fc.failures.Add(n) })
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
	h := &harness{rt: &fakeRuntime{stageErr: map[int64]error{}, checkErr: map[int64]error{}, failAfter: map[int64]int64{}}, blobs: map[string][]byte{}}
	h.m = &Machine{Store: st, Runtime: h.rt, Probation: 50 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
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
	b := []byte{byte(version), 'x', 'y'}
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	h.blobs[sha] = b
	return Target{Model: "m", Serial: serial, Version: version,
		Artifact: release.Artifact{URL: "http://x/y", SHA256: sha, Size: int64(len(b)), MediaType: release.MediaTypeBundle},
		Runtime:  release.Runtime{Kind: release.RuntimeInProcess}}
}

func TestApplyCommits(t *testing.T) {
	h := newHarness(t, t.TempDir())
	ctx := context.Background()
	for v := int64(1); v <= 2; v++ {
		rec, err := h.m.Apply(ctx, h.target(v, v*10))
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
	h.m.Apply(ctx, h.target(3, 30))
	ents, _ := os.ReadDir(h.m.Store.Dir() + "/artifacts")
	if len(ents) != 2 {
		t.Fatalf("%d artifacts kept, want 2", len(ents))
	}
}

func TestApplyFailuresKeepServing(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(rt *fakeRuntime)
		wantPhase Phase
	}{
		{"stage fails", func(rt *fakeRuntime) { rt.stageErr[2] = errors.New("model does not load") }, Failed},
		{"golden fails", func(rt *fakeRuntime) { rt.checkErr[2] = runtime.ErrUnhealthy }, Failed},
		{"requests fail in probation", func(rt *fakeRuntime) { rt.failAfter[2] = 3 }, RolledBack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, t.TempDir())
			ctx := context.Background()
			if _, err := h.m.Apply(ctx, h.target(1, 1)); err != nil {
				t.Fatal(err)
			}
			tt.setup(h.rt)
			t2 := h.target(2, 2)
			rec, err := h.m.Apply(ctx, t2)
			if err == nil || rec.Phase != tt.wantPhase {
				t.Fatalf("phase %s err %v, want %s and an error", rec.Phase, err, tt.wantPhase)
			}
			if h.rt.version() != 1 {
				t.Fatalf("serving v%d after a failed update, want v1", h.rt.version())
			}
			in, _ := h.m.Store.Installed()
			if in.Current.Version != 1 {
				t.Fatalf("committed v%d, want v1", in.Current.Version)
			}
			// The broken artifact is remembered and not fetched again.
			n := h.fetchN.Load()
			if _, err := h.m.Apply(ctx, t2); !errors.Is(err, ErrGivenUp) {
				t.Fatalf("second apply: %v, want ErrGivenUp", err)
			}
			if h.fetchN.Load() != n {
				t.Fatal("a given-up artifact was fetched again")
			}
		})
	}
}

func TestInterruptedDownloadResumes(t *testing.T) {
	h := newHarness(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec, err := h.m.Apply(ctx, h.target(1, 1))
	if !errors.Is(err, ErrInterrupted) || rec.Phase != Downloading {
		t.Fatalf("phase %s err %v, want downloading and ErrInterrupted", rec.Phase, err)
	}
	if p := h.m.Pending(); p == nil || p.Target.Version != 1 {
		t.Fatalf("pending = %+v, want the interrupted v1", p)
	}
	rec, err = h.m.Apply(context.Background(), h.target(1, 1))
	if err != nil || rec.Phase != Committed || rec.Attempt != 2 {
		t.Fatalf("resume: phase %s attempt %d err %v", rec.Phase, rec.Attempt, err)
	}
}

func TestBootAfterCrashInProbationRollsBack(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	if _, err := h.m.Apply(ctx, h.target(1, 1)); err != nil {
		t.Fatal(err)
	}
	// Simulate a power cut during v2's probation: v2's record says
	// Probation, installed.json still names v1.
	t2 := h.target(2, 2)
	os.WriteFile(h.m.Store.ArtifactPath(t2.Artifact.SHA256), h.blobs[t2.Artifact.SHA256], 0o644)
	h.m.Store.SetRecord(Record{Phase: Probation, Target: t2, Attempt: 1})

	h2 := newHarness(t, dir)
	spec, err := h2.m.Boot(ctx)
	if err != nil || spec == nil || spec.Version != 1 || h2.rt.version() != 1 {
		t.Fatalf("boot serves %+v (err %v), want v1", spec, err)
	}
	rec, _ := h2.m.Store.Record()
	if rec.Phase != RolledBack {
		t.Fatalf("record after boot: %s, want rolled_back", rec.Phase)
	}
	// It was one attempt of three: the update may run again, and succeeds.
	h2.blobs = h.blobs
	if rec, err := h2.m.Apply(ctx, t2); err != nil || rec.Phase != Committed {
		t.Fatalf("retry after crash: %s %v", rec.Phase, err)
	}
}

func TestBootFallsBackToPrevious(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	ctx := context.Background()
	h.m.Apply(ctx, h.target(1, 1))
	h.m.Apply(ctx, h.target(2, 2))
	in, _ := h.m.Store.Installed()
	os.Remove(in.Current.Bundle) // the committed bundle is gone (disk fault)
	h2 := newHarness(t, dir)
	spec, err := h2.m.Boot(ctx)
	if err != nil || spec == nil || spec.Version != 1 {
		t.Fatalf("boot serves %+v (%v), want the previous v1", spec, err)
	}
}

func TestBootEmptyAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	if spec, err := h.m.Boot(context.Background()); spec != nil || err != nil {
		t.Fatalf("empty store: %+v %v", spec, err)
	}
	os.WriteFile(dir+"/installed.json", []byte("{not json"), 0o644)
	if _, err := h.m.Boot(context.Background()); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("corrupt installed.json: %v, want ErrCorruptState", err)
	}
}

func TestDeferredFetchErrorWaitsWithoutCountingAttempts(t *testing.T) {
	h := newHarness(t, t.TempDir())
	expired := errors.New("403 request has expired")
	fetch := h.m.Fetch
	fails := 5
	h.m.Fetch = func(ctx context.Context, tg Target, dst string, p func(int64, int64)) error {
		if fails > 0 {
			fails--
			return expired
		}
		return fetch(ctx, tg, dst, p)
	}
	h.m.Deferred = func(err error) bool { return errors.Is(err, expired) }
	tg := h.target(1, 1)
	for range 5 { // more than MaxAttempts: none of them may count
		if _, err := h.m.Apply(context.Background(), tg); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("expired URL: %v, want ErrInterrupted", err)
		}
	}
	if _, failed := h.m.Store.Failed(tg.Artifact.SHA256); failed {
		t.Fatal("an expired URL marked the artifact as failed")
	}
	rec, err := h.m.Apply(context.Background(), tg)
	if err != nil || rec.Phase != Committed || rec.Attempt != 1 {
		t.Fatalf("after a fresh URL: %s attempt %d %v", rec.Phase, rec.Attempt, err)
	}
}
