// Package docker runs models in containers: a candidate is a container of a
// LinkEdge serving image (see `linkedge toolkit image`), started next to the
// one that serves, with the verified bundle mounted at /opt/ml/model. The
// agent's own HTTP and MQTT front ends reach it through an
// inference/client.Client, so activating it is the same atomic swap as in
// process: requests in flight finish on the old container, which is removed
// only when the new one is committed.
package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	dockerclient "github.com/docker/docker/client"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/client"
	icontainer "github.com/linkedge/linkedge/inference/container"
)

// ErrNoImage means a container release named no image.
var ErrNoImage = errors.New("container release names no image")

// Runtime is the container runtime.
type Runtime struct {
	Docker dockerclient.APIClient
	Slot   *inference.Slot
	// WorkDir holds the unpacked bundles the containers mount.
	WorkDir string
	// ReadyTimeout bounds the wait for a new container's /ping. Default 60s.
	ReadyTimeout time.Duration
	// Owner marks every container this runtime starts (the label
	// org.linkedge.owner), so that Sweep finds the ones an earlier run of
	// the same agent left behind. OwnerOf gives the agent's value.
	Owner string
	Log   *slog.Logger

	sw runtime.Switch
}

var _ runtime.Runtime = (*Runtime)(nil)

type candidate struct {
	spec   runtime.Spec
	rt     *Runtime
	cl     *client.Client
	id     string
	dir    string
	closed sync.Once
}

func (c *candidate) Spec() runtime.Spec { return c.spec }
func (c *candidate) Failures() int64    { return c.cl.Failures() }

// Check runs the golden samples through the container's HTTP API.
func (c *candidate) Check(ctx context.Context) error {
	if err := inference.CheckBackendGolden(ctx, c.cl); err != nil {
		return fmt.Errorf("%w: %w", runtime.ErrUnhealthy, err)
	}
	return nil
}

// Close removes the container and its unpacked bundle.
func (c *candidate) Close() error {
	var err error
	c.closed.Do(func() {
		c.cl.Close()
		err = c.rt.Docker.ContainerRemove(context.Background(), c.id, container.RemoveOptions{Force: true})
		os.RemoveAll(c.dir)
	})
	return err
}

// Stage unpacks the bundle, makes sure the image is there (pulling it by
// digest if not), starts a container on a free loopback port and waits for
// its /ping.
func (r *Runtime) Stage(ctx context.Context, spec runtime.Spec) (runtime.Candidate, error) {
	if spec.Image == "" {
		return nil, ErrNoImage
	}
	b, err := bundle.Open(spec.Bundle)
	if err != nil {
		return nil, err
	}
	if b.Meta == nil || b.Meta.Name != spec.Model || b.Meta.Version != spec.Version {
		return nil, fmt.Errorf("%w: bundle does not hold %s v%d", bundle.ErrInvalid, spec.Model, spec.Version)
	}
	dir := filepath.Join(r.WorkDir, spec.SHA256)
	os.RemoveAll(dir)
	if err := b.Unpack(dir); err != nil {
		return nil, err
	}
	if err := r.ensureImage(ctx, spec.Image); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("linkedge-%s-v%d-%d", spec.Model, spec.Version, time.Now().UnixNano()%1e6)
	var labels map[string]string
	if r.Owner != "" {
		labels = map[string]string{OwnerLabel: r.Owner}
	}
	id, err := icontainer.Run(ctx, r.Docker, icontainer.RunOptions{Image: spec.Image, Name: name, HTTP: addr, ModelDir: dir, Labels: labels})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &candidate{spec: spec, rt: r, cl: client.New("http://"+addr, b.Meta, spec.SHA256), id: id, dir: dir}
	if err := r.waitReady(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (r *Runtime) waitReady(ctx context.Context, c *candidate) error {
	limit := r.ReadyTimeout
	if limit <= 0 {
		limit = 60 * time.Second
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if c.cl.Ready(ctx) {
			return nil
		}
		if info, err := r.Docker.ContainerInspect(ctx, c.id); err == nil && info.State != nil && !info.State.Running {
			return fmt.Errorf("%w: container %s exited (%d): %s", runtime.ErrUnhealthy, c.id[:12], info.State.ExitCode, r.logTail(c.id))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w: container %s did not answer /ping within %s: %s", runtime.ErrUnhealthy, c.id[:12], limit, r.logTail(c.id))
}

func (r *Runtime) logTail(id string) string {
	rc, err := r.Docker.ContainerLogs(context.Background(), id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "5"})
	if err != nil {
		return "no logs"
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc, 4096))
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 32 && r != '\n' {
			return -1 // drop the log stream's framing bytes
		}
		return r
	}, string(b)))
}

func (r *Runtime) ensureImage(ctx context.Context, ref string) error {
	if _, err := r.Docker.ImageInspect(ctx, ref); err == nil {
		return nil
	}
	rc, err := r.Docker.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if _, err := r.Docker.ImageInspect(ctx, ref); err != nil {
		return fmt.Errorf("pull %s: image still missing: %w", ref, err)
	}
	return nil
}

// OwnerLabel is the container label Runtime.Owner sets.
const OwnerLabel = "org.linkedge.owner"

// OwnerOf names an agent for OwnerLabel: its truck and the data folder it
// keeps its state in, so that two agents on one host (the fleet simulator,
// or two models on one truck) never sweep each other's containers.
func OwnerOf(truck, dataDir string) string {
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	sum := sha256.Sum256([]byte(dataDir))
	return truck + "." + hex.EncodeToString(sum[:6])
}

// Sweep removes what an earlier run of this agent left behind: containers
// labelled with Owner, running or not, and the bundles unpacked for them.
// The agent calls it at start, before it stages anything: the container that
// served before a crash is not adopted but started again from the committed
// bundle, like the in-process model is, so every container with this owner
// is an orphan. It returns how many containers it removed.
func (r *Runtime) Sweep(ctx context.Context) (int, error) {
	if r.Owner == "" {
		return 0, errors.New("docker: sweep needs an owner")
	}
	list, err := r.Docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", OwnerLabel+"="+r.Owner))})
	if err != nil {
		return 0, fmt.Errorf("list containers of %s: %w", r.Owner, err)
	}
	removed := 0
	var errs []error
	for _, c := range list {
		if err := r.Docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID[:12], err))
			continue
		}
		removed++
		if r.Log != nil {
			r.Log.Info("removed a container left by an earlier run", "container", c.ID[:12], "image", c.Image, "state", c.State)
		}
	}
	if len(errs) == 0 {
		// Only once no container mounts them any more.
		if err := os.RemoveAll(r.WorkDir); err != nil {
			errs = append(errs, fmt.Errorf("clear %s: %w", r.WorkDir, err))
		}
	}
	return removed, errors.Join(errs...)
}

// Activate swaps the container's client into the slot.
func (r *Runtime) Activate(ctx context.Context, c runtime.Candidate) (runtime.Candidate, error) {
	cc, ok := c.(*candidate)
	if !ok {
		return nil, fmt.Errorf("docker: cannot activate a %T", c)
	}
	prev := r.sw.Activate(r.Slot, cc, cc.cl)
	if prev == nil {
		return nil, nil
	}
	return prev, nil
}

// Serving returns the serving container candidate.
func (r *Runtime) Serving() runtime.Candidate {
	return r.sw.Serving()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
