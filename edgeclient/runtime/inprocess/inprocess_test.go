package inprocess

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
)

func write(t *testing.T, data []byte) string {
	p := filepath.Join(t.TempDir(), "model.tar.gz")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newRuntime starts ONNX Runtime and returns a runtime over an empty slot,
// closed when the test ends.
func newRuntime(t *testing.T) (*Runtime, *inference.Slot) {
	t.Helper()
	if err := inference.Init(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	slot := &inference.Slot{}
	t.Cleanup(func() { slot.Close() })
	return New(slot, inference.Options{}, inference.BatchConfig{}, nil), slot
}

func TestStageActivate(t *testing.T) {
	ctx := context.Background()
	rt, slot := newRuntime(t)
	v1 := runtime.Spec{Model: "aps-failure", Version: 1, Bundle: write(t, apsmodels.V1())}
	v2 := runtime.Spec{Model: "aps-failure", Version: 2, Bundle: write(t, apsmodels.V2())}

	// A bundle of another model than the release announced is refused.
	if _, err := rt.Stage(ctx, runtime.Spec{Model: "engine-temp", Version: 1, Bundle: v1.Bundle}); !errors.Is(err, bundle.ErrInvalid) {
		t.Fatalf("another model: %v", err)
	}
	c1, err := rt.Stage(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if slot.Ready() || rt.Serving() != nil {
		t.Fatal("a staged candidate must not serve")
	}
	if prev, err := rt.Activate(ctx, c1); err != nil || prev != nil {
		t.Fatalf("first activate: %v %v", prev, err)
	}
	c2, err := rt.Stage(ctx, v2)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Check(ctx); err != nil {
		t.Fatal(err)
	}
	prev, err := rt.Activate(ctx, c2)
	if err != nil || prev.Spec().Version != 1 {
		t.Fatalf("activate v2: prev %v, %v", prev, err)
	}
	if v := slot.Current().Meta().Version; v != 2 {
		t.Fatalf("slot serves v%d", v)
	}
	// Rollback is one more Activate; the previous candidate was kept warm.
	if _, err := rt.Activate(ctx, prev); err != nil || slot.Current().Meta().Version != 1 {
		t.Fatalf("rollback: %v", err)
	}
	c2.Close()
	c2.Close()
}

// A9: a bundle whose model.onnx is over the truck's cap fails before it is
// read into memory, as a verdict on the model (ErrUnhealthy: the update
// fails for good), not as a passing hiccup retried for ever.
func TestStageRefusesAModelOverTheCap(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	rt.Limits.MaxModelBytes = 1 << 10
	_, err := rt.Stage(ctx, runtime.Spec{Model: "aps-failure", Version: 1, Bundle: write(t, apsmodels.V1())})
	if !errors.Is(err, runtime.ErrUnhealthy) || !errors.Is(err, bundle.ErrTooLarge) || !strings.Contains(err.Error(), "max_model_bytes") {
		t.Fatalf("got %v, want a too-large refusal naming inference.max_model_bytes", err)
	}
	if update.Classify(ctx, err) != update.Permanent {
		t.Fatalf("classified %v, want permanent", update.Classify(ctx, err))
	}
}

// The release's version is the model's (issue 12 #1): a bundle built
// before the registry numbered it has no version, or a guess that a
// parallel registration made wrong, and the truck serves and reports the
// version the signed release binds to the bundle's sha256.
func TestStageTakesTheReleaseVersion(t *testing.T) {
	ctx := context.Background()
	rt, slot := newRuntime(t)
	b, err := bundle.Read(bytes.NewReader(apsmodels.V1()), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b.Meta.Version = 0
	var unversioned bytes.Buffer
	if err := bundle.Write(&unversioned, b.Meta, b.ONNX); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want int64
	}{
		{"no version in metadata.json", unversioned.Bytes(), 3},
		{"metadata.json says 1", apsmodels.V1(), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rt.Stage(ctx, runtime.Spec{Model: "aps-failure", Version: tc.want, Bundle: write(t, tc.data)})
			if err != nil {
				t.Fatalf("stage as version %d: %v", tc.want, err)
			}
			if _, err := rt.Activate(ctx, c); err != nil {
				t.Fatal(err)
			}
			if v := slot.Current().Meta().Version; v != tc.want {
				t.Fatalf("serves version %d, want the release's %d", v, tc.want)
			}
		})
	}
}
