package s3dist

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/linkedge/linkedge/inference/bundle"
)

// API is the part of the S3 client the [Reader] uses (*s3.Client has it).
type API interface {
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// Head is what HeadObject tells about an object without reading it.
type Head struct {
	// ETag as S3 sends it, quotes included. It changes whenever the bytes
	// do, which makes it the cache key for the expensive [Reader.Inspect].
	ETag string
	// VersionID is set in versioned buckets.
	VersionID string
	Size      int64
}

// Artifact is an object read in full: what trucks will check.
type Artifact struct {
	Head
	// SHA256 is the lowercase hex digest of the object's bytes.
	SHA256 string
	// Meta is the bundle's metadata.json.
	Meta *bundle.Metadata
}

// Reader reads model bundles from S3.
type Reader struct {
	Client API
	// Limits bound the bundle's parts; zero takes bundle's defaults.
	Limits bundle.Limits
}

// Head asks S3 for the object's ETag, version and size.
func (r *Reader) Head(ctx context.Context, loc Location) (Head, error) {
	in := &s3.HeadObjectInput{Bucket: &loc.Bucket, Key: &loc.Key}
	if loc.VersionID != "" {
		in.VersionId = &loc.VersionID
	}
	out, err := r.Client.HeadObject(ctx, in)
	if err != nil {
		return Head{}, fmt.Errorf("head %s: %w", loc, classify(err))
	}
	return Head{ETag: aws.ToString(out.ETag), VersionID: aws.ToString(out.VersionId), Size: aws.ToInt64(out.ContentLength)}, nil
}

// Inspect reads the object once, streaming: it hashes every byte as it
// passes, and parses the same stream as a bundle (bundle.Read), so nothing
// is stored and the digest is that of the exact bytes that were validated.
// If etag is not empty and the object's ETag differs, it fails with
// [ErrChanged]: the caller's cache would otherwise file the digest under
// the wrong key.
func (r *Reader) Inspect(ctx context.Context, loc Location, etag string) (Artifact, error) {
	in := &s3.GetObjectInput{Bucket: &loc.Bucket, Key: &loc.Key}
	if loc.VersionID != "" {
		in.VersionId = &loc.VersionID
	}
	if etag != "" {
		in.IfMatch = &etag
	}
	out, err := r.Client.GetObject(ctx, in)
	if err != nil {
		return Artifact{}, fmt.Errorf("get %s: %w", loc, classify(err))
	}
	defer out.Body.Close()
	a := Artifact{Head: Head{ETag: aws.ToString(out.ETag), VersionID: aws.ToString(out.VersionId)}}
	if etag != "" && a.ETag != "" && a.ETag != etag {
		return Artifact{}, fmt.Errorf("get %s: %w: etag %s, expected %s", loc, ErrChanged, a.ETag, etag)
	}
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(out.Body, h)}
	b, err := bundle.Read(cr, r.Limits)
	if err != nil {
		if ctx.Err() != nil || cr.readErr != nil {
			// The stream broke, not the bundle: a transient failure.
			return Artifact{}, fmt.Errorf("read %s: %w", loc, firstErr(ctx.Err(), cr.readErr, err))
		}
		return Artifact{}, fmt.Errorf("%s: %w: %w", loc, ErrInvalidBundle, err)
	}
	// bundle.Read stops at the end of the tar stream; the digest must cover
	// the whole file (gzip trailer and any padding) that trucks download.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return Artifact{}, fmt.Errorf("read %s: %w", loc, err)
	}
	if want := aws.ToInt64(out.ContentLength); want > 0 && cr.n != want {
		return Artifact{}, fmt.Errorf("read %s: got %d bytes, content-length %d: %w", loc, cr.n, want, io.ErrUnexpectedEOF)
	}
	if b.Meta == nil {
		return Artifact{}, fmt.Errorf("%s: %w: no metadata.json", loc, ErrInvalidBundle)
	}
	a.Size, a.SHA256, a.Meta = cr.n, hex.EncodeToString(h.Sum(nil)), b.Meta
	return a, nil
}

// CheckModel returns an [ErrInvalidBundle] error unless the bundle's
// metadata names model: a model name must always mean the same model (its
// features, its topics), or trucks would run one model under another's
// name. The version is not checked: the registry assigns it, often after
// the bundle was built, and the signed release binds the registry's number
// to the artifact's sha256 (see [Artifact.OtherVersion]).
func (a Artifact) CheckModel(model string) error {
	switch {
	case a.Meta == nil:
		return fmt.Errorf("%w: no metadata", ErrInvalidBundle)
	case a.Meta.Name != model:
		return fmt.Errorf("%w: its metadata.json names model %s, but the registry holds it as %s; package it again with \"name\": %q",
			ErrInvalidBundle, a.Meta.Name, model, model)
	}
	return nil
}

// OtherVersion returns the version the bundle's metadata.json gives when
// it gives one and it is not version, the registry's: a pipeline that
// predicted its version and lost a race with another registration. The
// registry's number wins; the caller says so in its log.
func (a Artifact) OtherVersion(version int64) (int64, bool) {
	if a.Meta == nil || a.Meta.Version == 0 || a.Meta.Version == version {
		return 0, false
	}
	return a.Meta.Version, true
}

// countingReader counts bytes and remembers a read error, so a broken
// connection is not mistaken for a broken bundle.
type countingReader struct {
	r       io.Reader
	n       int64
	readErr error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	return n, err
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
