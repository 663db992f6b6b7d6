package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

func runRoot(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// Issue 12 #12: `registry add` and `registry approve` take the serving
// image a version runs in, pinned by digest, and `registry list` shows it.
func TestRegistryImage(t *testing.T) {
	const image = "127.0.0.1:5000/linkedge-serve@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry")
	v1, v2 := filepath.Join(dir, "v1.tar.gz"), filepath.Join(dir, "v2.tar.gz")
	if err := os.WriteFile(v1, apsmodels.V1(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v2, apsmodels.V2(), 0o644); err != nil {
		t.Fatal(err)
	}

	// A tag is not a pin: refused before anything is added.
	out, err := runRoot(t, "registry", "add", v1, "--image", "linkedge-serve:2", "--registry", reg)
	if err == nil || !strings.Contains(err.Error(), "pinned by digest") {
		t.Fatalf("add with a tag: %v\n%s", err, out)
	}
	if out, err := runRoot(t, "registry", "list", "--registry", reg); err != nil || strings.Contains(out, "aps-failure") {
		t.Fatalf("a refused add left a version: %v\n%s", err, out)
	}

	if out, err := runRoot(t, "registry", "add", v1, "--image", image, "--approve", "--by", "ci", "--registry", reg); err != nil || !strings.Contains(out, "runs in container "+image) {
		t.Fatalf("add --image: %v\n%s", err, out)
	}
	if out, err := runRoot(t, "registry", "add", v2, "--registry", reg); err != nil || !strings.Contains(out, "runs in process") {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if out, err := runRoot(t, "registry", "approve", "--model", "aps-failure", "--version", "2", "--image", image, "--registry", reg); err != nil || !strings.Contains(out, "runs in container") {
		t.Fatalf("approve --image: %v\n%s", err, out)
	}
	r, err := localreg.Open(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{1, 2} {
		if e, err := r.Get("aps-failure", v); err != nil || e.Image != image || e.Status != localreg.StatusApproved {
			t.Fatalf("version %d: %+v, %v", v, e, err)
		}
	}
	out, err = runRoot(t, "registry", "list", "--registry", reg)
	if err != nil || strings.Count(out, image) != 2 || !strings.Contains(out, "IMAGE") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	other := strings.Replace(image, "0123", "4567", 1)
	if _, err := runRoot(t, "registry", "approve", "--model", "aps-failure", "--version", "2", "--image", other, "--registry", reg); !errors.Is(err, localreg.ErrImageFixed) {
		t.Fatalf("approve with another image: %v, want ErrImageFixed", err)
	}
}

// Issue 12 #12: SageMaker-only flags given with the local registry are
// refused, saying what to do, instead of being ignored (--container-runtime
// left every local release in process).
func TestSageMakerFlagsRefusedWithLocalRegistry(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "registry")
	localFile := writeConfig(t, "broker: tcp://127.0.0.1:1883\nkey_file: k\nregistry_dir: "+reg+"\n")
	for _, tc := range []struct {
		publish bool
		args    []string
		says    string
	}{
		{false, []string{"--container-runtime"}, "registry add BUNDLE --image"},
		{true, []string{"--container-runtime", "--version", "1"}, "registry add BUNDLE --image"},
		{false, []string{"--region", "eu-west-1"}, "--registry-kind sagemaker"},
		{true, []string{"--presign-ttl", "2h"}, "--registry-kind sagemaker"},
		{false, []string{"--groups", "aps-failure", "--registry-kind", "local"}, "--registry-kind sagemaker"},
		{false, []string{"--presign-ttl", "1h", "--config", localFile}, "--registry-kind sagemaker"},
	} {
		_, _, _, err := parsePublisherArgs(t, tc.publish, append([]string{"--registry", reg}, tc.args...)...)
		if !errors.Is(err, publisher.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), tc.args[0]) {
			t.Errorf("%v: %v, want ErrInvalidConfig naming %s and saying %q", tc.args, err, tc.args[0], tc.says)
		}
	}
	// The same flags with the SageMaker kind are accepted.
	if _, _, _, err := parsePublisherArgs(t, false, "--registry-kind", "sagemaker", "--container-runtime", "--groups", "aps-failure", "--state", filepath.Join(t.TempDir(), "s.json")); err != nil {
		t.Fatalf("with the SageMaker kind: %v", err)
	}
}
