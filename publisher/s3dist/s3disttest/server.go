// Package s3disttest runs an S3-compatible store in process for tests:
// github.com/johannesboyne/gofakes3 with its in-memory backend, on a
// loopback port, so the real aws-sdk-go-v2 S3 client and plain net/http
// talk to it over HTTP.
//
// gofakes3 checks no signatures and ignores presign expiry. A store that
// accepted expired URLs would make an expiry test pass for the wrong
// reason, so [Server] puts a small middleware in front of it that does
// what S3 does with a presigned request (query-string SigV4): it refuses
// an X-Amz-Expires above seven days, refuses the request once X-Amz-Date +
// X-Amz-Expires has passed (403 AccessDenied "Request has expired"), and
// recomputes the signature with the server's one secret key, refusing any
// mismatch (403 SignatureDoesNotMatch). Requests signed in the
// Authorization header (the SDK's own calls) pass through unchecked, and
// requests signed neither way get 403 AccessDenied, as from a private
// bucket.
package s3disttest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Test credentials and region. The secret is what presigned URLs are
// checked against.
const (
	AccessKey = "AKIDLINKEDGETEST"
	SecretKey = "linkedge-test-secret"
	Region    = "eu-west-1"
)

// Server is a running fake S3.
type Server struct {
	// URL is the endpoint, e.g. http://127.0.0.1:41234 (path-style).
	URL string

	backend *s3mem.Backend
	srv     *httptest.Server
	now     atomic.Pointer[func() time.Time]

	mu     sync.Mutex
	faults []*Fault
	gets   map[string]int // "bucket/key" → GET requests answered
}

// Fault makes matching requests fail with an S3 error.
type Fault struct {
	// Method ("GET", "HEAD") and Key ("bucket/key") to match; empty
	// matches any.
	Method, Key string
	// Status and Code of the answer, e.g. 403 "AccessDenied".
	Status int
	Code   string
	// Times is how many requests fail; below 1 means every one.
	Times int
}

// New starts a server and stops it when tb ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{backend: s3mem.New(), gets: map[string]int{}}
	faker := gofakes3.New(s.backend)
	s.srv = httptest.NewServer(s.middleware(faker.Server()))
	s.URL = s.srv.URL
	tb.Cleanup(s.srv.Close)
	return s
}

// Close stops the server: later requests fail to connect (an unreachable
// store).
func (s *Server) Close() { s.srv.Close() }

// SetNow replaces the clock the expiry check uses.
func (s *Server) SetNow(now func() time.Time) { s.now.Store(&now) }

func (s *Server) clock() time.Time {
	if f := s.now.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// Put stores an object, creating the bucket if needed, as a training
// pipeline would upload model.tar.gz.
func (s *Server) Put(tb testing.TB, bucket, key string, data []byte) {
	tb.Helper()
	if err := s.backend.CreateBucket(bucket); err != nil && !gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists) {
		tb.Fatalf("create bucket %s: %v", bucket, err)
	}
	if _, err := s.backend.PutObject(bucket, key, map[string]string{"Content-Type": "application/gzip"},
		bytes.NewReader(data), int64(len(data)), nil); err != nil {
		tb.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

// Fail adds a fault.
func (s *Server) Fail(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Gets returns how many GET requests for bucket/key were answered with
// the object (or a part of it).
func (s *Server) Gets(bucket, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[bucket+"/"+key]
}

// Client returns a real S3 client for the server: static test credentials,
// path-style addressing, this endpoint.
func (s *Server) Client() *s3.Client {
	return s3.NewFromConfig(Config(), func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.URL)
		o.UsePathStyle = true
	})
}

// Config is an aws.Config with the test credentials and region, and no
// other source (no environment, no instance metadata).
func Config() aws.Config {
	return aws.Config{
		Region: Region,
		Credentials: aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: AccessKey, SecretAccessKey: SecretKey, Source: "s3disttest"}, nil
		})),
	}
}

func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Query().Get("X-Amz-Algorithm") != "":
			if code, status, msg := s.checkPresigned(r); code != "" {
				writeError(w, status, code, msg)
				return
			}
		case r.Header.Get("Authorization") == "":
			// The buckets are private, as LinkEdge's are on S3: a
			// request that is signed neither way is refused.
			writeError(w, http.StatusForbidden, "AccessDenied", "Access Denied")
			return
		}
		if f := s.fault(r); f != nil {
			writeError(w, f.Status, f.Code, "injected fault")
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if r.Method == http.MethodGet && (rec.status == http.StatusOK || rec.status == http.StatusPartialContent) {
			s.mu.Lock()
			s.gets[trimSlash(r.URL.Path)]++
			s.mu.Unlock()
		}
	})
}

func (s *Server) fault(r *http.Request) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := trimSlash(r.URL.Path)
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == r.Method) && (f.Key == "" || f.Key == key) {
			if f.Times > 0 {
				f.Times--
				if f.Times == 0 {
					s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
				}
			}
			return f
		}
	}
	return nil
}

func trimSlash(p string) string {
	if len(p) > 0 && p[0] == '/' {
		return p[1:]
	}
	return p
}

// writeError answers with S3's XML error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n<Error><Code>%s</Code><Message>%s</Message><RequestId>s3disttest</RequestId></Error>", code, msg)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}
