package localreg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/linkedge/linkedge/inference/bundle"
)

// writeBundle writes a small valid model.tar.gz for model and version into
// dir and returns its path and bytes. The ONNX bytes are not a real model:
// the registry only copies and hashes them.
func writeBundle(t *testing.T, dir, model string, version int64) (string, []byte) {
	t.Helper()
	meta := &bundle.Metadata{
		Schema: bundle.Schema, Name: model, Version: version, Description: "test model",
		Input: "features", Output: "probability", Features: []string{"aa_000", "ab_000"},
		Labels: [2]string{"neg", "pos"}, Threshold: 0.5,
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, meta, []byte("onnx-"+model+"-"+string(rune('0'+version)))); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, model+"-v"+string(rune('0'+version))+".tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, buf.Bytes()
}

func openReg(t *testing.T) *Registry {
	t.Helper()
	r, err := Open(filepath.Join(t.TempDir(), "registry"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLifecycle(t *testing.T) {
	r := openReg(t)
	src := t.TempDir()
	p, data := writeBundle(t, src, "aps-failure", 1)

	e, err := r.Add(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if e.Model != "aps-failure" || e.Version != 1 || e.Status != StatusPending ||
		e.SHA256 != hex.EncodeToString(sum[:]) || e.Size != int64(len(data)) || e.Description != "test model" {
		t.Fatalf("Add returned %+v", e)
	}
	if got, err := os.ReadFile(e.Path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("artifact copy differs from the original (err %v)", err)
	}
	if want := filepath.Join(r.Dir(), "models", "aps-failure", "1", ArtifactFile); e.Path != want {
		t.Errorf("Path = %s, want %s", e.Path, want)
	}

	e, err = r.Approve("aps-failure", 1, "alice")
	if err != nil || e.Status != StatusApproved || e.ApprovedBy != "alice" || e.ApprovedAt.IsZero() {
		t.Fatalf("Approve = %+v, %v", e, err)
	}
	approvedAt := e.ApprovedAt
	if e, err = r.Approve("aps-failure", 1, "bob"); err != nil || e.ApprovedBy != "alice" || !e.ApprovedAt.Equal(approvedAt) {
		t.Fatalf("approving twice must change nothing: %+v, %v", e, err)
	}
	if e, err = r.Reject("aps-failure", 1, "carol"); err != nil || e.Status != StatusRejected || e.RejectedBy != "carol" {
		t.Fatalf("Reject = %+v, %v", e, err)
	}
	if e, err = r.Approve("aps-failure", 1, "dave"); err != nil || e.Status != StatusApproved || e.ApprovedBy != "dave" {
		t.Fatalf("re-approve = %+v, %v", e, err)
	}

	p2, _ := writeBundle(t, src, "aps-failure", 2)
	p3, _ := writeBundle(t, src, "other", 1)
	for _, p := range []string{p2, p3} {
		if _, err := r.Add(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	// A second Registry on the same folder stands for another process.
	r2, err := Open(r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	list, err := r2.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Model+"/"+string(rune('0'+e.Version))+"/"+string(e.Status))
	}
	if want := "aps-failure/1/approved aps-failure/2/pending other/1/pending"; strings.Join(got, " ") != want {
		t.Errorf("List = %v, want %s", got, want)
	}
}

func TestAddRefuses(t *testing.T) {
	src := t.TempDir()
	v2, _ := writeBundle(t, src, "m", 2)
	v1, _ := writeBundle(t, src, "m", 1)
	notGzip := filepath.Join(src, "junk.tar.gz")
	os.WriteFile(notGzip, []byte("not a bundle"), 0o644)
	noMeta := filepath.Join(src, "nometa.tar.gz")
	os.WriteFile(noMeta, tarGz(t, map[string]string{"model.onnx": "x"}), 0o644)
	badMeta := filepath.Join(src, "badmeta.tar.gz")
	os.WriteFile(badMeta, tarGz(t, map[string]string{"model.onnx": "x", "metadata.json": `{"schema":"linkedge.bundle/v1","name":"m","version":-1}`}), 0o644)

	tests := []struct {
		name, path string
		want       error
		msg        string
	}{
		{"duplicate", v2, ErrExists, "version 2"},
		{"older", v1, ErrNotNewer, "newest is 2"},
		{"not gzip", notGzip, ErrInvalidBundle, "gzip"},
		{"no metadata", noMeta, ErrInvalidBundle, "metadata.json"},
		{"invalid metadata", badMeta, ErrInvalidBundle, "version"},
		{"folder", src, ErrInvalidBundle, "not a regular file"},
		{"missing", filepath.Join(src, "nope.tar.gz"), fs.ErrNotExist, "nope.tar.gz"},
	}
	r := openReg(t)
	if _, err := r.Add(context.Background(), v2); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Add(context.Background(), tt.path)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Add error = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
	ents, _ := os.ReadDir(filepath.Join(r.Dir(), "models"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("failed Add left %s behind", e.Name())
		}
	}
	if list, err := r.List(); err != nil || len(list) != 1 {
		t.Errorf("after refusals List = %v, %v; want only version 2", list, err)
	}
}

// A bundle without a version (a pipeline leaves the numbering to the
// registry) gets the model's next version, as SageMaker numbers a
// registration.
func TestAddNumbersABundleWithoutVersion(t *testing.T) {
	r := openReg(t)
	src := t.TempDir()
	for _, want := range []int64{1, 2} {
		p, _ := writeBundle(t, src, "m", 0)
		e, err := r.Add(context.Background(), p)
		if err != nil {
			t.Fatalf("add a bundle without a version: %v", err)
		}
		if e.Version != want {
			t.Fatalf("got version %d, want %d", e.Version, want)
		}
	}
	p, _ := writeBundle(t, src, "m", 5)
	if _, err := r.Add(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	p, _ = writeBundle(t, src, "m", 0)
	if e, err := r.Add(context.Background(), p); err != nil || e.Version != 6 {
		t.Fatalf("after version 5: %+v, %v; want version 6", e, err)
	}
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestDecideErrors(t *testing.T) {
	r := openReg(t)
	p, _ := writeBundle(t, t.TempDir(), "m", 1)
	e, err := r.Add(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Approve("m", 2, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown version: %v, want ErrNotFound", err)
	}
	if _, err := r.Approve("m/../x", 1, "alice"); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("bad model id: %v, want ErrInvalidInput", err)
	}
	if _, err := r.Approve("m", 1, ""); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty approver: %v, want ErrInvalidInput", err)
	}
	if _, err := r.Approve("m", 1, "a\nb"); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("approver with newline: %v, want ErrInvalidInput", err)
	}
	if err := os.WriteFile(e.Path, []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Approve("m", 1, "alice"); !errors.Is(err, ErrModified) {
		t.Errorf("tampered artifact: %v, want ErrModified", err)
	}
	if e, _ := r.Get("m", 1); e.Status != StatusPending {
		t.Errorf("a refused approval changed the status to %s", e.Status)
	}
	rec := filepath.Join(filepath.Dir(e.Path), RecordFile)
	if err := os.WriteFile(rec, []byte(`{"schema":"linkedge.localreg.version/v1","status":"aproved"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.List(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), rec) {
		t.Errorf("corrupt record: List error %v, want ErrCorrupt naming the file", err)
	}
}

// A reader polling while the writer adds and approves versions must never
// see a half-made version or a torn record.
func TestConcurrentReader(t *testing.T) {
	r := openReg(t)
	src := t.TempDir()
	var paths []string
	for v := int64(1); v <= 8; v++ {
		p, _ := writeBundle(t, src, "m", v)
		paths = append(paths, p)
	}
	reader, err := Open(r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			list, err := reader.List()
			if err != nil {
				readErr = err
				return
			}
			for _, e := range list {
				if st, err := os.Stat(e.Path); err != nil || st.Size() != e.Size {
					readErr = errors.New("listed version with missing or short artifact")
					return
				}
			}
		}
	})
	for i, p := range paths {
		if _, err := r.Add(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Approve("m", int64(i+1), "alice"); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
}

func TestAddCancelled(t *testing.T) {
	r := openReg(t)
	p, _ := writeBundle(t, t.TempDir(), "m", 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Add(ctx, p); !errors.Is(err, context.Canceled) {
		t.Fatalf("Add with a cancelled context: %v", err)
	}
	if list, _ := r.List(); len(list) != 0 {
		t.Fatalf("cancelled Add left %v", list)
	}
}
