package fleetsim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/edgeclient/runtime/docker"
	"github.com/linkedge/linkedge/inference/apsmodels"
	icontainer "github.com/linkedge/linkedge/inference/container"
	"github.com/linkedge/linkedge/inference/container/containertest"
)

// Issue 12 #12: with the embedded default, the local registry, a version
// added with the serving image it runs in (pinned as `linkedge toolkit
// image` prints it, by the image id of an image no registry ever saw) is
// announced by the publisher as a container release, and a truck with the
// container runtime moves from its in-process v1 to v2 in that container,
// under load, without a failed request.
func TestLocalRegistryContainerRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	// One tag per test process: another copy of the suite may share the
	// engine.
	tag := fmt.Sprintf("linkedge-test-serve:localreg-%d", os.Getpid())
	containertest.ServingImage(ctx, t, cli, tag, "")
	ref, fromRegistry, err := icontainer.Pin(ctx, cli, tag)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if fromRegistry || ref != "linkedge-test-serve@"+info.ID {
		t.Fatalf("Pin = %s (from a registry: %v), want the image id %s", ref, fromRegistry, info.ID)
	}

	dir := t.TempDir()
	f, err := Start(ctx, Options{Dir: filepath.Join(dir, "fleet"), Trucks: 1, Probation: 500 * time.Millisecond, HTTPClients: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := f.Trucks[0]
	if err := tr.RestartWith(ctx, func(c *edgeclient.Config) { c.Containers.Enabled = true }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Register(ctx, apsmodels.V1()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.Approve("aps-failure", 1, "test"); err != nil {
		t.Fatal(err)
	}
	if err := WaitVersion(ctx, 1, tr); err != nil {
		t.Fatal(err)
	}
	if n := countServing(t, ctx, cli, tr); n != 0 {
		t.Fatalf("%d containers serving v1, which runs in process", n)
	}

	failed := tr.Load.HTTPFailed.Load()
	e, err := f.Register(ctx, apsmodels.V2())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.SetImage(e.Model, e.Version, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.Approve(e.Model, e.Version, "test"); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, "v2 in a container", func() bool {
		st := tr.Agent.Status()
		return st.Version == 2 && st.Phase == "committed" && countServing(t, ctx, cli, tr) == 1
	}); err != nil {
		t.Fatalf("%v: %+v", err, tr.Agent.Status())
	}
	list, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+docker.OwnerOf(tr.ID, tr.cfg.DataDir)))})
	if err != nil || len(list) != 1 {
		t.Fatalf("serving containers %v, %v", list, err)
	}
	if list[0].ImageID != info.ID {
		t.Fatalf("the serving container runs image %s, want %s", list[0].ImageID, info.ID)
	}
	// Answers now come from the container, as v2.
	n := tr.Load.ByVersion()["2"]
	if err := WaitFor(ctx, "answers from v2", func() bool { return tr.Load.ByVersion()["2"] > n+5 }); err != nil {
		t.Fatal(err)
	}
	if d := tr.Load.HTTPFailed.Load() - failed; d != 0 {
		t.Fatalf("%d HTTP requests failed across the swap into the container: %s", d, tr.Load.LastFailure())
	}
}
