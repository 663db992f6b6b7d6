package container

import (
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
)

// Connect returns a client for the local Docker Engine (DOCKER_HOST and the
// other standard variables apply), with the API version negotiated, and
// checks that the engine answers.
func Connect(ctx context.Context) (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker engine not reachable: %w (start dockerd, or set DOCKER_HOST)", err)
	}
	return cli, nil
}

// RunOptions start a serving container.
type RunOptions struct {
	Image string
	Name  string
	// HTTP is the address the server listens on; containers share the
	// host's network (no bridge is assumed), so pick a free port.
	HTTP string
	// ModelDir, if set, is mounted read-only at /opt/ml/model.
	ModelDir string
	// Labels are added to the container's, next to
	// org.linkedge.component=serve; the truck agent marks its containers
	// with them so that a restart can find the ones it left behind.
	Labels map[string]string
}

// Run creates and starts a container serving as the SageMaker contract
// describes (`serve`), and returns its id.
func Run(ctx context.Context, cli client.APIClient, o RunOptions) (string, error) {
	labels := map[string]string{"org.linkedge.component": "serve"}
	for k, v := range o.Labels {
		labels[k] = v
	}
	cfg := &container.Config{Image: o.Image, Cmd: []string{"serve", "--http", o.HTTP}, Labels: labels}
	host := &container.HostConfig{NetworkMode: "host"}
	if o.ModelDir != "" {
		host.Binds = []string{o.ModelDir + ":" + modelDir + ":ro"}
	}
	c, err := cli.ContainerCreate(ctx, cfg, host, nil, nil, o.Name)
	if err != nil {
		return "", fmt.Errorf("create container from %s: %w", o.Image, err)
	}
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		cli.ContainerRemove(context.WithoutCancel(ctx), c.ID, container.RemoveOptions{Force: true})
		return "", fmt.Errorf("start container: %w", err)
	}
	return c.ID, nil
}
