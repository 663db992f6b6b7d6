package fleetsim

import (
	"context"
	"encoding/base64"
	cerrdefs "github.com/containerd/errdefs"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/edgeclient/runtime/docker"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/container/containertest"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// TestContainerRelease: a release whose runtime is a container (an image
// pinned by digest in a registry) moves a truck from its in-process model to
// a model container, under HTTP load, without a failed request; a later
// in-process release moves it back and the container goes away.
func TestContainerRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	dir := t.TempDir()
	imageRef, _ := pushServingImage(t, ctx, cli, dir)

	f, err := Start(ctx, Options{Dir: filepath.Join(dir, "fleet"), Trucks: 1, Probation: 500 * time.Millisecond, HTTPClients: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := f.Trucks[0]
	if err := tr.RestartWith(ctx, func(c *edgeclient.Config) { c.Containers.Enabled = true }); err != nil {
		t.Fatal(err)
	}
	var entries []localreg.Entry
	for _, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		e, err := f.Register(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	f.Registry.Approve("aps-failure", 1, "test")
	f.Registry.Approve("aps-failure", 2, "test")
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatal(err)
	}
	// From here on the test signs the releases itself (with serials above
	// the publisher's, which leaves newer documents alone).
	priv, err := release.ReadPrivateKeyFile(f.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	publish := func(e localreg.Entry, rt release.Runtime) {
		now := time.Now()
		doc, err := release.Sign(&release.Release{Schema: release.Schema, Model: "aps-failure", Serial: now.UnixMilli() + 1000,
			IssuedAt: now, ExpiresAt: now.Add(time.Hour), Stable: release.Target{Version: e.Version, Runtime: rt,
				Source: release.Source{Registry: release.RegistryLocal},
				Artifact: release.Artifact{URL: f.Publisher.ArtifactBaseURL() + publisher.ArtifactPath(e.Model, e.Version),
					SHA256: e.SHA256, Size: e.Size, MediaType: release.MediaTypeBundle}}}, priv)
		if err != nil {
			t.Fatal(err)
		}
		publishRetained(t, f.BrokerURL, topics.ModelRelease("aps-failure"), doc)
	}
	// The same version, now as a container: the truck moves from its
	// in-process session to the container.
	failed := tr.Load.HTTPFailed.Load()
	publish(entries[1], release.Runtime{Kind: release.RuntimeContainer, Image: imageRef})
	if err := WaitFor(ctx, "v2 in a container", func() bool {
		st := tr.Agent.Status()
		return st.Phase == "committed" && countServing(t, ctx, cli, tr) == 1
	}); err != nil {
		t.Fatalf("%v: %+v", err, tr.Agent.Status())
	}
	publish(entries[0], release.Runtime{Kind: release.RuntimeInProcess})
	if err := WaitVersion(ctx, 1, tr); err != nil {
		t.Fatalf("%v: %+v", err, tr.Agent.Status())
	}
	if n := tr.Load.HTTPFailed.Load() - failed; n != 0 {
		t.Fatalf("%d HTTP requests failed across in-process → container → in-process: %s", n, tr.Load.LastFailure())
	}
	if v := tr.Load.ByVersion(); v["1"] == 0 || v["2"] == 0 {
		t.Fatalf("answers by version %v", v)
	}
	// The old container is removed right after the commit.
	if err := WaitFor(ctx, "the container removed", func() bool { return countServing(t, ctx, cli, tr) == 0 }); err != nil {
		t.Fatal(err)
	}

	// A container an earlier run of this agent left behind (after a crash
	// or a power cut) is removed when the agent starts again. (Its folder
	// is named apart from the one the agent may still be clearing.)
	bundlePath := filepath.Join(dir, "orphan-v2.tar.gz")
	if err := os.WriteFile(bundlePath, apsmodels.V2(), 0o644); err != nil {
		t.Fatal(err)
	}
	crashed := &docker.Runtime{Docker: cli, Slot: &inference.Slot{}, WorkDir: filepath.Join(tr.cfg.DataDir, "containers"), Owner: docker.OwnerOf(tr.ID, tr.cfg.DataDir)}
	orphan, err := crashed.Stage(ctx, runtime.Spec{Model: "aps-failure", Version: 2, SHA256: "orphan-" + entries[1].SHA256, Bundle: bundlePath, Kind: release.RuntimeContainer, Image: imageRef})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { orphan.Close() })
	if n := countServing(t, ctx, cli, tr); n != 1 {
		t.Fatalf("%d serving containers before the restart, want the orphan", n)
	}
	if err := tr.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countServing(t, ctx, cli, tr); n != 0 {
		t.Fatalf("%d containers still there after the agent restarted on an in-process model", n)
	}
	if err := WaitVersion(ctx, 1, tr); err != nil {
		t.Fatal(err)
	}
}

// countServing counts the running containers of truck tr's agent (by its
// owner label: another test process may run containers on the same engine).
func countServing(t *testing.T, ctx context.Context, cli interface {
	ContainerList(context.Context, container.ListOptions) ([]container.Summary, error)
}, tr *Truck) int {
	list, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+docker.OwnerOf(tr.ID, tr.cfg.DataDir)))})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// pushServingImage builds the serving image, pushes it to a registry on
// loopback (Debian's docker-registry) and returns its digest reference, and
// a function that stops the registry.
func pushServingImage(t *testing.T, ctx context.Context, cli *client.Client, dir string) (string, func()) {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry is not installed (deployments/scripts/setup.sh installs it)")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "registry.yml")
	os.WriteFile(cfg, []byte("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "+filepath.Join(dir, "registry-data")+"\nhttp:\n  addr: "+addr+"\n"), 0o644)
	reg := exec.Command(bin, "serve", cfg)
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { reg.Process.Kill(); reg.Wait() }) }
	t.Cleanup(stop)
	tag := addr + "/linkedge-serve:e2e"
	containertest.ServingImage(ctx, t, cli, tag, "")
	var pushErr error
	for range 50 { // the registry may still be starting
		rc, err := cli.ImagePush(ctx, tag, image.PushOptions{RegistryAuth: base64.URLEncoding.EncodeToString([]byte("{}"))})
		if pushErr = err; err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			if !strings.Contains(string(b), `"error"`) {
				break
			}
			pushErr = io.ErrUnexpectedEOF
		}
		time.Sleep(100 * time.Millisecond)
	}
	if pushErr != nil {
		t.Fatalf("push %s: %v", tag, pushErr)
	}
	info, err := cli.ImageInspect(ctx, tag)
	if err != nil || len(info.RepoDigests) == 0 {
		t.Fatalf("no repo digest after push: %v", err)
	}
	return info.RepoDigests[0], stop
}

// TestServingContainerSupervised (J): the serving container is killed and
// the agent restarts it; then it is removed with its image, its registry
// gone, so it cannot come back, and the agent falls back to the same
// version in process and says so, while the release keeps asking for the
// container (a normal update again, retried, never reported failed).
func TestServingContainerSupervised(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	dir := t.TempDir()
	imageRef, stopRegistry := pushServingImage(t, ctx, cli, dir)

	f, err := Start(ctx, Options{Dir: filepath.Join(dir, "fleet"), Trucks: 1, Probation: 500 * time.Millisecond, HTTPClients: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := f.Trucks[0]
	if err := tr.RestartWith(ctx, func(c *edgeclient.Config) {
		c.Containers.Enabled = true
		c.Containers.SuperviseInterval = 300 * time.Millisecond
		c.Containers.ReadyTimeout = 20 * time.Second
	}); err != nil {
		t.Fatal(err)
	}
	ev := watchEvents(t, f.BrokerURL)
	e, err := f.Register(ctx, apsmodels.V2())
	if err != nil {
		t.Fatal(err)
	}
	f.Registry.Approve("aps-failure", 2, "test")
	if err := WaitVersion(ctx, 2, tr); err != nil {
		t.Fatal(err)
	}
	priv, err := release.ReadPrivateKeyFile(f.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	doc, err := release.Sign(&release.Release{Schema: release.Schema, Model: "aps-failure", Serial: now.UnixMilli() + 1000,
		IssuedAt: now, ExpiresAt: now.Add(time.Hour), Stable: release.Target{Version: e.Version,
			Runtime: release.Runtime{Kind: release.RuntimeContainer, Image: imageRef},
			Source:  release.Source{Registry: release.RegistryLocal},
			Artifact: release.Artifact{URL: f.Publisher.ArtifactBaseURL() + publisher.ArtifactPath(e.Model, e.Version),
				SHA256: e.SHA256, Size: e.Size, MediaType: release.MediaTypeBundle}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	publishRetained(t, f.BrokerURL, topics.ModelRelease("aps-failure"), doc)
	if err := WaitFor(ctx, "v2 in a container", func() bool {
		st := tr.Agent.Status()
		return st.Phase == "committed" && countServing(t, ctx, cli, tr) == 1
	}); err != nil {
		t.Fatalf("%v: %+v", err, tr.Agent.Status())
	}
	serving := func() string {
		list, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+docker.OwnerOf(tr.ID, tr.cfg.DataDir)))})
		if err != nil || len(list) != 1 {
			t.Fatalf("serving containers: %v %v", list, err)
		}
		return list[0].ID
	}
	healthy := func() bool {
		resp, err := http.Get("http://" + tr.Agent.HTTPAddr() + "/ping")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	okBefore := func() int64 { return tr.Load.HTTPOK.Load() }

	// 1. Killed: restarted in place.
	id := serving()
	if err := cli.ContainerKill(ctx, id, "KILL"); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	if err := WaitFor(ctx, "the serving container restarted", func() bool {
		return slices.Contains(ev.kinds(2), status.EventServingRestarted)
	}); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	n := okBefore()
	if err := WaitFor(ctx, "predictions answered again", func() bool { return healthy() && tr.Load.HTTPOK.Load() > n+5 }); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed container: serving again %.1fs after the kill", time.Since(killedAt).Seconds())

	// 2. Removed, image gone, registry gone: it cannot come back.
	stopRegistry()
	if err := cli.ContainerRemove(ctx, serving(), container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// Gone already is as good: another test process on the same engine may
	// have removed the image (the same content, so the same image id).
	if _, err := cli.ImageRemove(ctx, imageRef, image.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, "fallback to the same version in process", func() bool {
		return slices.Contains(ev.kinds(2), status.EventServingFallback)
	}); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	n = okBefore()
	if err := WaitFor(ctx, "predictions answered by the fallback", func() bool { return healthy() && tr.Load.HTTPOK.Load() > n+5 }); err != nil {
		t.Fatal(err)
	}
	if st := tr.Agent.Status(); st.Version != 2 || st.Phase == "failed" || st.Phase == "rolled_back" {
		t.Fatalf("status after the fallback %+v", st)
	}
	if v := tr.Load.ByVersion(); v["2"] == 0 {
		t.Fatalf("answers by version %v", v)
	}
	// The release still names the container: the truck keeps trying it as
	// a normal update, and never calls the version failed.
	time.Sleep(3 * time.Second)
	ev.noFailure(t, 2)
	if !healthy() {
		t.Fatal("the fallback stopped serving")
	}
}
