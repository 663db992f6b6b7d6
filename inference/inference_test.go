package inference_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
)

func startRuntime(t testing.TB) {
	t.Helper()
	if err := inference.Init(context.Background(), ""); err != nil {
		t.Fatalf("ONNX Runtime: %v (run `go run . setup` or deployments/scripts/setup.sh)", err)
	}
}

func apsBundle(t testing.TB, data []byte) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(data), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadAPS(t testing.TB, data []byte) *inference.Model {
	t.Helper()
	startRuntime(t)
	m, err := inference.Load(context.Background(), apsBundle(t, data), inference.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestLoadAPSBundles(t *testing.T) {
	for _, tc := range []struct {
		data    []byte
		version int64
	}{{apsmodels.V1(), 1}, {apsmodels.V2(), 2}} {
		m := loadAPS(t, tc.data)
		if m.Name() != "aps-failure" || m.Version() != tc.version || m.NumFeatures() != 170 {
			t.Fatalf("loaded %s v%d with %d features", m.Name(), m.Version(), m.NumFeatures())
		}
		res, err := m.RunGolden(context.Background())
		if err != nil || len(res) == 0 {
			t.Fatalf("golden: %v (%d samples)", err, len(res))
		}
		labels := map[string]bool{}
		for _, r := range res {
			if !r.OK {
				t.Errorf("golden %s: %+v", r.ID, r)
			}
			labels[r.GotLabel] = true
		}
		if !labels["pos"] || !labels["neg"] {
			t.Errorf("golden samples cover labels %v, want both pos and neg", labels)
		}
	}
}

func TestPredictMatchesGolden(t *testing.T) {
	m := loadAPS(t, apsmodels.V2())
	g := m.Meta().Golden
	rows := make([][]float32, len(g))
	for i := range g {
		rows[i] = g[i].Features
	}
	preds, err := m.Predict(rows)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range preds {
		if math.Abs(float64(p.Score)-g[i].Score) > m.Meta().EffectiveTolerance() || p.Label != g[i].Label {
			t.Errorf("row %d: got %s %v, want %s %v", i, p.Label, p.Score, g[i].Label, g[i].Score)
		}
	}
	if _, err := m.Predict([][]float32{{1, 2}}); !errors.Is(err, inference.ErrBadInput) {
		t.Fatalf("short row: %v, want ErrBadInput", err)
	}
}

func TestLoadRefusesMismatches(t *testing.T) {
	startRuntime(t)
	tests := []struct {
		name   string
		change func(b *bundle.Bundle)
		want   error
		msg    string
	}{
		{"corrupt onnx", func(b *bundle.Bundle) { b.ONNX = b.ONNX[:len(b.ONNX)/3] }, inference.ErrModelMismatch, "not a loadable ONNX model"},
		{"garbage onnx", func(b *bundle.Bundle) { b.ONNX = []byte("definitely not protobuf") }, inference.ErrModelMismatch, "not a loadable"},
		{"wrong input name", func(b *bundle.Bundle) { b.Meta.Input = "x" }, inference.ErrModelMismatch, `metadata names input "x"`},
		{"wrong output name", func(b *bundle.Bundle) { b.Meta.Output = "y" }, inference.ErrModelMismatch, `metadata names output "y"`},
		{"feature count", func(b *bundle.Bundle) {
			b.Meta.Features = b.Meta.Features[:169]
			b.Meta.Golden = nil
		}, inference.ErrModelMismatch, "takes 170 features, metadata lists 169"},
		{"golden score", func(b *bundle.Bundle) { b.Meta.Golden[0].Score += 0.2 }, inference.ErrGoldenMismatch, b0ID()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := apsBundle(t, apsmodels.V1())
			tt.change(b)
			m, err := inference.Load(context.Background(), b, inference.Options{})
			if err == nil {
				m.Close()
				t.Fatal("loaded a bundle that should be refused")
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
}

// b0ID is the id of the v1 bundle's first golden sample, which a failing
// golden check must name.
func b0ID() string {
	b, _ := bundle.Read(bytes.NewReader(apsmodels.V1()), bundle.Limits{})
	return b.Meta.Golden[0].ID
}

func TestBareONNXGetsDerivedMetadata(t *testing.T) {
	startRuntime(t)
	b := apsBundle(t, apsmodels.V1())
	bare := &bundle.Bundle{ONNX: b.ONNX, Source: "/x/My Model.onnx"}
	m, err := inference.Load(context.Background(), bare, inference.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.NumFeatures() != 170 || m.Meta().Labels != [2]string{"0", "1"} || m.Name() != "my-model" {
		t.Fatalf("derived %+v", m.Meta())
	}
}

func TestEngineBatchesConcurrentCalls(t *testing.T) {
	m := loadAPS(t, apsmodels.V2())
	var maxBatch atomic.Int64
	eng := inference.NewEngine(m, inference.BatchConfig{MaxBatch: 16, MaxDelay: 200 * time.Microsecond}, func(rows int, _ time.Duration) {
		for {
			cur := maxBatch.Load()
			if int64(rows) <= cur || maxBatch.CompareAndSwap(cur, int64(rows)) {
				return
			}
		}
	})
	defer eng.Close()
	g := m.Meta().Golden
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				s := g[(w+i)%len(g)]
				p, err := eng.PredictOne(context.Background(), s.Features)
				if err != nil {
					errs <- err
					return
				}
				if p.Label != s.Label || math.Abs(float64(p.Score)-s.Score) > 1e-4 {
					errs <- errors.New("batched answer differs from the golden sample " + s.ID)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if maxBatch.Load() > 16 {
		t.Fatalf("a batch of %d rows exceeded MaxBatch 16", maxBatch.Load())
	}
	t.Logf("largest batch: %d rows", maxBatch.Load())
}

func TestEngineClose(t *testing.T) {
	m := loadAPS(t, apsmodels.V1())
	eng := inference.NewEngine(m, inference.BatchConfig{}, nil)
	row := m.Meta().Golden[0].Features
	if _, err := eng.PredictOne(context.Background(), row); err != nil {
		t.Fatal(err)
	}
	eng.Close()
	eng.Close()
	if _, err := eng.PredictOne(context.Background(), row); !errors.Is(err, inference.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

// TestEngineCloseUnderLoad closes an engine while 32 goroutines predict:
// every call ends, either with a right answer or with ErrClosed, and none is
// left waiting for a row nobody will score.
func TestEngineCloseUnderLoad(t *testing.T) {
	for _, cfg := range []inference.BatchConfig{{}, {MaxBatch: 4, MaxDelay: time.Millisecond, Workers: 1}} {
		m := loadAPS(t, apsmodels.V1())
		eng := inference.NewEngine(m, cfg, nil)
		g := m.Meta().Golden[0]
		var wg sync.WaitGroup
		var answered, closed atomic.Int64
		errs := make(chan error, 32)
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					p, err := eng.PredictOne(context.Background(), g.Features)
					switch {
					case errors.Is(err, inference.ErrClosed):
						closed.Add(1)
						return
					case err != nil:
						errs <- err
						return
					case p.Label != g.Label:
						errs <- errors.New("wrong label " + p.Label)
						return
					}
					answered.Add(1)
				}
			}()
		}
		for answered.Load() < 200 {
			time.Sleep(time.Millisecond)
		}
		if err := eng.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if closed.Load() != 32 {
			t.Fatalf("%d callers saw ErrClosed, want all 32", closed.Load())
		}
	}
}

// TestSlotSwapUnderLoad swaps models back and forth while 16 goroutines
// predict without pause: no call may fail, and every answer must come from
// one of the two models, whole.
func TestSlotSwapUnderLoad(t *testing.T) {
	startRuntime(t)
	var slot inference.Slot
	newEng := func(data []byte) *inference.Engine {
		m, err := inference.Load(context.Background(), apsBundle(t, data), inference.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return inference.NewEngine(m, inference.BatchConfig{}, nil)
	}
	slot.Swap(newEng(apsmodels.V1()), time.Second)
	row := apsBundle(t, apsmodels.V1()).Meta.Golden[0].Features
	stop := make(chan struct{})
	var calls, failures atomic.Int64
	seen := [3]atomic.Int64{}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				lease, err := slot.Acquire()
				if err != nil {
					failures.Add(1)
					continue
				}
				_, err = lease.Backend().PredictOne(context.Background(), row)
				seen[lease.Backend().Meta().Version].Add(1)
				lease.Release()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	for i := range 6 {
		data := apsmodels.V2()
		if i%2 == 1 {
			data = apsmodels.V1()
		}
		prev, drained := slot.Swap(newEng(data), 5*time.Second)
		if !drained {
			t.Error("old engine did not drain")
		}
		prev.Close()
		time.Sleep(30 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d calls failed during swaps", failures.Load(), calls.Load())
	}
	if seen[1].Load() == 0 || seen[2].Load() == 0 {
		t.Fatalf("answers by version: v1 %d, v2 %d; both should have served", seen[1].Load(), seen[2].Load())
	}
	slot.Close()
	if _, err := slot.Acquire(); !errors.Is(err, inference.ErrNoModel) {
		t.Fatalf("empty slot: %v", err)
	}
}

func BenchmarkPredictOneRow(b *testing.B) {
	m := loadAPS(b, apsmodels.V2())
	row := m.Meta().Golden[0].Features
	out := make([]float32, 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Scores(row, out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEngineParallel(b *testing.B) {
	m := loadAPS(b, apsmodels.V2())
	eng := inference.NewEngine(m, inference.BatchConfig{}, nil)
	defer eng.Close()
	row := m.Meta().Golden[0].Features
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := eng.PredictOne(context.Background(), row); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkScoresBatch shows what one runtime call costs per row as the
// batch grows: the fixed cost of a call (cgo, tensor set-up) is what the
// micro-batcher spreads over concurrent requests.
func BenchmarkScoresBatch(b *testing.B) {
	m := loadAPS(b, apsmodels.V2())
	row := m.Meta().Golden[0].Features
	for _, n := range []int{1, 8, 32, 64} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			flat := make([]float32, 0, n*len(row))
			for range n {
				flat = append(flat, row...)
			}
			out := make([]float32, n)
			for b.Loop() {
				if err := m.Scores(flat, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}
}
