package localreg

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	imageA = "127.0.0.1:5000/linkedge-serve@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	imageB = "127.0.0.1:5000/linkedge-serve@sha256:" + "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

// Issue 12 #12: a version of the local registry can name the serving image
// it runs in, and keeps it from then on.
func TestSetImage(t *testing.T) {
	r := openReg(t)
	src := t.TempDir()
	add := func(v int64) Entry {
		p, _ := writeBundle(t, src, "aps-failure", v)
		e, err := r.Add(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	add(1)
	e, err := r.SetImage("aps-failure", 1, imageA)
	if err != nil || e.Image != imageA {
		t.Fatalf("SetImage = %+v, %v", e, err)
	}
	if got, _ := r.Get("aps-failure", 1); got.Image != imageA {
		t.Fatalf("image not recorded: %+v", got)
	}
	if _, err := r.Approve("aps-failure", 1, "alice"); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Get("aps-failure", 1); got.Image != imageA || got.Status != StatusApproved {
		t.Fatalf("approval lost the image: %+v", got)
	}
	add(2)
	if _, err := r.Approve("aps-failure", 2, "alice"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		version int64
		image   string
		want    error
		says    string
	}{
		{"same image again", 1, imageA, nil, ""},
		{"another image", 1, imageB, ErrImageFixed, "new version"},
		{"approved in process", 2, imageA, ErrImageFixed, "approved to run in process"},
		{"tag, not digest", 2, "linkedge-serve:2", ErrInvalidInput, "pinned by digest"},
		{"short digest", 2, "linkedge-serve@sha256:abc", ErrInvalidInput, "pinned by digest"},
		{"unknown version", 9, imageA, ErrNotFound, "registry list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.SetImage("aps-failure", tc.version, tc.image)
			if !errors.Is(err, tc.want) || (tc.want != nil && !strings.Contains(err.Error(), tc.says)) {
				t.Fatalf("SetImage = %v, want %v saying %q", err, tc.want, tc.says)
			}
		})
	}
	if got, _ := r.Get("aps-failure", 1); got.Image != imageA {
		t.Fatalf("a refused change altered the record: %+v", got)
	}
}

// A hand-edited record with an image not pinned by digest is refused, not
// announced as it stands.
func TestRecordImageChecked(t *testing.T) {
	r := openReg(t)
	p, _ := writeBundle(t, t.TempDir(), "aps-failure", 1)
	e, err := r.Add(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(filepath.Dir(e.Path), RecordFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), `"sha256"`, `"image": "linkedge-serve:latest", "sha256"`, 1)
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("aps-failure", 1); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "pinned by digest") {
		t.Fatalf("Get = %v, want ErrCorrupt about the image", err)
	}
}
