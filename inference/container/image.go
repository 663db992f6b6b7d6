// Package container packages `linkedge serve` into a SageMaker-compatible
// container image, through the Docker Engine API: the Inference Toolkit's
// "model plus inference API in a container".
//
// The image is built FROM scratch. It holds the linkedge binary, the ONNX
// Runtime library and exactly the shared libraries that `ldd` lists for
// both, copied to the paths the dynamic loader expects, and optionally a
// model bundle unpacked at /opt/ml/model. No base image is pulled, so a
// build needs no registry. The image follows the SageMaker hosting
// contract: `docker run IMAGE serve` serves /opt/ml/model on port 8080,
// answers /ping and /invocations, and stops cleanly on SIGTERM.
package container

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"

	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/ortlib"
)

// ImageOptions describe an image to build.
type ImageOptions struct {
	// Tag names the image, e.g. "aps-failure:2". Required.
	Tag string
	// Binary is the linkedge executable to put in the image; default: the
	// running one.
	Binary string
	// ORTLib is the ONNX Runtime library; default: ortlib.Find.
	ORTLib string
	// Bundle, if set, is unpacked into /opt/ml/model. Without it the image
	// expects the model mounted there, as SageMaker does.
	Bundle string
	// Progress receives the build's output lines; nil discards them.
	Progress io.Writer
}

// Where things go inside the image.
const (
	imageBinary = "/usr/bin/linkedge"
	imageORT    = "/usr/lib/linkedge/libonnxruntime.so.1"
	modelDir    = "/opt/ml/model"
)

// ErrBuild wraps a failed image build.
var ErrBuild = errors.New("image build failed")

// BuildImage builds the image and returns its tag.
func BuildImage(ctx context.Context, cli client.APIClient, opts ImageOptions) (string, error) {
	if opts.Tag == "" {
		return "", errors.New("image tag is required")
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		opts.Binary = exe
	}
	if opts.ORTLib == "" {
		p, err := ortlib.Find()
		if err != nil {
			return "", err
		}
		opts.ORTLib = p
	}
	buildCtx, err := buildContext(ctx, opts)
	if err != nil {
		return "", err
	}
	resp, err := cli.ImageBuild(ctx, bytes.NewReader(buildCtx), build.ImageBuildOptions{
		Tags: []string{opts.Tag}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true,
		Labels: map[string]string{"org.linkedge.component": "serve"},
	})
	if err != nil {
		return "", fmt.Errorf("%w: %w (is the Docker Engine running?)", ErrBuild, err)
	}
	defer resp.Body.Close()
	if err := followBuild(resp.Body, opts.Progress); err != nil {
		return "", err
	}
	return opts.Tag, nil
}

// followBuild relays the engine's JSON message stream and surfaces its error.
func followBuild(r io.Reader, out io.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("%w: reading the engine's answer: %w", ErrBuild, err)
		}
		if m.Error != "" {
			return fmt.Errorf("%w: %s", ErrBuild, strings.TrimSpace(m.Error))
		}
		io.WriteString(out, m.Stream)
	}
}

// buildContext is the tar the engine builds from: a Dockerfile and rootfs/.
func buildContext(ctx context.Context, opts ImageOptions) ([]byte, error) {
	files := map[string]string{ // image path → host path
		imageBinary: opts.Binary,
		imageORT:    opts.ORTLib,
	}
	for _, p := range []string{opts.Binary, opts.ORTLib} {
		libs, err := sharedLibs(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			files[l] = l
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := addFile(tw, "rootfs"+n, files[n]); err != nil {
			return nil, err
		}
	}
	if opts.Bundle != "" {
		b, err := bundle.Open(opts.Bundle)
		if err != nil {
			return nil, err
		}
		if b.Meta == nil {
			return nil, fmt.Errorf("%s has no %s; package a bundle (linkedge toolkit bundle)", opts.Bundle, bundle.MetadataFile)
		}
		meta, err := bundle.EncodeMetadata(b.Meta)
		if err != nil {
			return nil, err
		}
		for name, data := range map[string][]byte{bundle.ModelFile: b.ONNX, bundle.MetadataFile: meta} {
			if err := addBytes(tw, "rootfs"+modelDir+"/"+name, data, 0o644); err != nil {
				return nil, err
			}
		}
	}
	// The runtime needs a writable /tmp; scratch has none.
	tw.WriteHeader(&tar.Header{Name: "rootfs/tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	if err := addBytes(tw, "Dockerfile", []byte(dockerfile), 0o644); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// dockerfile follows the SageMaker contract: ENTRYPOINT in exec form so the
// server gets SIGTERM, "serve" as the default argument, port 8080 on every
// interface, the model in /opt/ml/model.
const dockerfile = `FROM scratch
COPY rootfs/ /
ENV ONNXRUNTIME_LIB=` + imageORT + ` LINKEDGE_HTTP=0.0.0.0:8080 LINKEDGE_CACHE=/tmp HOME=/tmp
EXPOSE 8080
ENTRYPOINT ["` + imageBinary + `"]
CMD ["serve"]
`

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/[^\s]+)\s+\(0x`)

// sharedLibs lists the absolute paths of the libraries ldd says p needs,
// including the dynamic loader.
func sharedLibs(ctx context.Context, p string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", p).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w (a static binary needs no libraries; a dynamic one needs ldd)", p, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := lddLine.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

func addFile(tw *tar.Writer, name, src string) error {
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(real)
	if err != nil {
		return err
	}
	f, err := os.Open(real)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(st.Mode().Perm()), Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

func addBytes(tw *tar.Writer, name string, data []byte, mode int64) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
