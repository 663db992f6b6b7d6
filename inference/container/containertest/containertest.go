// Package containertest holds what tests that need the real Docker Engine
// share: the engine itself, and a serving image built from this source tree.
package containertest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/build"
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

// SilentImage builds an image tagged tag whose container starts and runs
// but never answers /ping (the silent command, static, FROM scratch),
// removed at the end of the test.
func SilentImage(ctx context.Context, t testing.TB, cli *client.Client, tag string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "silent")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/linkedge/linkedge/inference/container/containertest/silent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // FROM scratch has no libc
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build silent: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var ctxTar bytes.Buffer
	tw := tar.NewWriter(&ctxTar)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY silent /silent\nENTRYPOINT [\"/silent\"]\n")},
		{"silent", 0o755, exe},
	} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg})
		tw.Write(f.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.ImageBuild(ctx, &ctxTar, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("build %s: %v", tag, err)
		}
		if m.Error != "" {
			t.Fatalf("build %s: %s", tag, strings.TrimSpace(m.Error))
		}
	}
	t.Cleanup(func() {
		cli.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true, PruneChildren: true})
	})
}
