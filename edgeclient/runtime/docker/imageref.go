package docker

import (
	"context"
	"strings"
)

// localImage returns the reference under which the engine holds the image
// ref names, if it does: ref itself once pulled, or else the image id. A
// release pins its image as name@sha256:<digest>; the digest is the
// registry's (the manifest's) for a pushed image, and the image id for one
// that never went through a registry: built on this engine or loaded with
// `docker load` (what `linkedge toolkit image` prints without --push). The
// engine resolves only the first kind by name, so the second is looked up
// by its id, which pins the content as strictly: the engine computes it
// from the image's configuration, which names every layer by its digest.
func (r *Runtime) localImage(ctx context.Context, ref string) (string, bool) {
	if _, err := r.Docker.ImageInspect(ctx, ref); err == nil {
		return ref, true
	}
	i := strings.LastIndex(ref, "@sha256:")
	if i < 0 {
		return "", false
	}
	id := ref[i+1:]
	info, err := r.Docker.ImageInspect(ctx, id)
	if err != nil || info.ID != id {
		return "", false // not an id (a prefix matches too), or not here
	}
	return id, true
}
