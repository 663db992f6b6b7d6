package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	dockerclient "github.com/docker/docker/client"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/client"
	"github.com/linkedge/linkedge/inference/container/containertest"
	"github.com/linkedge/linkedge/inference/server"
)

// lockedBuffer collects the runtime's log lines for the test to read while
// the runtime may still write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testLogger logs to the test's output and to the buffer it returns.
func testLogger(t *testing.T) (*slog.Logger, *lockedBuffer) {
	buf := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(io.MultiWriter(buf, t.Output()), nil)), buf
}

func writeBundle(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKilledContainerRestarts is the field failure: a serving container is
// killed (docker kill). Alive must say so, with the exit code; the agent's
// /ping must turn 503 instead of answering 200 over a run of 500s; Restart
// must bring the same spec back on the same address, so that the
// client.Client already in the slot serves again. Then the container is
// removed outright, and Restart must recreate it.
func TestKilledContainerRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	dir := t.TempDir()
	tag := testTag("restart")
	containertest.ServingImage(ctx, t, cli, tag, "")

	log, logs := testLogger(t)
	slot := &inference.Slot{}
	rt := &Runtime{Docker: cli, Slot: slot, WorkDir: filepath.Join(dir, "work"), ReadyTimeout: time.Minute, Log: log}
	spec := runtime.Spec{Model: "aps-failure", Version: 1, SHA256: "sha-v1", Bundle: writeBundle(t, dir, "v1.tar.gz", apsmodels.V1()), Kind: "container", Image: tag}
	staged, err := rt.Stage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	c := staged.(*candidate)
	t.Cleanup(func() {
		slot.Swap(nil, 0) // closing a serving candidate is a bug
		c.Close()
		id := c.id
		if _, err := cli.ContainerInspect(context.Background(), id); !cerrdefs.IsNotFound(err) {
			t.Errorf("container %s still there after Close: %v", short(id), err)
		}
	})
	if err := c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Activate(ctx, c); err != nil {
		t.Fatal(err)
	}
	var sup runtime.Supervised = c
	serving := slot.Current()

	srv := server.New(server.Config{Logger: slog.New(slog.DiscardHandler)}, slot, nil)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	body, err := json.Marshal(map[string]any{"instances": []bundle.Row{serving.Meta().Golden[0].Features}})
	if err != nil {
		t.Fatal(err)
	}
	status := func(method, path string) int {
		t.Helper()
		var r io.Reader
		if method == "POST" {
			r = bytes.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(ctx, method, ts.URL+path, r)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	predict := func() int { return status("POST", "/invocations") }
	waitPing := func(want int) {
		t.Helper()
		limit := time.Duration(client.UnhealthyAfter+3) * client.ProbeInterval
		deadline := time.Now().Add(limit)
		for {
			got := status("GET", "/ping")
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/ping still %d after %s, want %d", got, limit, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitDead := func() error {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := sup.Alive(actx)
			cancel()
			if err != nil {
				return err
			}
			if time.Now().After(deadline) {
				t.Fatal("Alive still nil 20s after the container was killed")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if code := predict(); code != 200 {
		t.Fatalf("serving: /invocations %d", code)
	}
	if code := status("GET", "/ping"); code != 200 {
		t.Fatalf("serving: /ping %d", code)
	}
	if err := sup.Alive(ctx); err != nil {
		t.Fatalf("serving container not alive: %v", err)
	}

	// docker kill: SIGKILL, exit code 137.
	first := c.id
	if err := cli.ContainerKill(ctx, first, "KILL"); err != nil {
		t.Fatal(err)
	}
	err = waitDead()
	if !errors.Is(err, ErrContainer) || !strings.Contains(err.Error(), "exited with code 137") {
		t.Fatalf("Alive after docker kill: %v, want ErrContainer saying it exited with code 137", err)
	}
	t.Logf("Alive after docker kill: %v", err)
	if code := predict(); code != 500 {
		t.Fatalf("/invocations with the container dead: %d, want 500", code)
	}
	start := time.Now()
	waitPing(503)
	t.Logf("/ping answered 503 %s after the first failed prediction", time.Since(start).Round(time.Millisecond))
	if code := status("GET", "/v2/health/ready"); code != 503 {
		t.Fatalf("/v2/health/ready with the container dead: %d, want 503", code)
	}

	start = time.Now()
	if err := sup.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("restarted in place in %s", time.Since(start).Round(time.Millisecond))
	if c.id != first {
		t.Fatalf("a killed container was recreated (%s → %s), want it restarted in place", short(first), short(c.id))
	}
	if err := sup.Alive(ctx); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if slot.Current() != serving {
		t.Fatal("the slot's backend changed; Restart must keep the same client")
	}
	if code := status("GET", "/ping"); code != 200 {
		t.Fatalf("/ping after restart: %d", code)
	}
	if code := predict(); code != 200 {
		t.Fatalf("/invocations after restart: %d", code)
	}
	if l := logs.String(); !strings.Contains(l, "restarted model container") || !strings.Contains(l, short(first)) || !strings.Contains(l, "exited with code 137") {
		t.Fatalf("the restart was not logged with its container and reason:\n%s", l)
	}

	// docker rm -f: nothing left to restart; a new container takes over the
	// address.
	if err := cli.ContainerRemove(ctx, first, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	err = waitDead()
	if !errors.Is(err, ErrContainer) || !strings.Contains(err.Error(), "was removed") {
		t.Fatalf("Alive after docker rm: %v, want ErrContainer saying it was removed", err)
	}
	start = time.Now()
	if err := sup.Restart(ctx); err != nil {
		t.Fatalf("restart after removal: %v", err)
	}
	t.Logf("recreated in %s", time.Since(start).Round(time.Millisecond))
	if c.id == first {
		t.Fatal("the container id did not change, yet the old container was removed")
	}
	if err := sup.Alive(ctx); err != nil {
		t.Fatalf("after recreate: %v", err)
	}
	if code := predict(); code != 200 || slot.Current() != serving {
		t.Fatalf("/invocations after recreate: %d (same backend: %v)", code, slot.Current() == serving)
	}
	if l := logs.String(); !strings.Contains(l, "recreated after: removed") || !strings.Contains(l, short(c.id)) {
		t.Fatalf("the recreation was not logged with its container and reason:\n%s", l)
	}
}

// TestSilentContainerIsNotAModelFailure: a container that runs but never
// answers /ping, and an image that cannot be pulled, fail Stage with
// ErrContainer (worth retrying), never runtime.ErrUnhealthy (the model's
// fault, final), and leave no container or unpacked bundle behind. A
// bundle whose golden samples the serving image itself rejects at load is
// the model's fault.
func TestSilentContainerIsNotAModelFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	dir := t.TempDir()
	silent := testTag("silent")
	containertest.SilentImage(ctx, t, cli, silent)

	log, _ := testLogger(t)
	owner := OwnerOf("silent", dir)
	rt := &Runtime{Docker: cli, Slot: &inference.Slot{}, WorkDir: filepath.Join(dir, "work"), ReadyTimeout: 3 * time.Second, Owner: owner, Log: log}
	spec := runtime.Spec{Model: "aps-failure", Version: 1, SHA256: "sha-v1", Bundle: writeBundle(t, dir, "v1.tar.gz", apsmodels.V1()), Kind: "container", Image: silent}
	left := func() []container.Summary {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", OwnerLabel+"="+owner))})
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	t.Cleanup(func() { rt.Sweep(context.Background()) })

	start := time.Now()
	_, err := rt.Stage(ctx, spec)
	took := time.Since(start)
	if !errors.Is(err, ErrContainer) || !errors.Is(err, runtime.ErrUnavailable) || errors.Is(err, runtime.ErrUnhealthy) || !strings.Contains(err.Error(), "did not answer /ping within 3s") {
		t.Fatalf("stage of a silent container: %v, want ErrContainer (ready timeout), not ErrUnhealthy", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the ready timeout reads as the caller's deadline: %v", err)
	}
	if took > 30*time.Second {
		t.Fatalf("stage took %s with a 3s ready timeout", took)
	}
	t.Logf("stage failed after %s: %v", took.Round(time.Millisecond), err)
	if l := left(); len(l) != 0 {
		t.Fatalf("%d containers left behind by a failed stage", len(l))
	}
	if _, err := os.Stat(filepath.Join(rt.WorkDir, spec.SHA256)); !os.IsNotExist(err) {
		t.Fatalf("unpacked bundle left behind: %v", err)
	}

	// Alive on a container that runs but does not answer.
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	id, err := rt.start(ctx, spec, addr, t.TempDir(), "test")
	if err != nil {
		t.Fatal(err)
	}
	c := &candidate{spec: spec, rt: rt, cl: client.New("http://"+addr, &bundle.Metadata{Name: spec.Model, Version: 1}, spec.SHA256), addr: addr, id: id, dir: t.TempDir()}
	actx, acancel := context.WithTimeout(ctx, 2*time.Second)
	err = c.Alive(actx)
	acancel()
	if !errors.Is(err, ErrContainer) || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "running but not answering /ping") {
		t.Fatalf("Alive of a silent container: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// An image no registry has.
	missing := spec
	missing.Image = "127.0.0.1:1/linkedge/absent@sha256:" + strings.Repeat("0", 64)
	if _, err := rt.Stage(ctx, missing); !errors.Is(err, ErrContainer) || errors.Is(err, runtime.ErrUnhealthy) {
		t.Fatalf("stage of a missing image: %v, want ErrContainer", err)
	} else {
		t.Logf("missing image: %v", err)
	}

	// The model's fault after all: the serving image loads the bundle,
	// runs its golden samples, and exits because they differ.
	serving := testTag("golden")
	containertest.ServingImage(ctx, t, cli, serving, "")
	b, err := bundle.Read(bytes.NewReader(apsmodels.V1()), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b.Meta.Golden[0].Score += 0.5
	wrong := spec
	wrong.Image, wrong.SHA256, wrong.Bundle = serving, "sha-wrong", filepath.Join(dir, "wrong.tar.gz")
	if _, _, err := bundle.WriteFile(wrong.Bundle, b.Meta, b.ONNX); err != nil {
		t.Fatal(err)
	}
	rt.ReadyTimeout = time.Minute
	if _, err := rt.Stage(ctx, wrong); !errors.Is(err, runtime.ErrUnhealthy) || !errors.Is(err, inference.ErrGoldenMismatch) || errors.Is(err, runtime.ErrUnavailable) {
		t.Fatalf("stage of a bundle with wrong golden samples: %v, want ErrUnhealthy, not ErrContainer", err)
	} else {
		t.Logf("wrong golden samples: %v", err)
	}
	if l := left(); len(l) != 0 {
		t.Fatalf("%d containers left behind", len(l))
	}
}

// TestEngineUnreachable: with no Docker Engine behind the socket, staging,
// Alive and Restart fail with ErrContainer, never ErrUnhealthy. It needs no
// engine and always runs.
func TestEngineUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	cli, err := dockerclient.NewClientWithOpts(dockerclient.WithHost("unix://"+filepath.Join(dir, "no-docker.sock")), dockerclient.WithVersion("1.43"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rt := &Runtime{Docker: cli, Slot: &inference.Slot{}, WorkDir: filepath.Join(dir, "work")}
	spec := runtime.Spec{Model: "aps-failure", Version: 1, SHA256: "sha-v1", Bundle: writeBundle(t, dir, "v1.tar.gz", apsmodels.V1()), Kind: "container", Image: "linkedge-test-runtime:any"}
	if _, err := rt.Stage(ctx, spec); !errors.Is(err, ErrContainer) || errors.Is(err, runtime.ErrUnhealthy) {
		t.Fatalf("stage without an engine: %v, want ErrContainer", err)
	}
	c := &candidate{spec: spec, rt: rt, cl: client.New("http://127.0.0.1:1", &bundle.Metadata{Name: spec.Model, Version: 1}, spec.SHA256), id: strings.Repeat("ab", 32), dir: filepath.Join(dir, "c")}
	if err := c.Alive(ctx); !errors.Is(err, ErrContainer) {
		t.Fatalf("Alive without an engine: %v", err)
	}
	if err := c.Restart(ctx); !errors.Is(err, ErrContainer) || errors.Is(err, runtime.ErrUnhealthy) {
		t.Fatalf("Restart without an engine: %v", err)
	}
	c.Close()
	if err := c.Restart(ctx); err == nil {
		t.Fatal("Restart of a closed candidate succeeded")
	}
}
