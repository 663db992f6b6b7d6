package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	sm "github.com/aws/aws-sdk-go-v2/service/sagemaker"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher/s3dist"
	"github.com/linkedge/linkedge/publisher/s3dist/s3disttest"
	"github.com/linkedge/linkedge/publisher/sagemaker"
	"github.com/linkedge/linkedge/publisher/sagemaker/sagemakertest"
	"github.com/linkedge/linkedge/publisher/sagemaker/sqstest"
)

// sageMakerCloud is the cloud side of a SageMaker user, on loopback: the
// Model Registry API, S3, the SQS queue EventBridge feeds, and LinkEdge's
// publisher with the SageMaker backend, presigned URLs and (in event mode)
// the event consumer.
type sageMakerCloud struct {
	t     *testing.T
	f     *Fleet
	SM    *sagemakertest.Server
	S3    *s3disttest.Server
	Queue *sqstest.Server
	dir   string

	mu        sync.Mutex
	announced []announcement

	stopEvents context.CancelFunc
	eventsDone chan error
}

type announcement struct {
	version, serial int64
	at              time.Time
}

// cloudMode is how the publisher learns of approvals.
type cloudMode struct {
	events  bool          // SQS events trigger refreshes
	refresh time.Duration // registry refresh interval (polling)
	ttl     time.Duration // presigned URL lifetime
}

func newSageMakerCloud(t *testing.T, f *Fleet) *sageMakerCloud {
	c := &sageMakerCloud{t: t, f: f, SM: sagemakertest.New(t), S3: s3disttest.New(t), Queue: sqstest.New(t, "linkedge-model-events"), dir: t.TempDir()}
	c.SM.CreateGroup("aps-failure")
	return c
}

// start runs the publisher (and the event consumer) in mode. The state and
// artifact cache files persist across starts, as on a real host.
func (c *sageMakerCloud) start(ctx context.Context, m cloudMode) {
	c.t.Helper()
	cfg := s3disttest.Config()
	log := c.f.opts.Logger.With("part", "sagemaker")
	s3c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(c.S3.URL); o.UsePathStyle = true })
	reg, err := sagemaker.New(sagemaker.Config{
		Client:    sm.NewFromConfig(cfg, func(o *sm.Options) { o.BaseEndpoint = aws.String(c.SM.URL) }),
		Artifacts: &s3dist.Reader{Client: s3c}, Groups: []string{"aps-failure"},
		RefreshInterval: m.refresh, CacheFile: filepath.Join(c.dir, "artifacts.json"), Logger: log,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	dist := &s3dist.Presigner{Client: s3.NewPresignClient(s3c), TTL: m.ttl, Credentials: cfg.Credentials}
	if err := dist.Check(); err != nil {
		c.t.Fatal(err)
	}
	if err := c.f.StartPublisherWith(ctx, PublisherOptions{Registry: reg, Distributor: dist, StateFile: filepath.Join(c.dir, "publisher-state.json"),
		PollInterval: 100 * time.Millisecond, OnAnnounce: c.onAnnounce}); err != nil {
		c.t.Fatal(err)
	}
	if m.events {
		ev := &sagemaker.Events{Client: sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(c.Queue.URL) }),
			QueueURL: c.Queue.QueueURL, Registry: reg, Wait: 2 * time.Second, Logger: log}
		ectx, cancel := context.WithCancel(ctx)
		c.stopEvents, c.eventsDone = cancel, make(chan error, 1)
		go func() { c.eventsDone <- ev.Run(ectx) }()
	}
}

// stop stops the publisher and the event consumer.
func (c *sageMakerCloud) stop() {
	c.t.Helper()
	if c.stopEvents != nil {
		c.stopEvents()
		if err := <-c.eventsDone; err != nil {
			c.t.Errorf("events: %v", err)
		}
		c.stopEvents = nil
	}
	if err := c.f.StopPublisher(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *sageMakerCloud) onAnnounce(model string, version, serial int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.announced = append(c.announced, announcement{version: version, serial: serial, at: time.Now()})
}

func (c *sageMakerCloud) announcements() []announcement {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]announcement(nil), c.announced...)
}

// register uploads a bundle as a training pipeline does and registers it
// (pending manual approval); it returns the version.
func (c *sageMakerCloud) register(data []byte) int32 {
	v := int32(1)
	for {
		if _, ok := c.SM.Get("aps-failure", v); !ok {
			break
		}
		v++
	}
	key := fmt.Sprintf("aps-failure/%d/model.tar.gz", v)
	c.S3.Put(c.t, "linkedge-ml", key, data)
	return c.SM.Register("aps-failure", "s3://linkedge-ml/"+key).Version
}

// decide approves or rejects a version as a reviewer in Studio does; with
// event true, EventBridge delivers the state change to the queue.
func (c *sageMakerCloud) decide(version int32, approve, event bool) {
	status := sagemakertest.Approved
	if approve {
		c.SM.Approve("aps-failure", version, "arn:aws:iam::123456789012:user/jane")
	} else {
		c.SM.Reject("aps-failure", version, "arn:aws:iam::123456789012:user/jane")
		status = sagemakertest.Rejected
	}
	if event {
		c.Queue.Send(modelPackageEvent("aps-failure", version, status))
	}
}

func modelPackageEvent(group string, version int32, status string) string {
	arn := sagemakertest.ARN(group, version)
	return fmt.Sprintf(`{"version":"0","id":"e2e-%d-%s","detail-type":"SageMaker Model Package State Change","source":"aws.sagemaker",`+
		`"account":"123456789012","time":"%s","region":"eu-west-1","resources":["%s"],"detail":{"ModelPackageGroupName":"%s",`+
		`"ModelPackageVersion":%d,"ModelPackageArn":"%s","ModelApprovalStatus":"%s","ModelPackageStatus":"Completed"}}`,
		version, status, time.Now().UTC().Format(time.RFC3339), arn, group, version, arn, status)
}

// TestSageMakerEndToEnd drives the SageMaker user's story on real parts:
// the real AWS SDK clients against wire-compatible SageMaker, S3 (gofakes3)
// and SQS servers, the publisher announcing over MQTT, and trucks
// downloading presigned URLs with plain HTTP and running the models in
// ONNX Runtime.
func TestSageMakerEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var logger *slog.Logger
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 2, Probation: 300 * time.Millisecond, HTTPClients: -1,
		SensorInterval: 100 * time.Millisecond, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t1, t2 := f.Trucks[0], f.Trucks[1]
	// Time is compressed in this test (2 s presigned URLs below), so the
	// trucks' clock-skew allowance is compressed too: 5 minutes against a
	// day-long URL is 100 ms against 2 s. (With the full 5 minutes, a
	// truck coming back accepts a queued document whose 2 s URL died long
	// ago, gets 403, and gives the version up for good: see docs/aws.md,
	// "Expired URLs and the truck".)
	for _, tr := range f.Trucks {
		if err := tr.RestartWith(ctx, func(c *edgeclient.Config) { c.MaxClockSkew = 100 * time.Millisecond }); err != nil {
			t.Fatal(err)
		}
	}
	c := newSageMakerCloud(t, f)
	defer c.stop()
	wait := func(what string, cond func() bool) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		defer wcancel()
		if err := WaitFor(wctx, what, cond); err != nil {
			for _, tr := range f.Trucks {
				t.Logf("%s: %+v", tr.ID, tr.Agent.Status())
			}
			for _, p := range c.announcements() {
				t.Logf("announced v%d serial %d at %s", p.version, p.serial, p.at.Format(time.StampMilli))
			}
			t.Fatal(err)
		}
	}
	// approveAndMeasure approves version and logs how long until the first
	// truck serves it and until every truck given has committed it.
	approveAndMeasure := func(mode string, version int32, event bool, trucks ...*Truck) time.Duration {
		t.Helper()
		start := time.Now()
		c.decide(version, true, event)
		wait(fmt.Sprintf("v%d served", version), func() bool {
			for _, tr := range trucks {
				if tr.Version() == int64(version) {
					return true
				}
			}
			return false
		})
		first := time.Since(start)
		wait(fmt.Sprintf("v%d committed", version), func() bool { return all(trucks, int64(version)) })
		all := time.Since(start)
		t.Logf("%s: approval of v%d → first truck serving %s, %d trucks committed %s", mode, version,
			first.Round(time.Millisecond), len(trucks), all.Round(time.Millisecond))
		return first
	}

	// Event mode: the registry's own polling is hourly, so only the
	// EventBridge events move anything.
	events := cloudMode{events: true, refresh: time.Hour, ttl: time.Hour}
	c.start(ctx, events)
	v1 := c.register(apsmodels.V1())
	eventTimes := []time.Duration{approveAndMeasure("event mode", v1, true, t1, t2)}
	v2 := c.register(apsmodels.V2())
	if got := f.Trucks[0].Version(); got != 1 {
		t.Fatalf("a registered, unapproved version moved the fleet to v%d", got)
	}
	eventTimes = append(eventTimes, approveAndMeasure("event mode", v2, true, t1, t2))

	// Reject v2: the newest still-approved version, v1, comes back.
	start := time.Now()
	c.decide(v2, false, true)
	wait("v1 after rejecting v2", func() bool { return all(f.Trucks, 1) })
	t.Logf("event mode: rejection of v2 → both trucks back on v1 %s", time.Since(start).Round(time.Millisecond))

	// Restart the publisher with nothing new: nothing is announced again.
	topic := topics.ModelRelease("aps-failure")
	before, serialBefore := len(c.announcements()), retainedSerial(t, f.BrokerURL, topic)
	c.stop()
	c.start(ctx, events)
	time.Sleep(2 * time.Second) // 20 publisher polls
	if n, s := len(c.announcements()), retainedSerial(t, f.BrokerURL, topic); n != before || s != serialBefore {
		t.Fatalf("a restart without changes announced again: %d → %d announcements, serial %d → %d", before, n, serialBefore, s)
	}
	// An approval while the publisher is down is not lost: its event waits
	// in the queue.
	c.stop()
	c.decide(v2, true, true)
	if c.Queue.Pending() != 1 {
		t.Fatalf("%d messages queued", c.Queue.Pending())
	}
	c.start(ctx, events)
	wait("v2 after a restart", func() bool { return all(f.Trucks, 2) })
	if got := c.announcements()[before:]; len(got) != 1 || got[0].version != 2 {
		t.Fatalf("announcements after the restart: %+v, want exactly v2 once", got)
	}

	// Polling mode: no events, the registry is read every second.
	c.stop()
	c.start(ctx, cloudMode{refresh: time.Second, ttl: time.Hour})
	v3 := c.register(rebundle(t, apsmodels.V1(), 3))
	pollTime := approveAndMeasure("polling mode (1s refresh)", v3, false, t1, t2)
	t.Logf("approval → first truck serving: event mode %v, polling mode (1s) %v", roundAll(eventTimes), pollTime.Round(time.Millisecond))

	// Presigned URLs that live 2 s: truck 2 is offline far longer. The
	// release names the artifact's stable location with "grant": true, so
	// it is not signed again as URLs expire; each truck asks for a fresh,
	// signed URL of its own when it downloads, so truck 2 still updates
	// when it is back.
	c.stop()
	c.start(ctx, cloudMode{events: true, refresh: time.Hour, ttl: 2 * time.Second})
	t2.Link.Cut()
	cutAt := time.Now()
	wait("truck 2 offline", func() bool { return !t2.Agent.Status().Online })
	v4 := c.register(rebundle(t, apsmodels.V2(), 4))
	approveAndMeasure("event mode, 2s URLs", v4, true, t1)
	serial, location, grant := retainedDoc(t, f.BrokerURL, topic)
	if !grant || strings.Contains(location, "X-Amz-") {
		t.Fatalf("the release names %s with grant %v; want the stable location and grant true", location, grant)
	}
	// The location alone downloads nothing from the private bucket.
	resp, err := http.Get(location)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the release's location answered %d %s without a signature; want 403", resp.StatusCode, body)
	}
	resigned := len(c.announcements())
	time.Sleep(5 * time.Second)
	if n, s := len(c.announcements())-resigned, retainedSerial(t, f.BrokerURL, topic); n != 0 || s != serial {
		t.Fatalf("%d re-signs in 5 s of 2 s URLs (serial %d → %d); want the release left alone", n, serial, s)
	}
	start = time.Now()
	t2.Link.Restore()
	wait("truck 2 catches up with v4", func() bool { return all([]*Truck{t2}, 4) })
	t.Logf("truck 2, offline for %s (2s URLs, the release unchanged), committed v4 %s after reconnecting",
		start.Sub(cutAt).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if st := t2.Agent.Status(); st.Version != 4 {
		t.Fatalf("truck 2: %+v", st)
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// retainedDoc decodes the retained release's serial, stable URL and grant
// flag.
func retainedDoc(t *testing.T, broker, topic string) (serial int64, url string, grant bool) {
	t.Helper()
	var doc struct {
		Serial int64 `json:"serial"`
		Stable struct {
			Artifact struct {
				URL   string `json:"url"`
				Grant bool   `json:"grant"`
			} `json:"artifact"`
		} `json:"stable"`
	}
	if err := json.Unmarshal(retained(t, broker, topic), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Serial, doc.Stable.Artifact.URL, doc.Stable.Artifact.Grant
}

func retainedSerial(t *testing.T, broker, topic string) int64 {
	s, _, _ := retainedDoc(t, broker, topic)
	return s
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
