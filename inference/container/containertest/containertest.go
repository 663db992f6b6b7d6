// Package containertest holds what tests that need the real Docker Engine
// share: the engine itself, and a serving image built from this source tree.
package containertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/linkedge/linkedge/inference"
	icontainer "github.com/linkedge/linkedge/inference/container"
)

// Engine connects to the local Docker Engine and closes the client at the
// end of the test. Without an engine the test fails in CI (whose set-up
// starts one) and is skipped elsewhere.
func Engine(ctx context.Context, t testing.TB) *client.Client {
	t.Helper()
	cli, err := icontainer.Connect(ctx)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("%v (deployments/scripts/setup.sh starts one)", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// ServingImage builds the linkedge binary from this tree and a serving
// image of it tagged tag (with bundle baked in, if not empty), removed at
// the end of the test.
func ServingImage(ctx context.Context, t testing.TB, cli *client.Client, tag, bundle string) {
	t.Helper()
	if err := inference.Init(ctx, ""); err != nil {
		t.Fatal(err) // the image carries the runtime library the tests use
	}
	bin := filepath.Join(t.TempDir(), "linkedge")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/linkedge/linkedge").CombinedOutput(); err != nil {
		t.Fatalf("build linkedge: %v\n%s", err, out)
	}
	if _, err := icontainer.BuildImage(ctx, cli, icontainer.ImageOptions{Tag: tag, Binary: bin, Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true, PruneChildren: true})
	})
}
