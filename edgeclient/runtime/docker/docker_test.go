package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/container/containertest"
)

// TestContainerSwapUnderLoad stages v1 and v2 of the APS model as two
// containers of a real serving image on the real Docker Engine, serves v1,
// then switches to v2 while 8 goroutines predict through the slot: no call
// may fail, and both versions must have answered.
func TestContainerSwapUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	dir := t.TempDir()
	tag := testTag("swap")
	containertest.ServingImage(ctx, t, cli, tag, "")

	slot := &inference.Slot{}
	rt := &Runtime{Docker: cli, Slot: slot, WorkDir: filepath.Join(dir, "work")}
	spec := func(v int64, data []byte) runtime.Spec {
		p := filepath.Join(dir, "v"+string(rune('0'+v))+".tar.gz")
		os.WriteFile(p, data, 0o644)
		return runtime.Spec{Model: "aps-failure", Version: v, SHA256: "sha-v" + string(rune('0'+v)), Bundle: p, Kind: "container", Image: tag}
	}
	c1, err := rt.Stage(ctx, spec(1, apsmodels.V1()))
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if err := c1.Check(ctx); err != nil {
		t.Fatal(err)
	}
	rt.Activate(ctx, c1)
	c2, err := rt.Stage(ctx, spec(2, apsmodels.V2()))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Check(ctx); err != nil {
		t.Fatal(err)
	}

	row := slot.Current().Meta().Golden[0].Features
	var calls, failures atomic.Int64
	var seen [3]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
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
				_, err = lease.Backend().PredictOne(ctx, row)
				seen[lease.Backend().Meta().Version].Add(1)
				lease.Release()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	prev, err := rt.Activate(ctx, c2)
	if err != nil || prev.Spec().Version != 1 {
		t.Fatalf("activate v2: %v %v", prev, err)
	}
	time.Sleep(300 * time.Millisecond)
	prev.Close() // the old container goes only after the switch
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || seen[1].Load() == 0 || seen[2].Load() == 0 {
		t.Fatalf("%d of %d calls failed; answers v1 %d, v2 %d", failures.Load(), calls.Load(), seen[1].Load(), seen[2].Load())
	}
	t.Logf("%d calls through the containers, 0 failed (v1 %d, v2 %d)", calls.Load(), seen[1].Load(), seen[2].Load())
}

// TestSweepRemovesOrphans leaves a container behind as a crashed agent would
// (staged, never closed), then sweeps as the restarted agent does: the
// orphan and its unpacked bundle go, while a container of another agent on
// the same host stays.
func TestSweepRemovesOrphans(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	dir := t.TempDir()
	tag := testTag("sweep")
	containertest.ServingImage(ctx, t, cli, tag, "")
	p := filepath.Join(dir, "v1.tar.gz")
	if err := os.WriteFile(p, apsmodels.V1(), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{Model: "aps-failure", Version: 1, SHA256: "sha-v1", Bundle: p, Kind: "container", Image: tag}

	mine := filepath.Join(dir, "truck-1")
	crashed := &Runtime{Docker: cli, Slot: &inference.Slot{}, WorkDir: filepath.Join(mine, "containers"), Owner: OwnerOf("truck-1", mine)}
	orphan, err := crashed.Stage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { orphan.Close() })
	other := &Runtime{Docker: cli, Slot: &inference.Slot{}, WorkDir: filepath.Join(dir, "truck-2", "containers"), Owner: OwnerOf("truck-2", filepath.Join(dir, "truck-2"))}
	kept, err := other.Stage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kept.Close() })

	restarted := &Runtime{Docker: cli, Slot: &inference.Slot{}, WorkDir: filepath.Join(mine, "containers"), Owner: OwnerOf("truck-1", mine)}
	n, err := restarted.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep removed %d containers (%v), want the 1 orphan", n, err)
	}
	if _, err := cli.ContainerInspect(ctx, orphan.(*candidate).id); err == nil {
		t.Fatal("the orphan container is still there")
	}
	if _, err := os.Stat(restarted.WorkDir); !os.IsNotExist(err) {
		t.Fatalf("unpacked bundles of the orphan still there: %v", err)
	}
	if err := kept.Check(ctx); err != nil {
		t.Fatalf("the other agent's container was touched: %v", err)
	}
	if n, err := restarted.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v; want nothing left to do", n, err)
	}
	if _, err := (&Runtime{Docker: cli}).Sweep(ctx); err == nil {
		t.Fatal("a sweep without an owner would remove every agent's containers")
	}
}

// testTag names a test image apart from those of another test process on the
// same Docker Engine (two copies of the suite at once): one's clean-up must
// not remove the other's image.
func testTag(name string) string {
	return fmt.Sprintf("linkedge-test-runtime:%s-%d", name, os.Getpid())
}
