package localreg

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/atomicfile"
	"github.com/linkedge/linkedge/internal/topics"
)

// now is the clock, replaceable by tests.
var now = time.Now

// Add copies the model bundle at bundlePath (a model.tar.gz) into the
// registry as a pending version. The model name comes from the bundle's
// metadata.json, and so does the version if it gives one; a bundle without
// a version gets the model's next one (its newest of any status plus one),
// as SageMaker numbers a registration. It refuses a version that exists ([ErrExists]) or
// is not above the model's newest version of any status ([ErrNotNewer]):
// versions only move forward, as they do in SageMaker, so a version number
// always means the same bytes.
//
// The copy is validated and hashed, not the original, so what is recorded
// is exactly what will be served even if the original changes meanwhile.
func (r *Registry) Add(ctx context.Context, bundlePath string) (Entry, error) {
	st, err := os.Stat(bundlePath)
	if err != nil {
		return Entry{}, fmt.Errorf("localreg: add: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Entry{}, fmt.Errorf("%w: %s is not a regular file; pass a model.tar.gz", ErrInvalidBundle, bundlePath)
	}
	staging, err := os.MkdirTemp(r.modelsDir(), ".add-*")
	if err != nil {
		return Entry{}, fmt.Errorf("localreg: add: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = os.RemoveAll(staging)
		}
	}()
	staged := filepath.Join(staging, ArtifactFile)
	sum, size, err := copyFile(ctx, staged, bundlePath)
	if err != nil {
		return Entry{}, err
	}
	b, err := bundle.Open(staged)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %s: %w", ErrInvalidBundle, bundlePath, err)
	}
	model, version := b.Meta.Name, b.Meta.Version
	if version == 0 && topics.ValidID(model) == nil {
		vs, err := r.versions(model)
		if err != nil {
			return Entry{}, err
		}
		version = 1
		if len(vs) > 0 {
			version = vs[len(vs)-1] + 1
		}
	}
	if err := checkID(model, version); err != nil {
		return Entry{}, fmt.Errorf("%w: %s: %w", ErrInvalidBundle, bundlePath, err)
	}
	if err := r.checkNewer(model, version); err != nil {
		return Entry{}, err
	}
	rec := Record{
		Schema: RecordSchema, Status: StatusPending, CreatedAt: now().UTC(),
		SHA256: sum, Size: size, Description: b.Meta.Description,
	}
	if err := rec.validate(); err != nil {
		return Entry{}, fmt.Errorf("%w: %s: %w", ErrInvalidBundle, bundlePath, err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(staging, RecordFile), &rec, 0o644); err != nil {
		return Entry{}, fmt.Errorf("localreg: add: %w", err)
	}
	if err := os.Chmod(staging, 0o755); err != nil { // MkdirTemp makes it 0700
		return Entry{}, fmt.Errorf("localreg: add: %w", err)
	}
	parent := filepath.Join(r.modelsDir(), model)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return Entry{}, fmt.Errorf("localreg: add: %w", err)
	}
	final := r.versionDir(model, version)
	// Rename refuses to replace a non-empty folder, which closes the race
	// with a version that appeared since checkNewer.
	if err := os.Rename(staging, final); err != nil {
		if _, serr := os.Stat(final); serr == nil {
			return Entry{}, fmt.Errorf("%w: %s version %d", ErrExists, model, version)
		}
		return Entry{}, fmt.Errorf("localreg: add: %w", err)
	}
	done = true
	if err := atomicfile.SyncDir(parent); err != nil {
		return Entry{}, fmt.Errorf("localreg: add: %s version %d is in place but may not survive a crash: %w", model, version, err)
	}
	return Entry{Model: model, Version: version, Record: rec, Path: filepath.Join(final, ArtifactFile)}, nil
}

func (r *Registry) checkNewer(model string, version int64) error {
	vs, err := r.versions(model)
	if err != nil {
		return err
	}
	if len(vs) == 0 {
		return nil
	}
	newest := vs[len(vs)-1]
	switch {
	case slices.Contains(vs, version):
		return fmt.Errorf("%w: %s version %d; versions are immutable, so raise the version in metadata.json and package the model again", ErrExists, model, version)
	case version < newest:
		return fmt.Errorf("%w: %s version %d, newest is %d; raise the version in metadata.json above %d", ErrNotNewer, model, version, newest, newest)
	}
	return nil
}

// Approve marks a version approved by by, so the publisher announces it if
// it is the model's highest approved version. It first re-hashes the
// artifact ([ErrModified] if it changed since Add). Approving an approved
// version changes nothing; a rejected version may be approved again.
func (r *Registry) Approve(model string, version int64, by string) (Entry, error) {
	return r.decide(model, version, by, StatusApproved)
}

// Reject marks a version rejected by by. If it was the announced version,
// the publisher withdraws it by announcing the highest remaining approved
// version. Rejecting a rejected version changes nothing.
func (r *Registry) Reject(model string, version int64, by string) (Entry, error) {
	return r.decide(model, version, by, StatusRejected)
}

func (r *Registry) decide(model string, version int64, by string, to Status) (Entry, error) {
	if err := checkName(by); err != nil {
		return Entry{}, err
	}
	e, err := r.Get(model, version)
	if err != nil || e.Status == to {
		return e, err
	}
	t := now().UTC()
	switch to {
	case StatusApproved:
		sum, size, err := hashFile(e.Path)
		if err != nil {
			return Entry{}, err
		}
		if sum != e.SHA256 || size != e.Size {
			return Entry{}, fmt.Errorf("%w: %s is now %d bytes with sha256 %s, but was added as %d bytes with sha256 %s; add the bundle again as a new version",
				ErrModified, e.Path, size, sum, e.Size, e.SHA256)
		}
		e.ApprovedAt, e.ApprovedBy = t, by
	case StatusRejected:
		e.RejectedAt, e.RejectedBy = t, by
	}
	e.Status = to
	if err := e.Record.validate(); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	path := filepath.Join(filepath.Dir(e.Path), RecordFile)
	if err := atomicfile.WriteJSON(path, &e.Record, 0o644); err != nil {
		return Entry{}, fmt.Errorf("localreg: %w", err)
	}
	return e, nil
}

// copyFile copies src to a new file dst, fsyncs it and returns the sha256
// and size of what it wrote. It stops when ctx is cancelled.
func copyFile(ctx context.Context, dst, src string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, fmt.Errorf("localreg: add: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", 0, fmt.Errorf("localreg: add: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), ctxReader{ctx, in})
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("localreg: add: copy %s: %w", src, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("localreg: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("localreg: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ctxReader makes a long copy stop when its context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
