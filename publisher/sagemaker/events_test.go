package sagemaker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher/sagemaker"
	"github.com/linkedge/linkedge/publisher/sagemaker/sagemakertest"
	"github.com/linkedge/linkedge/publisher/sagemaker/sqstest"
)

// eventBody is an EventBridge event as EventBridge delivers it to SQS.
func eventBody(group string, version int, status string) string {
	return fmt.Sprintf(`{"version":"0","id":"6a7e8feb-b491-4cf7-a9f1-bf3703467718","detail-type":"SageMaker Model Package State Change",
"source":"aws.sagemaker","account":"123456789012","time":"2026-06-01T12:00:00Z","region":"eu-west-1",
"resources":["%[4]s"],
"detail":{"ModelPackageGroupName":"%[1]s","ModelPackageVersion":%[2]d,"ModelPackageArn":"%[4]s",
"ModelPackageName":"%[1]s","CreationTime":1780315200000,"ModelApprovalStatus":"%[3]s","ModelPackageStatus":"Completed",
"InferenceSpecification":{"Containers":[{"Image":"x","ModelDataUrl":"s3://b/k"}]}}}`,
		group, version, status, sagemakertest.ARN(group, int32(version)))
}

func TestParseMessage(t *testing.T) {
	direct := eventBody("aps-failure", 3, "Approved")
	sns, _ := json.Marshal(map[string]string{"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": direct})
	for _, tc := range []struct {
		name string
		body string
		want sagemaker.Event
		err  error
	}{
		{name: "eventbridge", body: direct, want: sagemaker.Event{Group: "aps-failure", Version: 3, Approval: "Approved",
			ARN: sagemakertest.ARN("aps-failure", 3), Time: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}},
		{name: "through sns", body: string(sns), want: sagemaker.Event{Group: "aps-failure", Version: 3, Approval: "Approved",
			ARN: sagemakertest.ARN("aps-failure", 3), Time: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}},
		{name: "minimal", body: `{"detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageGroupName":"g"}}`,
			want: sagemaker.Event{Group: "g"}},
		{name: "other detail type", body: `{"detail-type":"SageMaker Training Job State Change","source":"aws.sagemaker","detail":{}}`, err: sagemaker.ErrOtherEvent},
		{name: "other source", body: `{"detail-type":"SageMaker Model Package State Change","source":"my.app","detail":{"ModelPackageGroupName":"g"}}`, err: sagemaker.ErrOtherEvent},
		{name: "not json", body: `hello`, err: sagemaker.ErrMalformedEvent},
		{name: "not an object", body: `[1,2]`, err: sagemaker.ErrMalformedEvent},
		{name: "no detail-type", body: `{"detail":{"ModelPackageGroupName":"g"}}`, err: sagemaker.ErrMalformedEvent},
		{name: "no detail", body: `{"detail-type":"SageMaker Model Package State Change"}`, err: sagemaker.ErrMalformedEvent},
		{name: "null detail", body: `{"detail-type":"SageMaker Model Package State Change","detail":null}`, err: sagemaker.ErrMalformedEvent},
		{name: "no group", body: `{"detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageVersion":1}}`, err: sagemaker.ErrMalformedEvent},
		{name: "group not an id", body: `{"detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageGroupName":"a/#"}}`, err: sagemaker.ErrMalformedEvent},
		{name: "version a string", body: `{"detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageGroupName":"g","ModelPackageVersion":"3"}}`, err: sagemaker.ErrMalformedEvent},
		{name: "version zero", body: `{"detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageGroupName":"g","ModelPackageVersion":0}}`, err: sagemaker.ErrMalformedEvent},
		{name: "version fraction", body: `{"detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageGroupName":"g","ModelPackageVersion":1.5}}`, err: sagemaker.ErrMalformedEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sagemaker.ParseMessage([]byte(tc.body))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %+v, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(eventBody("aps-failure", 3, "Approved"))
	f.Add(`{"Type":"Notification","Message":"{\"detail-type\":\"SageMaker Model Package State Change\",\"detail\":{\"ModelPackageGroupName\":\"g\"}}"}`)
	f.Add(`{"detail-type":"SageMaker Model Package State Change","detail":{"ModelPackageGroupName":"g","ModelPackageVersion":1e3}}`)
	f.Add(`{"detail-type":null}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, body string) {
		e, err := sagemaker.ParseMessage([]byte(body))
		if err != nil {
			if !errors.Is(err, sagemaker.ErrMalformedEvent) && !errors.Is(err, sagemaker.ErrOtherEvent) {
				t.Fatalf("unclassified error %v", err)
			}
			if e != (sagemaker.Event{}) {
				t.Fatalf("error with an event: %+v", e)
			}
			return
		}
		// Anything accepted names a group that is a valid model id, so it
		// can go into a topic, and a version that is absent or positive.
		if topics.ValidID(e.Group) != nil || e.Version < 0 {
			t.Fatalf("accepted %+v", e)
		}
	})
}

// Event mode: an approval reaches Versions as soon as its event is
// received, long before the next poll; every message is deleted,
// malformed ones and others included.
func TestEventsTriggerRefresh(t *testing.T) {
	e := newEnv(t)
	q := sqstest.New(t, "linkedge-events")
	p := e.register("aps-failure")
	e.SM.Approve("aps-failure", p.Version, "alice")
	r := e.registry(nil, "aps-failure") // polls only hourly
	if got, err := versionsOf(t, r); err != nil || got["aps-failure"].Version != 1 {
		t.Fatalf("%v %v", got, err)
	}
	var mu sync.Mutex
	var seen []sagemaker.Event
	logs := &lockedBuffer{}
	ev := &sagemaker.Events{Client: sqsClient(q), QueueURL: q.QueueURL, Registry: r, Wait: time.Second,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		OnEvent: func(e sagemaker.Event) { mu.Lock(); seen = append(seen, e); mu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ev.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	// Noise first: none of it triggers anything, all of it is deleted.
	q.Send("not json at all")
	q.Send(`{"detail-type":"SageMaker Endpoint State Change","source":"aws.sagemaker","detail":{}}`)
	q.Send(eventBody("some-other-group", 1, "Approved"))
	waitFor(t, "noise deleted", func() bool { return q.Deleted() == 3 })
	select {
	case <-r.Notify():
		t.Fatal("noise triggered a refresh")
	default:
	}
	// An unwatched group's event is said at Info (a mistyped --groups would
	// be silent at Debug), naming the group and the fix.
	if out := logs.String(); !strings.Contains(out, "level=INFO") || !strings.Contains(out, "group=some-other-group") || !strings.Contains(out, "--groups") {
		t.Errorf("the event of an unwatched group was not logged at Info with the group and the fix:\n%s", out)
	}

	p2 := e.register("aps-failure")
	e.SM.Approve("aps-failure", p2.Version, "alice")
	start := time.Now()
	q.Send(eventBody("aps-failure", 2, "Approved"))
	select {
	case <-r.Notify():
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	got, err := versionsOf(t, r)
	if err != nil || got["aps-failure"].Version != 2 {
		t.Fatalf("after the event: %v %v", got, err)
	}
	t.Logf("event to new version in Versions: %s", time.Since(start).Round(time.Millisecond))
	waitFor(t, "event deleted", func() bool { return q.Deleted() == 4 && q.Pending() == 0 })
	mu.Lock()
	if len(seen) != 1 || seen[0].Version != 2 {
		t.Fatalf("events seen: %+v", seen)
	}
	mu.Unlock()

	// The queue fails for a while (deleted, or no permission): the consumer
	// retries and resumes.
	q.Fail(sqstest.Fault{Op: "ReceiveMessage", Code: "QueueDoesNotExist", QueryCode: "AWS.SimpleQueueService.NonExistentQueue;Sender", Times: 3})
	e.SM.Reject("aps-failure", 2, "bob")
	q.Send(eventBody("aps-failure", 2, "Rejected"))
	select {
	case <-r.Notify():
	case <-time.After(10 * time.Second):
		t.Fatal("no notification after the queue came back")
	}
	if got, err := versionsOf(t, r); err != nil || got["aps-failure"].Version != 1 {
		t.Fatalf("after the rejection event: %v %v", got, err)
	}
}

func TestEventsConfig(t *testing.T) {
	e := newEnv(t)
	q := sqstest.New(t, "q")
	r := e.registry(nil, "g")
	for _, ev := range []*sagemaker.Events{
		{QueueURL: q.QueueURL, Registry: r},
		{Client: sqsClient(q), Registry: r},
		{Client: sqsClient(q), QueueURL: q.QueueURL},
		{Client: sqsClient(q), QueueURL: q.QueueURL, Registry: r, Wait: 30 * time.Second},
	} {
		if err := ev.Run(t.Context()); !errors.Is(err, sagemaker.ErrInvalidConfig) {
			t.Errorf("%+v: %v", ev, err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockedBuffer is a log destination safe for the consumer's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
