// Package docker runs models in containers: a candidate is a container of a
// LinkEdge serving image (see `linkedge toolkit image`), started next to the
// one that serves, with the verified bundle mounted at /opt/ml/model. The
// agent's own HTTP and MQTT front ends reach it through an
// inference/client.Client, so activating it is the same atomic swap as in
// process: requests in flight finish on the old container, which is removed
// only when the new one is committed.
package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/client"
	icontainer "github.com/linkedge/linkedge/inference/container"
)

// ErrNoImage means a container release named no image.
var ErrNoImage = errors.New("container release names no image")

// ErrContainer means the container side failed, not the model: the Docker
// Engine did not answer or refused, the image could not be found or pulled,
// the container exited, was OOM-killed or removed, or it did not answer
// /ping in time. Such a failure says nothing about the model version, so it
// wraps runtime.ErrUnavailable and the update state machine tries again
// later; runtime.ErrUnhealthy (the golden samples came back wrong) is the
// model's fault and is final.
var ErrContainer = fmt.Errorf("model container: %w", runtime.ErrUnavailable)

// Runtime is the container runtime.
type Runtime struct {
	Docker dockerclient.APIClient
	Slot   *inference.Slot
	// WorkDir holds the unpacked bundles the containers mount.
	WorkDir string
	// ReadyTimeout bounds the wait for a new or restarted container's
	// /ping. Default 60s.
	ReadyTimeout time.Duration
	// Owner marks every container this runtime starts (the label
	// org.linkedge.owner), so that Sweep finds the ones an earlier run of
	// the same agent left behind. OwnerOf gives the agent's value.
	Owner string
	// Log receives every container start, restart and removal; nil
	// discards them.
	Log *slog.Logger

	sw runtime.Switch
}

var (
	_ runtime.Runtime    = (*Runtime)(nil)
	_ runtime.Supervised = (*candidate)(nil)
)

const (
	// alivePingTimeout caps Alive's /ping when ctx has a later deadline or
	// none: the supervisor polls, and a hung server must not hang it.
	alivePingTimeout = 5 * time.Second
	// stopGrace is how long a restart lets the old process stop on SIGTERM
	// before the engine kills it.
	stopGrace = 5
	// engineTimeout bounds the engine calls made on the way out (removal,
	// log tails), which run without the caller's context.
	engineTimeout = 30 * time.Second
)

type candidate struct {
	spec runtime.Spec
	rt   *Runtime
	// cl stays the same across restarts: the slot and the front ends hold
	// it, so a restarted container serves on the same addr.
	cl   *client.Client
	addr string
	dir  string

	restarting sync.Mutex // one Restart at a time

	mu     sync.Mutex // guards id and closed
	id     string
	closed bool
}

func (c *candidate) Spec() runtime.Spec { return c.spec }
func (c *candidate) Failures() int64    { return c.cl.Failures() }

// containerID is the id of the container that serves c now; a Restart that
// had to recreate the container changes it.
func (c *candidate) containerID() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", fmt.Errorf("docker: candidate %s v%d is closed", c.spec.Model, c.spec.Version)
	}
	return c.id, nil
}

// Check runs the golden samples through the container's HTTP API. Wrong
// answers are the model's (runtime.ErrUnhealthy); no answer at all is the
// container's (ErrContainer).
func (c *candidate) Check(ctx context.Context) error {
	err := inference.CheckBackendGolden(ctx, c.cl)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil: // the caller gave up; no verdict either way
		return fmt.Errorf("golden samples: %w", err)
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Errorf("%w: golden samples: %w", ErrContainer, err)
	default:
		return fmt.Errorf("%w: %w", runtime.ErrUnhealthy, err)
	}
}

// Alive reports whether the container runs and answers /ping, within ctx
// (and at most alivePingTimeout for the ping). Every error wraps
// ErrContainer and says why: removed, exited with its code, OOM-killed,
// paused, not answering, or the engine could not be asked.
func (c *candidate) Alive(ctx context.Context) error {
	id, err := c.containerID()
	if err != nil {
		return err
	}
	info, err := c.rt.Docker.ContainerInspect(ctx, id)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("%w: container %s was removed", ErrContainer, short(id))
		}
		return fmt.Errorf("%w: inspect container %s: %w", ErrContainer, short(id), err)
	}
	if why := notRunning(info.State); why != "" {
		return fmt.Errorf("%w: container %s %s", ErrContainer, short(id), why)
	}
	pctx, cancel := context.WithTimeout(ctx, alivePingTimeout)
	defer cancel()
	if err := c.cl.Ping(pctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("ping container %s: %w", short(id), ctx.Err())
		}
		// %v: our own ping deadline is the container's failure, and must
		// not read as the caller's context ending.
		return fmt.Errorf("%w: container %s is running but not answering /ping: %v", ErrContainer, short(id), err)
	}
	return nil
}

// notRunning says why a container in state st cannot serve, or "" if it
// runs.
func notRunning(st *container.State) string {
	switch {
	case st == nil:
		return "has no state"
	case st.Running && !st.Paused && !st.Restarting:
		return ""
	case st.OOMKilled:
		return fmt.Sprintf("was OOM-killed (exit code %d)", st.ExitCode)
	case st.Paused:
		return "is paused"
	case st.Restarting:
		return fmt.Sprintf("is restarting (last exit code %d)", st.ExitCode)
	case st.Status == container.StateCreated:
		return "was created but never started"
	case st.Error != "":
		return fmt.Sprintf("exited with code %d: %s", st.ExitCode, st.Error)
	default:
		return fmt.Sprintf("exited with code %d", st.ExitCode)
	}
}

// Restart brings the container back to serving c's spec on the same
// loopback address, so the client.Client in the slot keeps working, then
// waits for its /ping (ReadyTimeout) and runs the golden samples.
//
// It restarts the same container when it still exists: that keeps its id,
// name, labels, bind mount and command (with the address), which is all a
// restart needs, and it is what an operator sees in `docker ps`. When the
// container is gone (removed by hand) or the engine cannot restart it (say
// its mount source was deleted), it creates a new one from the same image,
// the same bundle unpacked afresh if needed, and the same address. Errors
// wrap ErrContainer, but for wrong golden answers (runtime.ErrUnhealthy).
func (c *candidate) Restart(ctx context.Context) error {
	c.restarting.Lock()
	defer c.restarting.Unlock()
	id, err := c.containerID()
	if err != nil {
		return err
	}
	r := c.rt
	info, err := r.Docker.ContainerInspect(ctx, id)
	switch {
	case cerrdefs.IsNotFound(err):
		if err := c.recreate(ctx, id, "removed"); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("%w: inspect container %s: %w", ErrContainer, short(id), err)
	default:
		reason := notRunning(info.State)
		if reason == "" {
			reason = "running, restart requested"
		}
		// What it wrote last says why it died; take it before the new run
		// writes more.
		logs := r.logTail(id)
		grace := stopGrace
		if err := r.Docker.ContainerRestart(ctx, id, container.StopOptions{Timeout: &grace}); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("restart container %s: %w", short(id), err)
			}
			r.logger().Warn("cannot restart model container; creating a new one", "container", short(id), "image", c.spec.Image, "reason", reason, "logs", logs, "err", err)
			if err := c.recreate(ctx, id, reason); err != nil {
				return err
			}
		} else {
			r.logger().Info("restarted model container", "container", short(id), "image", c.spec.Image, "model", c.spec.Model, "version", c.spec.Version, "addr", c.addr, "reason", reason, "logs", logs)
		}
	}
	if err := r.waitReady(ctx, c); err != nil {
		return err
	}
	return c.Check(ctx)
}

// recreate replaces container old, gone or beyond restarting, with a new
// one of the same image, bundle and address.
func (c *candidate) recreate(ctx context.Context, old, reason string) error {
	r := c.rt
	if err := r.remove(old, c.spec.Image, "replaced: "+reason); err != nil {
		// It may still hold the address; a new one could not serve there.
		return err
	}
	if _, err := os.Stat(filepath.Join(c.dir, bundle.MetadataFile)); err != nil {
		if err := c.unpack(); err != nil {
			return err
		}
	}
	if err := r.ensureImage(ctx, c.spec.Image); err != nil {
		return err
	}
	id, err := r.start(ctx, c.spec, c.addr, c.dir, "recreated after: "+reason)
	if err != nil {
		return err
	}
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.id = id
	}
	c.mu.Unlock()
	if closed { // Close ran meanwhile and removed the old one only
		r.remove(id, c.spec.Image, "candidate closed during restart")
		return fmt.Errorf("docker: candidate %s v%d closed during restart", c.spec.Model, c.spec.Version)
	}
	return nil
}

func (c *candidate) unpack() error {
	b, err := bundle.Open(c.spec.Bundle)
	if err != nil {
		return err
	}
	if err := runtime.Adopt(b, c.spec); err != nil {
		return err
	}
	os.RemoveAll(c.dir)
	return b.Unpack(c.dir)
}

// Close removes the container and its unpacked bundle.
func (c *candidate) Close() error { return c.close("closed") }

func (c *candidate) close(reason string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	id := c.id
	c.mu.Unlock()
	c.cl.Close()
	err := c.rt.remove(id, c.spec.Image, reason)
	os.RemoveAll(c.dir)
	return err
}

// remove removes container id (gone already is fine) and logs why.
func (r *Runtime) remove(id, image, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), engineTimeout)
	defer cancel()
	err := r.Docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
	switch {
	case cerrdefs.IsNotFound(err):
		r.logger().Info("model container already removed", "container", short(id), "image", image, "reason", reason)
	case err != nil:
		r.logger().Error("cannot remove model container", "container", short(id), "image", image, "reason", reason, "err", err)
		return fmt.Errorf("%w: remove container %s: %w", ErrContainer, short(id), err)
	default:
		r.logger().Info("removed model container", "container", short(id), "image", image, "reason", reason)
	}
	return nil
}

// start creates and starts a container of spec's image serving dir on addr.
func (r *Runtime) start(ctx context.Context, spec runtime.Spec, addr, dir, reason string) (string, error) {
	name := fmt.Sprintf("linkedge-%s-v%d-%d", spec.Model, spec.Version, time.Now().UnixNano()%1e6)
	var labels map[string]string
	if r.Owner != "" {
		labels = map[string]string{OwnerLabel: r.Owner}
	}
	ref := spec.Image
	if local, ok := r.localImage(ctx, ref); ok {
		ref = local // an image pinned by its id is run by its id
	}
	id, err := icontainer.Run(ctx, r.Docker, icontainer.RunOptions{Image: ref, Name: name, HTTP: addr, ModelDir: dir, Labels: labels})
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrContainer, err)
	}
	r.logger().Info("started model container", "container", short(id), "image", spec.Image, "model", spec.Model, "version", spec.Version, "addr", addr, "reason", reason)
	return id, nil
}

func (r *Runtime) logger() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}

// short is the id as `docker ps` shows it.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Stage unpacks the bundle, makes sure the image is there (pulling it by
// digest if not), starts a container on a free loopback port and waits for
// its /ping. A bundle that does not hold spec is bundle.ErrInvalid; a
// container that cannot be started or never answers is ErrContainer.
func (r *Runtime) Stage(ctx context.Context, spec runtime.Spec) (runtime.Candidate, error) {
	if spec.Image == "" {
		return nil, ErrNoImage
	}
	b, err := bundle.Open(spec.Bundle)
	if err != nil {
		return nil, err
	}
	// The container reads the metadata.json Unpack writes, so it reports
	// the release's version too.
	if err := runtime.Adopt(b, spec); err != nil {
		return nil, err
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
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: no free loopback port: %w", ErrContainer, err)
	}
	id, err := r.start(ctx, spec, addr, dir, fmt.Sprintf("stage %s v%d", spec.Model, spec.Version))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &candidate{spec: spec, rt: r, cl: client.New("http://"+addr, b.Meta, spec.SHA256), addr: addr, id: id, dir: dir}
	if err := r.waitReady(ctx, c); err != nil {
		c.close("not ready: " + err.Error())
		return nil, err
	}
	return c, nil
}

// waitReady waits up to ReadyTimeout for c's container to answer /ping.
// Not answering in time, exiting or vanishing meanwhile is ErrContainer:
// the model has not been asked anything yet. The one exception is a
// container that exits because the server checked the model's golden
// samples at load (`linkedge serve` does) and they failed: that is the
// model answering wrongly, runtime.ErrUnhealthy, as Check would say.
func (r *Runtime) waitReady(ctx context.Context, c *candidate) error {
	limit := r.ReadyTimeout
	if limit <= 0 {
		limit = 60 * time.Second
	}
	id, err := c.containerID()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var lastPing, lastEngine error
	for {
		if lastPing = c.cl.Ping(wctx); lastPing == nil {
			return nil
		}
		info, err := r.Docker.ContainerInspect(wctx, id)
		switch {
		case cerrdefs.IsNotFound(err):
			return fmt.Errorf("%w: container %s was removed while starting", ErrContainer, short(id))
		case err != nil:
			lastEngine = err
		default:
			lastEngine = nil
			if why := notRunning(info.State); why != "" && !info.State.Restarting {
				logs := r.logTail(id)
				// The serving image exits with code 1 for every error, so
				// its last words are all that tells a model that fails its
				// own golden samples from an image that cannot start.
				if !info.State.OOMKilled && strings.Contains(logs, inference.ErrGoldenMismatch.Error()) {
					return fmt.Errorf("%w: %w: container %s %s loading the model%s", runtime.ErrUnhealthy, inference.ErrGoldenMismatch, short(id), why, logSuffix(logs))
				}
				return fmt.Errorf("%w: container %s %s while starting%s", ErrContainer, short(id), why, logSuffix(logs))
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("waiting for container %s: %w", short(id), ctx.Err())
			}
			msg := fmt.Sprintf("container %s did not answer /ping within %s (last: %v)", short(id), limit, lastPing)
			if lastEngine != nil {
				msg += fmt.Sprintf("; the engine did not answer either: %v", lastEngine)
			}
			return fmt.Errorf("%w: %s%s", ErrContainer, msg, logSuffix(r.logTail(id)))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logSuffix appends a container's last words to an error message, if it
// said anything.
func logSuffix(logs string) string {
	if logs == "" {
		return ""
	}
	return "; its last output: " + logs
}

// logTail is the last lines the container wrote, for errors and logs; ""
// if there are none or the engine will not say.
func (r *Runtime) logTail(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), engineTimeout)
	defer cancel()
	rc, err := r.Docker.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "5"})
	if err != nil {
		return ""
	}
	defer rc.Close()
	// Without a TTY the engine multiplexes stdout and stderr in frames
	// whose headers are binary; StdCopy takes them apart.
	var out bytes.Buffer
	stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 16<<10))
	tail := strings.TrimSpace(out.String())
	if len(tail) > 4096 {
		tail = "…" + tail[len(tail)-4096:]
	}
	return tail
}

// ensureImage makes sure ref is on the engine, pulling it if not. Every
// failure is ErrContainer: an unreachable engine or registry, or an image
// the registry does not have (yet), is no verdict on the model.
func (r *Runtime) ensureImage(ctx context.Context, ref string) error {
	if _, ok := r.localImage(ctx, ref); ok {
		return nil
	}
	rc, err := r.Docker.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("%w: pull %s: %w", ErrContainer, ref, err)
	}
	defer rc.Close()
	if err := pullError(rc); err != nil {
		return fmt.Errorf("%w: pull %s: %w", ErrContainer, ref, err)
	}
	if _, err := r.Docker.ImageInspect(ctx, ref); err != nil {
		return fmt.Errorf("%w: pull %s: image still missing: %w", ErrContainer, ref, err)
	}
	r.logger().Info("pulled model image", "image", ref)
	return nil
}

// pullError reads a pull's progress stream to its end and returns the
// failure it reports, if any: the engine answers a failed pull (unknown
// manifest, registry down) with 200 and says so only in the stream.
func pullError(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading the engine's answer: %w", err)
		}
		if m.Error != "" {
			return errors.New(strings.TrimSpace(m.Error))
		}
	}
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
			r.Log.Info("removed a container left by an earlier run", "container", short(c.ID), "image", c.Image, "state", c.State, "reason", "sweep")
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
	from := "nothing"
	if prev != nil {
		from = fmt.Sprintf("%s v%d (%s)", prev.Spec().Model, prev.Spec().Version, prev.Spec().Kind)
	}
	r.logger().Info("switched serving to a container", "container", short(cc.id), "image", cc.spec.Image,
		"model", cc.spec.Model, "version", cc.spec.Version, "from", from)
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
