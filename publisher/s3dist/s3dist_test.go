package s3dist_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"
	"github.com/linkedge/linkedge/publisher/s3dist/s3disttest"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in   string
		want s3dist.Location
		bad  bool
	}{
		{in: "s3://models/aps/1/model.tar.gz", want: s3dist.Location{Bucket: "models", Key: "aps/1/model.tar.gz"}},
		{in: "s3://models/k?versionId=abc%2B1", want: s3dist.Location{Bucket: "models", Key: "k", VersionID: "abc+1"}},
		{in: "https://models.s3.amazonaws.com/k", bad: true},
		{in: "s3://models", bad: true},
		{in: "s3://models/", bad: true},
		{in: "s3:///key", bad: true},
		{in: "s3://models/k?acl=1", bad: true},
		{in: "", bad: true},
		{in: "/local/file.tar.gz", bad: true},
	}
	for _, tt := range tests {
		got, err := s3dist.ParseURL(tt.in)
		if tt.bad {
			if !errors.Is(err, s3dist.ErrNotS3) {
				t.Errorf("ParseURL(%q) = %+v, %v; want ErrNotS3", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if back, err := s3dist.ParseURL(got.String()); err != nil || back != got {
			t.Errorf("round trip of %q: %+v, %v", tt.in, back, err)
		}
	}
}

// bundleBytes is a valid bundle named name at version.
func bundleBytes(t testing.TB, name string, version int64) []byte {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(apsmodels.V1()), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b.Meta.Name, b.Meta.Version = name, version
	var out bytes.Buffer
	if err := bundle.Write(&out, b.Meta, b.ONNX); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestInspect(t *testing.T) {
	ctx := context.Background()
	srv := s3disttest.New(t)
	good := bundleBytes(t, "aps-failure", 3)
	// Trailing bytes after the gzip stream are part of the file trucks
	// download, so they must be part of the digest.
	padded := append(bytes.Clone(good), make([]byte, 1000)...)
	srv.Put(t, "models", "good/model.tar.gz", good)
	srv.Put(t, "models", "padded/model.tar.gz", padded)
	srv.Put(t, "models", "junk/model.tar.gz", []byte("this is not a tarball"))
	srv.Put(t, "models", "denied/model.tar.gz", good)
	srv.Fail(s3disttest.Fault{Key: "models/denied/model.tar.gz", Status: 403, Code: "AccessDenied"})
	r := &s3dist.Reader{Client: srv.Client()}

	for _, tc := range []struct {
		key     string
		data    []byte
		wantErr error
	}{
		{key: "good/model.tar.gz", data: good},
		{key: "padded/model.tar.gz", data: padded},
		{key: "junk/model.tar.gz", wantErr: s3dist.ErrInvalidBundle},
		{key: "missing/model.tar.gz", wantErr: s3dist.ErrNotFound},
		{key: "denied/model.tar.gz", wantErr: s3dist.ErrAccessDenied},
	} {
		t.Run(tc.key, func(t *testing.T) {
			loc := s3dist.Location{Bucket: "models", Key: tc.key}
			h, herr := r.Head(ctx, loc)
			a, err := r.Inspect(ctx, loc, h.ETag)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Inspect: %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.key) {
					t.Errorf("error %q does not name the object", err)
				}
				return
			}
			if herr != nil || err != nil {
				t.Fatalf("Head: %v; Inspect: %v", herr, err)
			}
			sum := sha256.Sum256(tc.data)
			if a.SHA256 != hex.EncodeToString(sum[:]) || a.Size != int64(len(tc.data)) || h.Size != a.Size {
				t.Fatalf("got sha %s size %d (head %d), want %x %d", a.SHA256, a.Size, h.Size, sum, len(tc.data))
			}
			if a.ETag == "" || a.ETag != h.ETag {
				t.Fatalf("etag %q, head %q", a.ETag, h.ETag)
			}
			if err := a.CheckModel("aps-failure"); err != nil {
				t.Fatal(err)
			}
			if err := a.CheckModel("engine-temp"); !errors.Is(err, s3dist.ErrInvalidBundle) || !strings.Contains(err.Error(), "engine-temp") {
				t.Errorf("CheckModel(engine-temp) = %v, want ErrInvalidBundle naming the registry's model", err)
			}
			// The registry's version is the authority: another one in
			// metadata.json is reported, not refused.
			if v, ok := a.OtherVersion(3); ok {
				t.Errorf("OtherVersion(3) = %d, want none", v)
			}
			if v, ok := a.OtherVersion(4); !ok || v != 3 {
				t.Errorf("OtherVersion(4) = %d %v, want 3 true", v, ok)
			}
		})
	}

	// An ETag other than the one expected is a change, not a digest to
	// cache under the old key.
	_, err := r.Inspect(ctx, s3dist.Location{Bucket: "models", Key: "good/model.tar.gz"}, `"0123"`)
	if !errors.Is(err, s3dist.ErrChanged) {
		t.Fatalf("Inspect with a stale etag: %v, want ErrChanged", err)
	}
}

func TestPresignedDownload(t *testing.T) {
	ctx := context.Background()
	srv := s3disttest.New(t)
	data := bundleBytes(t, "aps-failure", 1)
	srv.Put(t, "models", "aps/1/model.tar.gz", data)
	client := srv.Client()
	start := time.Now()
	p := &s3dist.Presigner{Client: s3.NewPresignClient(client), TTL: time.Hour}
	url, expires, err := p.URL(ctx, publisher.Version{Model: "aps-failure", Version: 1,
		Artifact: publisher.ArtifactRef{Location: "s3://models/aps/1/model.tar.gz"}})
	if err != nil {
		t.Fatal(err)
	}
	// Reported expiry: the URL's end less the margin (10m: below TTL/4).
	if lo, hi := start.Add(50*time.Minute), time.Now().Add(50*time.Minute); expires.Before(lo) || expires.After(hi) {
		t.Fatalf("expires %s, want between %s and %s", expires, lo, hi)
	}
	if !strings.Contains(url, "X-Amz-Expires=3600") || !strings.HasPrefix(url, srv.URL+"/models/aps/1/model.tar.gz?") {
		t.Fatalf("url %s", url)
	}

	get := func(u string, hdr map[string]string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	// Plain net/http, no credentials: the whole file, then a resumed range.
	if code, body := get(url, nil); code != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET presigned: %d, %d bytes", code, len(body))
	}
	if code, body := get(url, map[string]string{"Range": "bytes=100-"}); code != 206 || !bytes.Equal(body, data[100:]) {
		t.Fatalf("GET presigned range: %d, %d bytes", code, len(body))
	}
	// Tampering with the signed query is refused.
	tampered := strings.Replace(url, "X-Amz-Expires=3600", "X-Amz-Expires=3599", 1)
	if code, body := get(tampered, nil); code != 403 || !strings.Contains(string(body), "SignatureDoesNotMatch") {
		t.Fatalf("tampered URL: %d %s", code, body)
	}
	otherKey := strings.Replace(url, "/aps/1/", "/aps/2/", 1)
	if code, _ := get(otherKey, nil); code != 403 {
		t.Fatalf("URL for another key: %d", code)
	}
	// Once the lifetime has passed, the store refuses it.
	srv.SetNow(func() time.Time { return time.Now().Add(time.Hour + time.Second) })
	if code, body := get(url, nil); code != 403 || !strings.Contains(string(body), "Request has expired") {
		t.Fatalf("expired URL: %d %s", code, body)
	}
}

func TestPresignerLimits(t *testing.T) {
	client := s3.NewPresignClient(s3.NewFromConfig(s3disttest.Config()))
	for _, tc := range []struct {
		ttl, margin time.Duration
		ok          bool
	}{
		{ok: true},
		{ttl: 7 * 24 * time.Hour, ok: true},
		{ttl: 7*24*time.Hour + time.Second},
		{ttl: 500 * time.Millisecond},
		{ttl: 2 * time.Second, ok: true},
		{ttl: time.Hour, margin: time.Hour},
		{ttl: time.Hour, margin: -time.Second},
	} {
		p := &s3dist.Presigner{Client: client, TTL: tc.ttl, Margin: tc.margin}
		if err := p.Check(); (err == nil) != tc.ok {
			t.Errorf("ttl %s margin %s: Check() = %v, want ok=%v", tc.ttl, tc.margin, err, tc.ok)
		}
	}
}

// Temporary credentials end a presigned URL when they expire, whatever
// its TTL, so the reported expiry follows them.
func TestPresignTemporaryCredentials(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	credsEnd := now.Add(2 * time.Hour)
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "ASIA", SecretAccessKey: "s", SessionToken: "t", CanExpire: true, Expires: credsEnd}, nil
	})
	cfg := s3disttest.Config()
	cfg.Credentials = creds
	p := &s3dist.Presigner{Client: s3.NewPresignClient(s3.NewFromConfig(cfg)), Credentials: creds, Now: func() time.Time { return now }}
	_, expires, err := p.URL(context.Background(), publisher.Version{Artifact: publisher.ArtifactRef{Location: "s3://b/k"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := credsEnd.Add(-s3dist.DefaultMargin); !expires.Equal(want) {
		t.Fatalf("expires %s, want %s", expires, want)
	}
	if _, _, err := p.URL(context.Background(), publisher.Version{Artifact: publisher.ArtifactRef{Location: "/tmp/x"}}); !errors.Is(err, s3dist.ErrNotS3) {
		t.Fatalf("non-S3 location: %v", err)
	}
}
