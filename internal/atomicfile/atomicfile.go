// Package atomicfile replaces files so that a reader, or a process that
// starts after a crash or power loss, sees either the old content or the new
// content, never a torn mix.
//
// Trucks lose power without warning; a half-written model pointer, state
// file or private key would strand them. The recipe is the classic one:
// write a temporary file in the same directory (so the rename cannot cross
// a filesystem), fsync it, rename it over the target, then fsync the
// directory so the rename itself survives a crash.
package atomicfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// ErrNotRegular is returned when the target exists and is not a regular
// file. Replacing a directory would fail anyway, and replacing a symlink
// would silently turn it into a plain file, cutting whatever the link was
// there for; either way the caller's path is almost certainly wrong.
var ErrNotRegular = errors.New("atomicfile: target exists and is not a regular file")

// WriteFile atomically replaces path with data and sets its mode to perm.
//
// The mode is applied with chmod, so the process umask does not weaken or
// strengthen it: 0o600 really is 0o600. The temporary file is created with
// mode 0o600 and only loosened after the data is on disk, so a secret is
// never readable by others, not even for a moment.
//
// WriteFile refuses (with [ErrNotRegular]) to replace anything that is not a
// regular file, symlinks included: pass the resolved path if you mean the
// link's target. On any error before the rename the temporary file is
// removed and path is untouched. If the rename succeeded but the directory
// fsync failed, the new content is in place but may not survive a crash; the
// error says so.
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	if err := checkReplaceable(path); err != nil {
		return err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomicfile: create temporary file next to %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // may already be closed; the error is irrelevant then
			_ = os.Remove(tmp)
		}
	}()

	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	// Re-check just before the rename: a directory that appeared in the
	// meantime would make rename fail on most systems anyway, but a symlink
	// would be replaced silently.
	if err := checkReplaceable(path); err != nil {
		return err
	}
	if err := rename(tmp, path); err != nil {
		return fmt.Errorf("atomicfile: rename %s to %s: %w", tmp, path, err)
	}
	if err := SyncDir(dir); err != nil {
		// The file is in place; only its durability is in doubt. Do not
		// remove anything: tmp no longer exists under that name.
		return fmt.Errorf("atomicfile: %s was replaced but fsync of directory %s failed, so the change may not survive a crash: %w", path, dir, err)
	}
	return nil
}

// WriteJSON atomically writes v as indented JSON (two spaces) followed by a
// newline, the form people expect to read and diff. HTML characters such as
// < and & are written as-is rather than escaped, because these files are
// never embedded in HTML.
func WriteJSON(path string, v any, perm os.FileMode) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil { // Encode appends the newline
		return fmt.Errorf("atomicfile: encode JSON for %s: %w", path, err)
	}
	return WriteFile(path, buf.Bytes(), perm)
}

// rename is os.Rename, replaceable by tests to exercise the cleanup path.
var rename = os.Rename

// checkReplaceable returns nil when path does not exist or is a regular
// file, and an ErrNotRegular-wrapped error otherwise.
func checkReplaceable(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("atomicfile: inspect %s: %w", path, err)
	case fi.Mode().IsRegular():
		return nil
	}
	what := "a " + fi.Mode().Type().String() + " file"
	switch {
	case fi.IsDir():
		what = "a directory"
	case fi.Mode()&fs.ModeSymlink != 0:
		what = "a symlink"
		if target, err := os.Stat(path); err == nil && target.IsDir() {
			what = "a symlink to a directory"
		}
	}
	return fmt.Errorf("%w: %s is %s; pass the path of a regular file (resolve symlinks first)", ErrNotRegular, path, what)
}

// SyncDir makes a rename in dir durable. Windows cannot fsync a directory
// and its renames are journaled by NTFS, so it is skipped there.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	return errors.Join(serr, cerr)
}
