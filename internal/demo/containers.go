package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/edgeclient/runtime/docker"
	icontainer "github.com/linkedge/linkedge/inference/container"
	"github.com/linkedge/linkedge/internal/fleetsim"
)

// ErrNoEngine: --containers was asked for and no Docker Engine answers.
var ErrNoEngine = errors.New("demo: --containers needs a Docker Engine")

// containers is the demo's container side: the serving image, pinned as
// `linkedge toolkit image` pins it, and which agent owns which container.
type containers struct {
	cli *client.Client
	tag string
	// Ref is the image pinned by its id: the trucks' engine is this one,
	// so no registry is needed.
	Ref string

	mu     sync.Mutex
	owners map[string]string // truck → docker.OwnerOf label value
}

// startContainers builds the serving image from the linkedge binary on
// the local Docker Engine and restarts every truck with the container
// runtime enabled.
func startContainers(ctx context.Context, cfg Config, f *fleetsim.Fleet, st *story) (*containers, error) {
	cli, err := icontainer.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w; run the demo without --containers, or start one (deployments/scripts/setup.sh installs it)", ErrNoEngine, err)
	}
	c := &containers{cli: cli, tag: fmt.Sprintf("linkedge-demo-serve:%d", os.Getpid()), owners: map[string]string{}}
	st.say("containers: building the serving image %s from %s (linkedge toolkit image)", c.tag, binaryName(cfg.Binary))
	if _, err := icontainer.BuildImage(ctx, cli, icontainer.ImageOptions{Tag: c.tag, Binary: cfg.Binary}); err != nil {
		c.close()
		return nil, err
	}
	if c.Ref, _, err = icontainer.Pin(ctx, cli, c.tag); err != nil {
		c.close()
		return nil, err
	}
	st.say("containers: image pinned as %s", c.Ref)
	for _, t := range f.Trucks {
		err := t.RestartWith(ctx, func(ec *edgeclient.Config) {
			ec.Containers.Enabled = true
			c.mu.Lock()
			c.owners[t.ID] = docker.OwnerOf(t.ID, ec.DataDir)
			c.mu.Unlock()
		})
		if err != nil {
			c.close()
			return nil, fmt.Errorf("restart %s with containers enabled: %w", t.ID, err)
		}
	}
	st.say("containers: every truck's agent runs with containers.enabled")
	return c, nil
}

func binaryName(b string) string {
	if b == "" {
		return "this binary"
	}
	return b
}

// serving returns the id of the container truck serves from, "" if none.
func (c *containers) serving(ctx context.Context, truck string) (string, error) {
	c.mu.Lock()
	owner := c.owners[truck]
	c.mu.Unlock()
	list, err := c.cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", docker.OwnerLabel+"="+owner))})
	if err != nil || len(list) == 0 {
		return "", err
	}
	return list[0].ID, nil
}

// close removes the image (the agents remove their containers as they
// stop) and closes the client.
func (c *containers) close() {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = c.cli.ImageRemove(ctx, c.tag, image.RemoveOptions{Force: true, PruneChildren: true})
	c.cli.Close()
}
