package container

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// ErrPush wraps a failed image push.
var ErrPush = errors.New("image push failed")

// Pin returns a reference to the image tagged tag that is pinned by
// digest, as a container release must name its image. After a push (or a
// pull) that is the registry's digest, repo@sha256:<manifest digest>, which
// any engine can pull. An image that never went through a registry has
// none; its reference is then name@<image id>, which only an engine that
// holds the image (built there, or loaded with docker load) can run: the
// truck agent looks an image up by its id when no registry digest matches
// (edgeclient/runtime/docker). fromRegistry says which of the two it is.
func Pin(ctx context.Context, cli client.APIClient, tag string) (ref string, fromRegistry bool, err error) {
	info, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		return "", false, fmt.Errorf("inspect image %s: %w", tag, err)
	}
	name := repoName(tag)
	for _, d := range info.RepoDigests {
		if repoName(d) == name {
			return d, true, nil
		}
	}
	if !strings.HasPrefix(info.ID, "sha256:") {
		return "", false, fmt.Errorf("image %s has id %q, not a sha256 digest", tag, info.ID)
	}
	return name + "@" + info.ID, false, nil
}

// repoName strips the tag or digest from an image reference: the name
// part, registry host and port included.
func repoName(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	// A colon after the last slash starts the tag; one before it is a
	// registry port.
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// Push pushes the image tagged tag to the registry its name says and
// returns its reference pinned by the registry's digest. It sends no
// credentials: for a registry that needs a login, push with `docker push`
// and take the digest with Pin.
func Push(ctx context.Context, cli client.APIClient, tag string, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	rc, err := cli.ImagePush(ctx, tag, image.PushOptions{RegistryAuth: base64.URLEncoding.EncodeToString([]byte("{}"))})
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrPush, tag, err)
	}
	defer rc.Close()
	if err := followPush(rc, progress); err != nil {
		return "", fmt.Errorf("%w: %s: %w (a tag without a registry host pushes to Docker Hub; name it HOST:PORT/NAME:TAG)", ErrPush, tag, err)
	}
	ref, fromRegistry, err := Pin(ctx, cli, tag)
	if err != nil {
		return "", err
	}
	if !fromRegistry {
		return "", fmt.Errorf("%w: %s: the engine reports no registry digest after the push", ErrPush, tag)
	}
	return ref, nil
}

// followPush relays the engine's push progress (one status line per
// step, progress bars left out) and surfaces its error.
func followPush(r io.Reader, out io.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Status string `json:"status"`
			ID     string `json:"id"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading the engine's answer: %w", err)
		}
		if m.Error != "" {
			return errors.New(strings.TrimSpace(m.Error))
		}
		if m.Status != "" && m.Status != "Pushing" {
			fmt.Fprintln(out, strings.TrimSpace(m.ID+" "+m.Status))
		}
	}
}
