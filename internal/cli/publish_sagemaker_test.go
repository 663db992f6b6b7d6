package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"
	"github.com/linkedge/linkedge/publisher/s3dist/s3disttest"
	"github.com/linkedge/linkedge/publisher/sagemaker/sagemakertest"
	"github.com/linkedge/linkedge/publisher/sagemaker/sqstest"
)

// awsOnLoopback is an AWS account made of test servers, reached through
// the SDK's standard configuration: credentials, region and per-service
// endpoints from the environment, no shared files, no instance metadata.
type awsOnLoopback struct {
	SM    *sagemakertest.Server
	S3    *s3disttest.Server
	Queue *sqstest.Server
}

func newAWSOnLoopback(t *testing.T) *awsOnLoopback {
	a := &awsOnLoopback{SM: sagemakertest.New(t), S3: s3disttest.New(t), Queue: sqstest.New(t, "linkedge-events")}
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": s3disttest.AccessKey, "AWS_SECRET_ACCESS_KEY": s3disttest.SecretKey, "AWS_SESSION_TOKEN": "",
		"AWS_REGION": s3disttest.Region, "AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none"),
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_SAGEMAKER": a.SM.URL, "AWS_ENDPOINT_URL_S3": a.S3.URL, "AWS_ENDPOINT_URL_SQS": a.Queue.URL,
	} {
		t.Setenv(k, v)
	}
	return a
}

// register uploads a bundle of group at the group's next version and
// registers it (pending).
func (a *awsOnLoopback) register(t *testing.T, group string, version int32) string {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(apsmodels.V1()), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b.Meta.Name, b.Meta.Version = group, int64(version)
	var buf bytes.Buffer
	if err := bundle.Write(&buf, b.Meta, b.ONNX); err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("%s/%d/model.tar.gz", group, version)
	a.S3.Put(t, "linkedge-ml", key, buf.Bytes())
	return a.SM.Register(group, "s3://linkedge-ml/"+key).ARN
}

// fleet is a broker and a publisher key.
func testFleet(t *testing.T) (brokerURL, keyFile, stateFile string) {
	t.Helper()
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", HTTPListen: "", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	dir := t.TempDir()
	_, priv := release.GenerateKey()
	keyFile = filepath.Join(dir, "publisher.key")
	if err := release.WritePrivateKeyFile(keyFile, priv); err != nil {
		t.Fatal(err)
	}
	return "tcp://" + b.Addr(), keyFile, filepath.Join(dir, "state", "publisher-state.json")
}

// parsePublisherArgs parses args as `linkedge publisher` (publish false) or
// `linkedge publish` would, and returns the config they make (file, flags,
// environment), the SageMaker flags (publish's --model-package-arn and
// --group) and publish's own --version.
func parsePublisherArgs(t *testing.T, publish bool, args ...string) (publisher.Config, *sagemakerFlags, int64, error) {
	t.Helper()
	var smf sagemakerFlags
	f := publisherFlags{sm: &smf}
	var version int64
	cmd := &cobra.Command{Use: "publisher"}
	f.register(cmd)
	smf.register(cmd, publish)
	if publish {
		cmd.Flags().Int64Var(&version, "version", 0, "")
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.publisherConfig(cmd)
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg, &smf, version, err
}

// The pipeline hook: `linkedge publish --model-package-arn ARN` announces
// an approved package once the broker acknowledged it, and refuses, with
// the ARN and the reason, everything else.
func TestPublishSageMaker(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	base := []string{"--broker", brokerURL, "--key", key, "--state", state}
	arn1 := a.register(t, "aps-failure", 1)
	arn2 := a.register(t, "aps-failure", 2)
	a.SM.Approve("aps-failure", 1, "pipeline")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	publish := func(args ...string) (*release.Release, string, error) {
		cfg, s, version, err := parsePublisherArgs(t, true, append(slices.Clone(base), args...)...)
		if err != nil {
			return nil, "", err
		}
		var out bytes.Buffer
		r, err := runPublishSageMaker(ctx, &out, cfg, s, version, slog.New(slog.DiscardHandler))
		return r, out.String(), err
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
		is   error
	}{
		{"pending", []string{"--model-package-arn", arn2}, "PendingManualApproval", publisher.ErrNotApproved},
		{"unknown arn", []string{"--model-package-arn", sagemakertest.ARN("aps-failure", 9)}, "does not exist", nil},
		{"no package named", []string{"--registry-kind", "sagemaker"}, "--model-package-arn", nil},
		{"group and version disagree", []string{"--model-package-arn", arn1, "--group", "other"}, "not other", nil},
		{"bad kind", []string{"--registry-kind", "mlflow", "--group", "g", "--version", "1"}, `registry_kind: "mlflow"`, publisher.ErrInvalidConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := publish(tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
		})
	}

	r, out, err := publish("--model-package-arn", arn1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Model != "aps-failure" || r.Stable.Version != 1 || r.Stable.Source.ModelPackageARN != arn1 || r.Stable.Source.Registry != "sagemaker" {
		t.Fatalf("release %+v", r)
	}
	if !strings.Contains(out, "announced aps-failure version 1") || strings.Contains(out, "X-Amz-Signature") {
		t.Fatalf("output %q (the signature must stay out of logs)", out)
	}
	// What the broker retains is what trucks get: a presigned URL they can
	// download with plain HTTP.
	doc := retainedRelease(t, brokerURL, "aps-failure")
	if doc.Serial != r.Serial {
		t.Fatalf("retained serial %d, announced %d", doc.Serial, r.Serial)
	}
	resp, err := http.Get(doc.Stable.Artifact.URL)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != doc.Stable.Artifact.Size {
		t.Fatalf("presigned download: %d, %d bytes", resp.StatusCode, n)
	}

	// By group and version; a lower one is superseded once 2 is approved.
	a.SM.Approve("aps-failure", 2, "pipeline")
	if r, _, err = publish("--registry-kind", "sagemaker", "--group", "aps-failure", "--version", "2"); err != nil || r.Stable.Version != 2 {
		t.Fatalf("publish v2: %v", err)
	}
	if _, _, err = publish("--model-package-arn", arn1); !errors.Is(err, publisher.ErrSuperseded) {
		t.Fatalf("publish v1 after v2: %v, want ErrSuperseded", err)
	}
	// A version whose artifact is not a bundle is refused, naming it.
	arn3 := a.SM.Register("aps-failure", "s3://linkedge-ml/aps-failure/3/model.tar.gz").ARN
	a.S3.Put(t, "linkedge-ml", "aps-failure/3/model.tar.gz", []byte("not a bundle"))
	a.SM.Approve("aps-failure", 3, "pipeline")
	if _, _, err = publish("--model-package-arn", arn3); err == nil || !strings.Contains(err.Error(), arn3) || !strings.Contains(err.Error(), "not a valid linkedge bundle") {
		t.Fatalf("publish a broken package: %v", err)
	}
	// No broker: not announced, non-zero.
	bad, s, _, err := parsePublisherArgs(t, true, append(slices.Clone(base), "--broker", "tcp://127.0.0.1:1", "--registry-kind", "sagemaker", "--group", "aps-failure")...)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if _, err := runPublishSageMaker(sctx, io.Discard, bad, s, 2, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("announced without a broker")
	}
}

// The pipeline step of docs/pipeline-hook.md (issue 12 #1): the bundle is
// built before RegisterModel numbers the package, so its metadata.json has
// no version, and a parallel run registered first; the hook announces the
// number SageMaker gave, bound to the artifact's sha256.
func TestPublishSageMakerBundleWithoutVersion(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	a.register(t, "aps-failure", 1) // the parallel run, version 1
	b, err := bundle.Read(bytes.NewReader(apsmodels.V2()), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b.Meta.Name, b.Meta.Version = "aps-failure", 0
	var buf bytes.Buffer
	if err := bundle.Write(&buf, b.Meta, b.ONNX); err != nil {
		t.Fatal(err)
	}
	a.S3.Put(t, "linkedge-ml", "builds/run-42/model.tar.gz", buf.Bytes())
	arn := a.SM.Register("aps-failure", "s3://linkedge-ml/builds/run-42/model.tar.gz").ARN
	a.SM.Approve("aps-failure", 2, "pipeline")
	cfg, s, version, err := parsePublisherArgs(t, true, "--broker", brokerURL, "--key", key, "--state", state, "--model-package-arn", arn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := runPublishSageMaker(ctx, io.Discard, cfg, s, version, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("publish a bundle without a version: %v", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if r.Stable.Version != 2 || r.Stable.Artifact.SHA256 != hex.EncodeToString(sum[:]) || r.Stable.Source.ModelPackageARN != arn {
		t.Fatalf("release %+v, want version 2 with the bundle's sha256", r.Stable)
	}
}

// The service: `linkedge publisher --registry-kind sagemaker --groups ...
// --sqs-queue-url ...` announces on an event, long before its hourly poll.
func TestSageMakerPublisherService(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	a.register(t, "aps-failure", 1)
	a.SM.Approve("aps-failure", 1, "pipeline")
	cfg, _, _, err := parsePublisherArgs(t, false, "--registry-kind", "sagemaker", "--groups", "aps-failure,engine-temp",
		"--sqs-queue-url", a.Queue.QueueURL, "--presign-ttl", "2h", "--sagemaker-refresh", "1h",
		"--broker", brokerURL, "--key", key, "--state", state, "--poll", "100ms", "--artifacts-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.SM.CreateGroup("engine-temp")
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(tLog{t}, nil))
	}
	cfg.Logger = log
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := newSageMakerBackend(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if b.Events == nil || b.Distributor.TTL != 2*time.Hour || b.Registry.Name() != "sagemaker:aps-failure,engine-temp" {
		t.Fatalf("backend %+v", b)
	}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() { done <- runSageMakerPublisher(runCtx, cfg, b) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("publisher: %v", err)
		}
	}()
	if doc := retainedRelease(t, brokerURL, "aps-failure"); doc.Stable.Version != 1 {
		t.Fatalf("first announcement: v%d", doc.Stable.Version)
	}
	a.register(t, "aps-failure", 2)
	a.SM.Approve("aps-failure", 2, "pipeline")
	a.Queue.Send(`{"detail-type":"SageMaker Model Package State Change","source":"aws.sagemaker",` +
		`"detail":{"ModelPackageGroupName":"aps-failure","ModelPackageVersion":2,"ModelApprovalStatus":"Approved"}}`)
	deadline := time.Now().Add(20 * time.Second)
	for retainedRelease(t, brokerURL, "aps-failure").Stable.Version != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the event did not lead to an announcement of v2")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// While SageMaker fails the reads of a group, the publisher keeps
// announcing from its last view, and counts every poll of it in
// errors_total{stage="registry"} (issue 12 #3): an alert on that rate
// fires at once, not only once /healthz calls the view stale.
func TestSageMakerDegradedViewCountsErrors(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	a.register(t, "aps-failure", 1)
	a.SM.Approve("aps-failure", 1, "pipeline")
	cfg, _, _, err := parsePublisherArgs(t, false, "--registry-kind", "sagemaker", "--groups", "aps-failure",
		"--sagemaker-refresh", "100ms", "--broker", brokerURL, "--key", key, "--state", state, "--poll", "50ms", "--artifacts-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(tLog{t}, nil))
	}
	cfg.Logger = log
	metrics := prometheus.NewRegistry()
	cfg.Metrics = metrics
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := newSageMakerBackend(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() { done <- runSageMakerPublisher(runCtx, cfg, b) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("publisher: %v", err)
		}
	}()
	if doc := retainedRelease(t, brokerURL, "aps-failure"); doc.Stable.Version != 1 {
		t.Fatalf("first announcement: v%d", doc.Stable.Version)
	}
	registryErrors := func() float64 {
		mfs, err := metrics.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "linkedge_publisher_errors_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "stage" && l.GetValue() == "registry" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	if n := registryErrors(); n != 0 {
		t.Fatalf("errors_total{stage=registry} = %v before any failure", n)
	}
	a.SM.Fail(sagemakertest.Fault{Op: "ListModelPackages", Code: "AccessDeniedException", Message: "not authorized"})
	deadline := time.Now().Add(20 * time.Second)
	for registryErrors() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("failed reads of a group left errors_total{stage=registry} at 0")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := b.Registry.Degraded(); err == nil || !strings.Contains(err.Error(), "aps-failure") {
		t.Fatalf("Degraded() = %v, want the group named", err)
	}
}

// A SageMaker endpoint that never answers makes `linkedge publish` time
// out naming SageMaker, not the broker, which it never reached (issue 12
// #3).
func TestPublishTimeoutNamesTheStage(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	arn := a.register(t, "aps-failure", 1)
	a.SM.Approve("aps-failure", 1, "pipeline")
	for _, tc := range []struct {
		name  string
		fault sagemakertest.Fault
		args  []string
		want  string
	}{
		{"lookup", sagemakertest.Fault{Op: "DescribeModelPackage", Hang: true}, []string{"--model-package-arn", arn}, "SageMaker lookup of the model package"},
		{"group read", sagemakertest.Fault{Op: "ListModelPackages", Hang: true}, []string{"--registry-kind", "sagemaker", "--group", "aps-failure", "--version", "1"}, "SageMaker read of the model package group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.SM.ClearFaults()
			a.SM.Fail(tc.fault)
			t.Cleanup(a.SM.ClearFaults)
			cfg, s, version, err := parsePublisherArgs(t, true, append([]string{"--broker", brokerURL, "--key", key, "--state", state}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			const timeout = time.Second
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, err = runPublishSageMaker(ctx, io.Discard, cfg, s, version, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatal("announced through a SageMaker endpoint that never answers")
			}
			msg := explainPublishSageMaker(err, timeout).Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "--timeout") || strings.Contains(msg, "broker may") || !strings.Contains(msg, "nothing was sent to the broker") {
				t.Fatalf("message %q, want it to name %q as what stalled", msg, tc.want)
			}
		})
	}
}

// `linkedge publish` has one deadline, --timeout: it also bounds the wait
// for the acknowledgement, and the service's --publish-timeout is
// deprecated there, hidden from the help, and still obeyed when given.
func TestPublishTimeoutFlags(t *testing.T) {
	// One deadline in the help of both one-shot commands.
	for name, cmd := range map[string]*cobra.Command{"publish": newPublishCmd(), "pin": newPinCmd()} {
		var help bytes.Buffer
		cmd.SetOut(&help)
		cmd.SetErr(&help)
		if err := cmd.Help(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(help.String(), "--publish-timeout duration") || !strings.Contains(help.String(), "give up on the whole "+name) {
			t.Fatalf("%s help:\n%s", name, help.String())
		}
	}
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"--timeout", "45s"}, 45 * time.Second},
		{nil, 30 * time.Second},
		{[]string{"--timeout", "45s", "--publish-timeout", "5s"}, 5 * time.Second},
	} {
		cmd := newPublishCmd()
		cmd.Flags().SetOutput(io.Discard) // the deprecation notice
		if err := cmd.ParseFlags(append([]string{"--broker", "tcp://127.0.0.1:1883", "--key", "k.pem"}, tc.args...)); err != nil {
			t.Fatal(err)
		}
		var cfg publisher.Config
		if cmd.Flags().Changed("publish-timeout") { // as publisherConfig lays it over the file
			cfg.PublishTimeout, _ = cmd.Flags().GetDuration("publish-timeout")
		}
		timeout, _ := cmd.Flags().GetDuration("timeout")
		oneShotTimeout(cmd, &cfg, timeout)
		if cfg.PublishTimeout != tc.want {
			t.Errorf("%v: acknowledgement wait %s, want %s", tc.args, cfg.PublishTimeout, tc.want)
		}
	}
}

func TestSageMakerFlagErrors(t *testing.T) {
	newAWSOnLoopback(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	conn := []string{"--broker", "tcp://127.0.0.1:1883", "--key", "k.pem"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{args: []string{"--registry-kind", "sagemaker", "--state", "s.json"}, want: "--groups"},
		{args: []string{"--registry-kind", "sagemaker", "--groups", "g"}, want: "--state"},
		{args: []string{"--registry-kind", "sagemaker", "--groups", "g", "--state", "s.json", "--presign-ttl", "200h"}, want: "--presign-ttl"},
		{args: []string{"--registry-kind", "sagemaker", "--groups", "bad/group", "--state", "s.json"}, want: "bad/group"},
		{args: []string{"--registry-kind", "sagemaker", "--groups", "g", "--state", "s.json", "--sagemaker-refresh", "-1m"}, want: "--sagemaker-refresh"},
		{args: []string{"--registry-kind", "sagemaker", "--groups", "g", "--state", "s.json", "--endpoint-url", "localhost:9000"}, want: "--endpoint-url"},
		{args: []string{"--registry-kind", "sagemaker", "--groups", "g", "--state", "s.json", "--registry", "/srv/registry"}, want: "registry_dir: not used"},
	} {
		cfg, _, _, err := parsePublisherArgs(t, false, append(slices.Clone(conn), tc.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newSageMakerBackend(ctx, cfg, log); !errors.Is(err, publisher.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error about %s", tc.args, err, tc.want)
		}
	}
	t.Setenv("AWS_REGION", "")
	cfg, _, _, err := parsePublisherArgs(t, false, append(slices.Clone(conn), "--registry-kind", "sagemaker", "--groups", "g", "--state", filepath.Join(t.TempDir(), "s.json"))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newSageMakerBackend(ctx, cfg, log); err == nil || !strings.Contains(err.Error(), "region") {
		t.Errorf("no region: %v", err)
	}
}

// grantLife asks for a download grant as truck and returns its lifetime.
func grantLife(t *testing.T, brokerURL, truck, sha string) time.Duration {
	t.Helper()
	got := make(chan []byte, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("grant-" + truck))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Subscribe(topics.TruckGrant(truck), 1, func(_ paho.Client, m paho.Message) {
		select {
		case got <- bytes.Clone(m.Payload()):
		default:
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	c.Publish(topics.TruckGrantRequest(truck), 1, false, `{"model":"aps-failure","sha256":"`+sha+`"}`)
	select {
	case b := <-got:
		var g release.Grant
		if err := jsonUnmarshal(b, &g); err != nil {
			t.Fatal(err)
		}
		return g.ExpiresAt.Sub(g.IssuedAt)
	case <-time.After(10 * time.Second):
		t.Fatal("no grant")
		return 0
	}
}

func retainedRelease(t *testing.T, brokerURL, model string) *release.Release {
	t.Helper()
	got := make(chan []byte, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID(fmt.Sprintf("reader-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	c.Subscribe(topics.ModelRelease(model), 1, func(_ paho.Client, m paho.Message) {
		select {
		case got <- bytes.Clone(m.Payload()):
		default:
		}
	})
	select {
	case b := <-got:
		var r release.Release
		if err := jsonUnmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return &r
	case <-time.After(10 * time.Second):
		t.Fatalf("no retained release for %s", model)
		return nil
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

type tLog struct{ t *testing.T }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// endpoint_url (or --endpoint-url) reaches the services the SDK's way:
// here SageMaker, with its per-service variable unset, and the region
// from the same place.
func TestSageMakerEndpointURL(t *testing.T) {
	a := newAWSOnLoopback(t)
	arn := a.register(t, "aps-failure", 1)
	t.Setenv("AWS_ENDPOINT_URL_SAGEMAKER", "")
	t.Setenv("AWS_REGION", "")
	_, key, state := testFleet(t)
	file := writeConfig(t, fmt.Sprintf("broker: tcp://127.0.0.1:1\nkey_file: %s\nstate_file: %s\nregistry_kind: sagemaker\n"+
		"sagemaker:\n  endpoint_url: %s\n  region: eu-central-1\n", key, state, a.SM.URL))
	for name, args := range map[string][]string{
		"flags": {"--broker", "tcp://127.0.0.1:1", "--key", key, "--state", state, "--endpoint-url", a.SM.URL, "--region", "eu-central-1"},
		"file":  {"--config", file},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, s, _, err := parsePublisherArgs(t, true, append(args, "--model-package-arn", arn)...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = runPublishSageMaker(t.Context(), io.Discard, cfg, s, 0, slog.New(slog.DiscardHandler))
			if !errors.Is(err, publisher.ErrNotApproved) || !strings.Contains(err.Error(), "PendingManualApproval") {
				t.Fatalf("%v: want the pending package's refusal, which only SageMaker could give", err)
			}
			if got := explainPublishSageMaker(err, time.Second); got != err {
				t.Fatalf("explain changed a registry refusal: %v", got)
			}
		})
	}
}

// writeConfig writes a publisher config file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "publisher.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The file's registry_kind and sagemaker section, and the flags over them:
// a flag given on the command line wins, one left out keeps the file's
// value.
func TestSageMakerConfigFileAndFlags(t *testing.T) {
	t.Setenv(envRegistry, "/srv/from-env")
	file := writeConfig(t, `
broker: tcp://127.0.0.1:1883
key_file: publisher.key
state_file: /var/lib/linkedge/publisher-state.json
registry_kind: sagemaker
sagemaker:
  groups: [aps-failure, engine-temp]
  sqs_queue_url: https://sqs.eu-west-1.amazonaws.com/123456789012/linkedge-model-events
  refresh_interval: 5m
  presign_ttl: 12h
  region: eu-west-1
  endpoint_url: https://s3.example.com
  s3_path_style: true
  artifact_cache: /var/cache/linkedge/artifacts.json
  container_runtime: true
  urls_in_release: true
`)
	fromFile := publisher.SageMakerConfig{
		Groups:           []string{"aps-failure", "engine-temp"},
		SQSQueueURL:      "https://sqs.eu-west-1.amazonaws.com/123456789012/linkedge-model-events",
		RefreshInterval:  5 * time.Minute,
		PresignTTL:       12 * time.Hour,
		Region:           "eu-west-1",
		EndpointURL:      "https://s3.example.com",
		S3PathStyle:      true,
		ArtifactCache:    "/var/cache/linkedge/artifacts.json",
		ContainerRuntime: true,
		URLsInRelease:    true,
	}
	with := func(edit func(*publisher.SageMakerConfig)) *publisher.SageMakerConfig {
		s := fromFile
		s.Groups = slices.Clone(s.Groups)
		edit(&s)
		return &s
	}
	localFile := writeConfig(t, "broker: tcp://127.0.0.1:1883\nkey_file: k\n")
	for _, tc := range []struct {
		name     string
		publish  bool
		args     []string
		kind     string
		section  *publisher.SageMakerConfig
		registry string
	}{
		{name: "file alone", args: []string{"--config", file}, kind: "sagemaker", section: &fromFile},
		{name: "every flag over the file", args: []string{"--config", file, "--groups", "aps-failure", "--sqs-queue-url", "http://127.0.0.1:1/q",
			"--sagemaker-refresh", "30s", "--presign-ttl", "2h", "--region", "us-east-1", "--endpoint-url", "http://127.0.0.1:2",
			"--s3-path-style=false", "--artifact-cache", "c.json", "--container-runtime=false", "--urls-in-release=false"}, kind: "sagemaker",
			section: &publisher.SageMakerConfig{Groups: []string{"aps-failure"}, SQSQueueURL: "http://127.0.0.1:1/q", RefreshInterval: 30 * time.Second,
				PresignTTL: 2 * time.Hour, Region: "us-east-1", EndpointURL: "http://127.0.0.1:2", ArtifactCache: "c.json"}},
		{name: "one flag over the file", args: []string{"--config", file, "--presign-ttl", "1h"}, kind: "sagemaker",
			section: with(func(s *publisher.SageMakerConfig) { s.PresignTTL = time.Hour })},
		{name: "flags alone", args: []string{"--registry-kind", "sagemaker", "--groups", "a,b"}, kind: "sagemaker",
			section: &publisher.SageMakerConfig{Groups: []string{"a", "b"}}},
		{name: "--registry-kind local over the file", args: []string{"--config", file, "--registry-kind", "local"}, kind: "local", registry: "/srv/from-env"},
		// Section flags with the local kind are refused: TestSageMakerFlagsRefusedWithLocalRegistry.
		{name: "publish: the file's section", publish: true, args: []string{"--config", file, "--group", "aps-failure"}, kind: "sagemaker", section: &fromFile},
		{name: "publish: flags over the file", publish: true, args: []string{"--config", file, "--region", "us-east-1"}, kind: "sagemaker",
			section: with(func(s *publisher.SageMakerConfig) { s.Region = "us-east-1" })},
		{name: "publish: --model-package-arn over a local file", publish: true, args: []string{"--config", localFile, "--model-package-arn", "arn:x"},
			kind: "sagemaker", section: &publisher.SageMakerConfig{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, _, err := parsePublisherArgs(t, tc.publish, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.RegistryKind != tc.kind || !reflect.DeepEqual(cfg.SageMaker, tc.section) || cfg.RegistryDir != tc.registry {
				t.Fatalf("kind %q, registry_dir %q, section %+v;\nwant %q, %q, %+v", cfg.RegistryKind, cfg.RegistryDir, cfg.SageMaker, tc.kind, tc.registry, tc.section)
			}
			// The file's values never leak into it through a shared slice.
			if cfg.SageMaker != nil && len(cfg.SageMaker.Groups) > 0 && &cfg.SageMaker.Groups[0] == &fromFile.Groups[0] {
				t.Fatal("groups shared with the expectation")
			}
		})
	}

	// Mistakes, reported before any AWS call.
	for _, tc := range []struct {
		name string
		yaml string
		args []string
		want string
	}{
		{"unknown kind in the file", "registry_kind: mlflow\n", nil, `registry_kind: "mlflow"`},
		{"unknown kind flag", "", []string{"--registry-kind", "mlflow"}, `registry_kind: "mlflow"`},
		{"unknown key in the section", "registry_kind: sagemaker\nsagemaker:\n  queue_url: x\n", nil, "field queue_url not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := parsePublisherArgs(t, false, append([]string{"--config", writeConfig(t, tc.yaml)}, tc.args...)...)
			if !errors.Is(err, publisher.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want ErrInvalidConfig mentioning %q", err, tc.want)
			}
		})
	}

	// `pin` works with the local registry only, and says so.
	pin := newPinCmd()
	pin.SetArgs([]string{"--config", file, "--truck", "t1", "--model", "aps-failure", "--version", "1"})
	pin.SetOut(io.Discard)
	pin.SetErr(io.Discard)
	if err := pin.ExecuteContext(t.Context()); !errors.Is(err, publisher.ErrInvalidConfig) || !strings.Contains(err.Error(), "local registry only") {
		t.Fatalf("pin with a SageMaker config: %v", err)
	}
}

// publisher cannot import s3dist, so it repeats the presigned URL
// lifetime limits; they must stay the same.
func TestPresignTTLLimitsAgree(t *testing.T) {
	for ttl, ok := range map[time.Duration]bool{s3dist.MinTTL: true, s3dist.MaxTTL: true, s3dist.DefaultTTL: true,
		s3dist.MinTTL - time.Nanosecond: false, s3dist.MaxTTL + time.Nanosecond: false} {
		cfg := publisher.Config{Broker: "tcp://127.0.0.1:1883", KeyFile: "k", StateFile: "s.json", RegistryKind: "sagemaker",
			SageMaker: &publisher.SageMakerConfig{Groups: []string{"g"}, PresignTTL: ttl}}
		if err := cfg.ValidateSettings(); (err == nil) != ok {
			t.Errorf("presign_ttl %s: %v, want valid %v", ttl, err, ok)
		}
	}
}

// `linkedge publisher --config FILE` and `linkedge publish --config FILE`
// with nothing else: the file alone puts them on SageMaker, its events
// and S3, here the test servers on 127.0.0.1. A flag still overrides it.
func TestSageMakerConfigFileEndToEnd(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	a.register(t, "aps-failure", 1)
	a.SM.Approve("aps-failure", 1, "pipeline")
	// The region comes from the file only: without it the SDK has none.
	// (endpoint_url would send S3 and SQS to the SageMaker server too; see
	// TestSageMakerEndpointURL.)
	t.Setenv("AWS_REGION", "")
	cache := filepath.Join(t.TempDir(), "cache", "artifacts.json")
	file := writeConfig(t, fmt.Sprintf(`
broker: %s
key_file: %s
state_file: %s
poll_interval: 100ms
artifact_listen: 127.0.0.1:0
registry_kind: sagemaker
sagemaker:
  groups: [aps-failure]
  sqs_queue_url: %s
  refresh_interval: 1h
  presign_ttl: 1h
  region: %s
  artifact_cache: %s
`, brokerURL, key, state, a.Queue.QueueURL, s3disttest.Region, cache))
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	svc := newPublisherCmd()
	svc.SetArgs([]string{"--config", file})
	go func() { done <- svc.ExecuteContext(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("publisher: %v", err)
		}
	}()
	first := retainedRelease(t, brokerURL, "aps-failure")
	if first.Stable.Version != 1 || first.Stable.Source.Registry != "sagemaker" {
		t.Fatalf("first announcement: %+v", first.Stable)
	}
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("artifact_cache not used: %v", err)
	}
	// The queue from the file: with a 1h refresh only the event explains
	// an announcement of v2 within seconds.
	a.register(t, "aps-failure", 2)
	a.SM.Approve("aps-failure", 2, "pipeline")
	a.Queue.Send(`{"detail-type":"SageMaker Model Package State Change","source":"aws.sagemaker",` +
		`"detail":{"ModelPackageGroupName":"aps-failure","ModelPackageVersion":2,"ModelApprovalStatus":"Approved"}}`)
	deadline := time.Now().Add(20 * time.Second)
	var second *release.Release
	for second = retainedRelease(t, brokerURL, "aps-failure"); second.Stable.Version != 2; second = retainedRelease(t, brokerURL, "aps-failure") {
		if time.Now().After(deadline) {
			t.Fatal("the event did not lead to an announcement of v2")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The service's release carries no URL that expires: it lives the
	// release TTL, and trucks ask for grants. presign_ttl from the file
	// bounds the grant: a 1h URL, less the safety margin.
	if life := second.ExpiresAt.Sub(second.IssuedAt); !second.Stable.Artifact.Grant || life != publisher.DefaultReleaseTTL {
		t.Fatalf("release valid for %s, grant %v; want the release TTL and a grant", life, second.Stable.Artifact.Grant)
	}
	if life := grantLife(t, brokerURL, "truck-1", second.Stable.Artifact.SHA256); life > time.Hour || life < 30*time.Minute {
		t.Fatalf("grant valid for %s with presign_ttl 1h", life)
	}

	// The one-shot reads the same file; --presign-ttl overrides it.
	pub := newPublishCmd()
	var out bytes.Buffer
	pub.SetOut(&out)
	pub.SetArgs([]string{"--config", file, "--group", "aps-failure", "--version", "2", "--presign-ttl", "3h", "--timeout", "20s"})
	if err := pub.ExecuteContext(ctx); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if !strings.Contains(out.String(), "announced aps-failure version 2 (") {
		t.Fatalf("publish said %q", out.String())
	}
	third := retainedRelease(t, brokerURL, "aps-failure")
	if life := third.ExpiresAt.Sub(third.IssuedAt); life <= 2*time.Hour || life > 3*time.Hour {
		t.Fatalf("release valid for %s with --presign-ttl 3h over the file's 1h", life)
	}
}
