package container_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	icontainer "github.com/linkedge/linkedge/inference/container"
	"github.com/linkedge/linkedge/inference/container/containertest"
)

// TestImageServesSageMakerContract builds a FROM-scratch image of
// `linkedge serve` with the APS v1 bundle inside, runs it on the real Docker
// Engine, and talks to it as SageMaker would.
func TestImageServesSageMakerContract(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := containertest.Engine(ctx, t)
	// One tag per test process: two copies of the suite share the engine,
	// and one's clean-up must not remove the other's image.
	tag := fmt.Sprintf("linkedge-test-serve:image-%d", os.Getpid())
	containertest.ServingImage(ctx, t, cli, tag, "../apsmodels/aps-failure-v1.tar.gz")

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	id, err := icontainer.Run(ctx, cli, icontainer.RunOptions{Image: tag, HTTP: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true}) })

	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			logs, _ := cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
			b, _ := io.ReadAll(logs)
			t.Fatalf("container never answered /ping: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	row := strings.TrimSuffix(strings.Repeat("na,", 170), ",")
	resp, err := http.Post("http://"+addr+"/invocations", "text/csv", strings.NewReader(row))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Linkedge-Model-Version") != "1" {
		t.Fatalf("invocations: %d %s", resp.StatusCode, body)
	}

	// SIGTERM (docker stop) ends it cleanly.
	timeout := 20
	if err := cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	info, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.ExitCode != 0 {
		t.Fatalf("container exited %d after SIGTERM, want 0", info.State.ExitCode)
	}
}
