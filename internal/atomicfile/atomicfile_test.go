package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")

	if err := WriteFile(path, []byte("one"), 0o644); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if err := WriteFile(path, []byte("two"), 0o600); err != nil {
		t.Fatalf("second write: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "two" {
		t.Fatalf("content = %q, want %q", got, "two")
	}
	assertMode(t, path, 0o600)
	assertNoTemps(t, dir)
}

func TestWriteFileModeIgnoresUmask(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix permissions")
	}
	dir := t.TempDir()
	for _, perm := range []os.FileMode{0o600, 0o644, 0o640, 0o666} {
		path := filepath.Join(dir, "f"+perm.String())
		if err := WriteFile(path, nil, perm); err != nil {
			t.Fatalf("write %v: %v", perm, err)
		}
		assertMode(t, path, perm)
	}
}

func TestWriteFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	linkToDir := filepath.Join(dir, "link-to-dir")
	linkToFile := filepath.Join(dir, "link-to-file")
	if err := os.Symlink(sub, linkToDir); err != nil {
		t.Skipf("symlinks unsupported: %v", err)
	}
	if err := os.Symlink(regular, linkToFile); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path, wantMsg string
	}{
		{"directory", sub, "is a directory"},
		{"symlink to directory", linkToDir, "symlink to a directory"},
		{"symlink to file", linkToFile, "is a symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := WriteFile(tt.path, []byte("x"), 0o644)
			if !errors.Is(err, ErrNotRegular) {
				t.Fatalf("err = %v, want ErrNotRegular", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
	// Nothing was touched: the link still points at the untouched file.
	if got, _ := os.ReadFile(linkToFile); string(got) != "keep" {
		t.Errorf("link target content = %q, want keep", got)
	}
	if fi, err := os.Lstat(linkToFile); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("symlink was replaced: %v %v", fi, err)
	}
	assertNoTemps(t, dir)
	assertNoTemps(t, sub)
}

func TestWriteFileMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	if err := WriteFile(path, []byte("x"), 0o644); err == nil {
		t.Fatal("want error for missing directory")
	}
}

func TestWriteFileRemovesTempOnRenameError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	orig := rename
	rename = func(string, string) error { return boom }
	t.Cleanup(func() { rename = orig })

	if err := WriteFile(path, []byte("new"), 0o644); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("target changed to %q", got)
	}
	assertNoTemps(t, dir)
}

func TestWriteFileReadOnlyDir(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("needs unix permissions enforced (not root)")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
	if err := WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err == nil {
		t.Fatal("want error in read-only directory")
	}
	assertNoTemps(t, dir)
}

func TestWriteFileRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := WriteFile("rel.txt", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "rel.txt")); err != nil || string(got) != "x" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestWriteJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.json")
	v := map[string]any{"b": 1, "a": "<&>"}
	if err := WriteJSON(path, v, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"a\": \"<&>\",\n  \"b\": 1\n}\n"
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestWriteJSONUnencodable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "v.json")
	if err := WriteJSON(path, map[string]any{"f": func() {}}, 0o644); err == nil {
		t.Fatal("want encode error")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("file should not exist: %v", err)
	}
	assertNoTemps(t, dir)
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %v, want %v", path, got, want)
	}
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}
