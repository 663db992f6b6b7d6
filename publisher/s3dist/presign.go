package s3dist

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/linkedge/linkedge/publisher"
)

// Presign lifetimes.
const (
	// DefaultTTL is a day: a truck that was offline for a shift finds a
	// document whose URL still works, and a leaked URL dies soon.
	DefaultTTL = 24 * time.Hour
	// MaxTTL is SigV4's limit for presigned URLs.
	MaxTTL = 7 * 24 * time.Hour
	// MinTTL keeps a URL usable for one download attempt at least.
	MinTTL = time.Second
	// DefaultMargin covers twice the trucks' default clock-skew allowance
	// (5 minutes, edgeclient max_clock_skew): a truck accepts a document up
	// to that long after its expires_at, so the URL must outlive the
	// document by at least as much.
	DefaultMargin = 10 * time.Minute
)

// PresignAPI is the part of *s3.PresignClient the [Presigner] uses.
type PresignAPI interface {
	PresignGetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.PresignOptions)) (*v4.PresignedHTTPRequest, error)
}

// Presigner is a publisher.Distributor that gives trucks presigned S3 GET
// URLs, which they download with plain HTTP (Range requests included: only
// the host header is signed).
//
// The expiry it returns is what keeps trucks supplied: the publisher caps a
// release document's expires_at at it and re-signs the document (with a
// fresh URL) once a third of that window remains. The expiry reported is
// the URL's real end minus Margin, because trucks accept a document for a
// while after its expires_at (their clock-skew allowance); a document a
// truck accepts therefore always names a URL that still works.
type Presigner struct {
	// Client signs; required.
	Client PresignAPI
	// TTL is the URL lifetime, between [MinTTL] and [MaxTTL]. Zero means
	// [DefaultTTL].
	TTL time.Duration
	// Margin is subtracted from the URL's end to get the expiry reported;
	// zero means the smaller of [DefaultMargin] and TTL/4.
	Margin time.Duration
	// Credentials, if set, are those the client signs with. Temporary
	// credentials (an assumed role, SSO) end a presigned URL early, when
	// they expire, whatever its TTL; the reported expiry accounts for that.
	Credentials aws.CredentialsProvider
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Check validates the configuration.
func (p *Presigner) Check() error {
	ttl := p.ttl()
	switch {
	case p.Client == nil:
		return fmt.Errorf("presigner: no s3 client")
	case ttl < MinTTL || ttl > MaxTTL:
		return fmt.Errorf("%w: %s, want %s to %s (SigV4 limit)", ErrTTL, ttl, MinTTL, MaxTTL)
	case p.margin() < 0 || p.margin() >= ttl:
		return fmt.Errorf("%w: margin %s must be below the lifetime %s", ErrTTL, p.margin(), ttl)
	}
	return nil
}

// URL implements publisher.Distributor.
func (p *Presigner) URL(ctx context.Context, v publisher.Version) (string, time.Time, error) {
	if err := p.Check(); err != nil {
		return "", time.Time{}, err
	}
	loc, err := ParseURL(v.Artifact.Location)
	if err != nil {
		return "", time.Time{}, err
	}
	// Taken before signing: the SDK stamps its own, later, time, so the real
	// end is never before the one computed here.
	now := p.now()
	end := now.Add(p.ttl())
	if p.Credentials != nil {
		creds, err := p.Credentials.Retrieve(ctx)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("presign %s: credentials: %w", loc, err)
		}
		if creds.CanExpire && creds.Expires.Before(end) {
			end = creds.Expires
		}
	}
	in := &s3.GetObjectInput{Bucket: &loc.Bucket, Key: &loc.Key}
	if loc.VersionID != "" {
		in.VersionId = &loc.VersionID
	}
	req, err := p.Client.PresignGetObject(ctx, in, s3.WithPresignExpires(p.ttl()))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("presign %s: %w", loc, err)
	}
	expires := end.Add(-p.margin())
	if !expires.After(now) {
		return "", time.Time{}, fmt.Errorf("presign %s: the signing credentials expire at %s, too soon for a usable url", loc, end.Format(time.RFC3339))
	}
	return req.URL, expires, nil
}

func (p *Presigner) ttl() time.Duration {
	if p.TTL == 0 {
		return DefaultTTL
	}
	return p.TTL
}

func (p *Presigner) margin() time.Duration {
	if p.Margin != 0 {
		return p.Margin
	}
	return min(DefaultMargin, p.ttl()/4)
}

func (p *Presigner) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

var _ publisher.Distributor = (*Presigner)(nil)

// StableURL implements publisher.GrantDistributor: the object's URL on the
// configured endpoint without the signature, so the same for as long as the
// object (and its version id, which it keeps) is. It does not download the
// object from a private bucket by itself; trucks ask for a grant.
func (p *Presigner) StableURL(ctx context.Context, v publisher.Version) (string, error) {
	if err := p.Check(); err != nil {
		return "", err
	}
	loc, err := ParseURL(v.Artifact.Location)
	if err != nil {
		return "", err
	}
	in := &s3.GetObjectInput{Bucket: &loc.Bucket, Key: &loc.Key}
	if loc.VersionID != "" {
		in.VersionId = &loc.VersionID
	}
	req, err := p.Client.PresignGetObject(ctx, in, s3.WithPresignExpires(p.ttl()))
	if err != nil {
		return "", fmt.Errorf("locate %s: %w", loc, err)
	}
	u, err := url.Parse(req.URL)
	if err != nil {
		return "", fmt.Errorf("locate %s: %w", loc, err)
	}
	q := url.Values{}
	if loc.VersionID != "" {
		q.Set("versionId", loc.VersionID)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

var _ publisher.GrantDistributor = (*Presigner)(nil)
