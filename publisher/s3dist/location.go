package s3dist

import (
	"fmt"
	"net/url"
	"strings"
)

// Location names one S3 object, optionally one version of it.
type Location struct {
	Bucket string
	Key    string
	// VersionID pins the exact bytes in a versioned bucket; empty means the
	// current version.
	VersionID string
}

// ParseURL parses an s3://bucket/key URL, the form SageMaker uses for
// ModelDataUrl. A "versionId" query parameter is kept. Anything else (an
// https:// URL, a missing bucket or key) wraps [ErrNotS3].
func ParseURL(s string) (Location, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Location{}, fmt.Errorf("%w: %q: %w", ErrNotS3, clip(s), err)
	}
	if u.Scheme != "s3" {
		return Location{}, fmt.Errorf("%w: %q has scheme %q, want s3://bucket/key", ErrNotS3, clip(s), u.Scheme)
	}
	key := strings.TrimPrefix(u.Path, "/")
	if u.Host == "" || key == "" || u.User != nil || u.Fragment != "" {
		return Location{}, fmt.Errorf("%w: %q is not s3://bucket/key", ErrNotS3, clip(s))
	}
	loc := Location{Bucket: u.Host, Key: key}
	q := u.Query()
	loc.VersionID = q.Get("versionId")
	q.Del("versionId")
	if len(q) > 0 {
		return Location{}, fmt.Errorf("%w: %q: only a versionId query is allowed", ErrNotS3, clip(s))
	}
	return loc, nil
}

// String returns the s3:// URL of l, with its versionId if it has one.
func (l Location) String() string {
	s := "s3://" + l.Bucket + "/" + l.Key
	if l.VersionID != "" {
		s += "?versionId=" + url.QueryEscape(l.VersionID)
	}
	return s
}

// clip shortens s for error messages.
func clip(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
