package sagemaker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	sm "github.com/aws/aws-sdk-go-v2/service/sagemaker"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"
	"github.com/linkedge/linkedge/publisher/s3dist/s3disttest"
	"github.com/linkedge/linkedge/publisher/sagemaker"
	"github.com/linkedge/linkedge/publisher/sagemaker/sagemakertest"
	"github.com/linkedge/linkedge/publisher/sagemaker/sqstest"
)

const bucket = "linkedge-ml"

// env is a SageMaker account on loopback: the registry API, S3 and a
// clock the test moves.
type env struct {
	t   *testing.T
	SM  *sagemakertest.Server
	S3  *s3disttest.Server
	mu  sync.Mutex
	now time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{t: t, SM: sagemakertest.New(t), S3: s3disttest.New(t), now: time.Now()}
}

// Now is the registry's clock: real time plus what advance added.
func (e *env) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// smClient is the real SDK client, pointed at the test server. attempts 1
// turns the SDK's own retries off, so the registry's backoff shows.
func (e *env) smClient(attempts int) *sm.Client {
	return sm.NewFromConfig(s3disttest.Config(), func(o *sm.Options) {
		o.BaseEndpoint = aws.String(e.SM.URL)
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = attempts
			so.MaxBackoff = 5 * time.Millisecond
		})
	})
}

func sqsClient(s *sqstest.Server) *sqs.Client {
	return sqs.NewFromConfig(s3disttest.Config(), func(o *sqs.Options) { o.BaseEndpoint = aws.String(s.URL) })
}

// registry builds a registry over groups with the SDK retries off.
func (e *env) registry(edit func(*sagemaker.Config), groups ...string) *sagemaker.Registry {
	e.t.Helper()
	cfg := sagemaker.Config{Client: e.smClient(1), Artifacts: &s3dist.Reader{Client: e.S3.Client()}, Groups: groups,
		RefreshInterval: time.Hour, MinBackoff: time.Second, MaxBackoff: 8 * time.Second, Now: e.Now, Logger: testLogger(e.t)}
	if edit != nil {
		edit(&cfg)
	}
	r, err := sagemaker.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// upload puts a bundle for group version at its conventional key and
// returns its s3:// URL.
func (e *env) upload(group string, version int64, data []byte) string {
	key := fmt.Sprintf("%s/%d/model.tar.gz", group, version)
	e.S3.Put(e.t, bucket, key, data)
	return "s3://" + bucket + "/" + key
}

// register uploads a valid bundle and registers it as the group's next
// version, pending.
func (e *env) register(group string) sagemakertest.Package {
	next := int64(1)
	for {
		if _, ok := e.SM.Get(group, int32(next)); !ok {
			break
		}
		next++
	}
	return e.SM.Register(group, e.upload(group, next, bundleBytes(e.t, group, next)))
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

// versionsOf calls Versions and returns model → version.
func versionsOf(t *testing.T, r *sagemaker.Registry) (map[string]publisher.Version, error) {
	t.Helper()
	vs, err := r.Versions(context.Background())
	if err != nil {
		return nil, err
	}
	out := map[string]publisher.Version{}
	for _, v := range vs {
		if _, dup := out[v.Model]; dup {
			t.Fatalf("two versions of %s", v.Model)
		}
		out[v.Model] = v
	}
	return out, nil
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
