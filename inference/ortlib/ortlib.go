// Package ortlib finds the ONNX Runtime shared library, and fetches it when
// it is missing.
//
// The library comes from the npm package onnxruntime-node, which ships a
// prebuilt libonnxruntime.so.1 for Linux. npm's registry is reachable from
// places where GitHub release downloads are not, so the fetch runs
// `npm pack` and takes the one file it needs out of the tarball. The result
// is cached per version, so it happens once per machine.
package ortlib

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Version is the ONNX Runtime release that github.com/yalue/onnxruntime_go
// v1.27.0 is built and tested against here.
const Version = "1.30.0"

// EnvVar names the environment variable that points at the library directly.
const EnvVar = "ONNXRUNTIME_LIB"

// CacheEnvVar overrides the cache folder (default: the user cache dir).
const CacheEnvVar = "LINKEDGE_CACHE"

const npmPackage = "onnxruntime-node"

// ErrNotFound means no library was found and none was fetched.
var ErrNotFound = errors.New("onnx runtime library not found")

// libName is the file name inside the npm package and in the cache.
const libName = "libonnxruntime.so.1"

// CachePath is where a fetched library lives for this OS/arch and Version.
func CachePath() (string, error) {
	dir := os.Getenv(CacheEnvVar)
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("find cache dir: %w (set %s)", err, CacheEnvVar)
		}
		dir = filepath.Join(base, "linkedge")
	}
	return filepath.Join(dir, "onnxruntime-"+Version+"-"+runtime.GOOS+"-"+runtime.GOARCH, libName), nil
}

// Find returns the library path from $ONNXRUNTIME_LIB or the cache, without
// fetching anything.
func Find() (string, error) {
	if p := os.Getenv(EnvVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %w", ErrNotFound, EnvVar, p, err)
		}
		return p, nil
	}
	p, err := CachePath()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: not at %s; run `linkedge setup` or set %s", ErrNotFound, p, EnvVar)
	}
	return p, nil
}

// Ensure returns the library path, fetching the library with npm when it is
// neither named by $ONNXRUNTIME_LIB nor cached.
func Ensure(ctx context.Context, log *slog.Logger) (string, error) {
	if p, err := Find(); err == nil {
		return p, nil
	} else if os.Getenv(EnvVar) != "" {
		return "", err
	}
	if log == nil {
		log = slog.Default()
	}
	dst, err := CachePath()
	if err != nil {
		return "", err
	}
	log.Info("fetching ONNX Runtime with npm (once per machine, about 110 MB)", "package", npmPackage+"@"+Version, "dest", dst)
	if err := Fetch(ctx, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// memberPath is the library's path inside the npm tarball.
func memberPath() (string, error) {
	if runtime.GOOS != "linux" {
		return "", fmt.Errorf("%w: fetching is supported on linux only; set %s", ErrNotFound, EnvVar)
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		return "", fmt.Errorf("%w: no prebuilt library for %s; set %s", ErrNotFound, runtime.GOARCH, EnvVar)
	}
	return "package/bin/napi-v6/linux/" + arch + "/" + libName, nil
}

// Fetch runs `npm pack` for onnxruntime-node@Version in a temporary folder
// and writes the library to dst (atomically, via a temp file and rename).
func Fetch(ctx context.Context, dst string) error {
	member, err := memberPath()
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("npm"); err != nil {
		if err := installNPM(ctx); err != nil {
			return fmt.Errorf("%w: npm is needed to fetch it (%w); install npm, or set %s", ErrNotFound, err, EnvVar)
		}
	}
	tmp, err := os.MkdirTemp("", "linkedge-ort-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "npm", "pack", "--silent", npmPackage+"@"+Version)
	cmd.Dir = tmp
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm pack %s@%s: %w: %s", npmPackage, Version, err, strings.TrimSpace(string(out)))
	}
	tgz := filepath.Join(tmp, npmPackage+"-"+Version+".tgz")
	return extract(tgz, member, dst)
}

func extract(tgz, member, dst string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", tgz, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fmt.Errorf("%w: %s has no %s", ErrNotFound, filepath.Base(tgz), member)
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", tgz, err)
		}
		if h.Name != member {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		out, err := os.CreateTemp(filepath.Dir(dst), ".ort-*")
		if err != nil {
			return err
		}
		defer os.Remove(out.Name())
		if _, err := io.Copy(out, tr); err != nil {
			out.Close()
			return fmt.Errorf("extract %s: %w", member, err)
		}
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		if err := os.Chmod(out.Name(), 0o755); err != nil {
			return err
		}
		return os.Rename(out.Name(), dst)
	}
}

// installNPM installs Debian's npm package when running as root on a
// machine with apt-get, so that `go run . demo` works on a fresh machine
// with nothing but Go. Anywhere else it says what to do instead.
func installNPM(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("npm is not installed and this is not root")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("npm is not installed and there is no apt-get")
	}
	slog.Info("installing npm with apt-get, to fetch the ONNX Runtime library (once per machine)")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "--no-install-recommends", "npm"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, lastLines(out, 5))
		}
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
