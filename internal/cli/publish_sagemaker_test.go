package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
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

// parseSageMakerFlags parses args as the command would; publish adds the
// publish command's own --version, which it returns.
func parseSageMakerFlags(t *testing.T, publish bool, args ...string) (*sagemakerFlags, int64) {
	t.Helper()
	var s sagemakerFlags
	var version int64
	cmd := &cobra.Command{Use: "x"}
	s.register(cmd, publish)
	if publish {
		cmd.Flags().Int64Var(&version, "version", 0, "")
	}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return &s, version
}

// The pipeline hook: `linkedge publish --model-package-arn ARN` announces
// an approved package once the broker acknowledged it, and refuses, with
// the ARN and the reason, everything else.
func TestPublishSageMaker(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	cfg := publisher.Config{Broker: brokerURL, KeyFile: key, StateFile: state, Logger: slog.New(slog.DiscardHandler)}
	arn1 := a.register(t, "aps-failure", 1)
	arn2 := a.register(t, "aps-failure", 2)
	a.SM.Approve("aps-failure", 1, "pipeline")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	publish := func(args ...string) (*release.Release, string, error) {
		s, version := parseSageMakerFlags(t, true, args...)
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
		{"no package named", nil, "--model-package-arn", nil},
		{"group and version disagree", []string{"--model-package-arn", arn1, "--group", "other"}, "not other", nil},
		{"bad kind", []string{"--registry-kind", "mlflow", "--group", "g", "--version", "1"}, "--registry-kind", nil},
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
	if r, _, err = publish("--group", "aps-failure", "--version", "2"); err != nil || r.Stable.Version != 2 {
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
	bad := cfg
	bad.Broker = "tcp://127.0.0.1:1"
	s, _ := parseSageMakerFlags(t, true, "--group", "aps-failure")
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if _, err := runPublishSageMaker(sctx, io.Discard, bad, s, 2, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("announced without a broker")
	}
}

// The service: `linkedge publisher --registry-kind sagemaker --groups ...
// --sqs-queue-url ...` announces on an event, long before its hourly poll.
func TestSageMakerPublisherService(t *testing.T) {
	a := newAWSOnLoopback(t)
	brokerURL, key, state := testFleet(t)
	a.register(t, "aps-failure", 1)
	a.SM.Approve("aps-failure", 1, "pipeline")
	s, _ := parseSageMakerFlags(t, false, "--registry-kind", "sagemaker", "--groups", "aps-failure,engine-temp",
		"--sqs-queue-url", a.Queue.QueueURL, "--presign-ttl", "2h", "--sagemaker-refresh", "1h")
	a.SM.CreateGroup("engine-temp")
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(tLog{t}, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := sagemakerRegistryFromFlags(ctx, s, s.groups, state, log)
	if err != nil {
		t.Fatal(err)
	}
	if b.Events == nil || b.Distributor.TTL != 2*time.Hour || b.Registry.Name() != "sagemaker:aps-failure,engine-temp" {
		t.Fatalf("backend %+v", b)
	}
	cfg := publisher.Config{Broker: brokerURL, KeyFile: key, StateFile: state, PollInterval: 100 * time.Millisecond,
		ArtifactListen: "127.0.0.1:0", Logger: log}
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

func TestSageMakerFlagErrors(t *testing.T) {
	newAWSOnLoopback(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		args   []string
		groups []string
		state  string
		want   string
	}{
		{args: []string{"--registry-kind", "sagemaker"}, state: "s.json", want: "--groups"},
		{args: []string{"--registry-kind", "sagemaker"}, groups: []string{"g"}, want: "--state"},
		{args: []string{"--registry-kind", "sagemaker", "--presign-ttl", "200h"}, groups: []string{"g"}, state: "s.json", want: "--presign-ttl"},
		{args: []string{"--registry-kind", "sagemaker"}, groups: []string{"bad/group"}, state: "s.json", want: "bad/group"},
	} {
		s, _ := parseSageMakerFlags(t, false, tc.args...)
		if _, err := sagemakerRegistryFromFlags(ctx, s, tc.groups, tc.state, log); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error about %s", tc.args, err, tc.want)
		}
	}
	t.Setenv("AWS_REGION", "")
	s, _ := parseSageMakerFlags(t, false, "--registry-kind", "sagemaker")
	if _, err := sagemakerRegistryFromFlags(ctx, s, []string{"g"}, "s.json", log); err == nil || !strings.Contains(err.Error(), "region") {
		t.Errorf("no region: %v", err)
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

// --endpoint-url reaches every service the SDK's way (here SageMaker, with
// its per-service variable unset).
func TestSageMakerEndpointURLFlag(t *testing.T) {
	a := newAWSOnLoopback(t)
	arn := a.register(t, "aps-failure", 1)
	t.Setenv("AWS_ENDPOINT_URL_SAGEMAKER", "")
	_, key, state := testFleet(t)
	cfg := publisher.Config{Broker: "tcp://127.0.0.1:1", KeyFile: key, StateFile: state}
	s, _ := parseSageMakerFlags(t, true, "--model-package-arn", arn, "--endpoint-url", a.SM.URL, "--region", "eu-central-1")
	_, err := runPublishSageMaker(t.Context(), io.Discard, cfg, s, 0, slog.New(slog.DiscardHandler))
	if !errors.Is(err, publisher.ErrNotApproved) || !strings.Contains(err.Error(), "PendingManualApproval") {
		t.Fatalf("%v: want the pending package's refusal, which only SageMaker could give", err)
	}
	if got := explainPublishSageMaker(err, time.Second); got != err {
		t.Fatalf("explain changed a registry refusal: %v", got)
	}
}
