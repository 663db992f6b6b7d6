package publisher

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// expiringDist is a GrantDistributor whose URLs carry a counter, as
// presigned URLs carry a signature: every call gives a different URL. (The
// real one, s3dist.Presigner against an S3 server that checks signatures
// and expiry, runs in internal/fleetsim's SageMaker end-to-end test.)
type expiringDist struct {
	base  string
	calls int
}

func (d *expiringDist) URL(_ context.Context, v Version) (string, time.Time, error) {
	d.calls++
	return fmt.Sprintf("%s/%s?sig=%d", d.base, v.Artifact.SHA256, d.calls), time.Now().Add(time.Hour), nil
}

func (d *expiringDist) StableURL(_ context.Context, v Version) (string, error) {
	return d.base + "/" + v.Artifact.SHA256, nil
}

// grantClient is a truck's side of grants: a paho client on the truck's
// grant topic.
type grantClient struct {
	t      *testing.T
	truck  string
	client paho.Client
	got    chan []byte
}

func newGrantClient(t *testing.T, brokerAddr, truck string) *grantClient {
	t.Helper()
	g := &grantClient{t: t, truck: truck, got: make(chan []byte, 16)}
	g.client = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("grant-" + truck).SetAutoReconnect(false))
	if tok := g.client.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	tok := g.client.Subscribe(topics.TruckGrant(truck), topics.GrantQoS, func(_ paho.Client, m paho.Message) { g.got <- bytes.Clone(m.Payload()) })
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { g.client.Disconnect(0) })
	return g
}

func (g *grantClient) ask(payload string) {
	g.t.Helper()
	if tok := g.client.Publish(topics.TruckGrantRequest(g.truck), topics.GrantQoS, false, payload); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		g.t.Fatalf("publish: %v", tok.Error())
	}
}

func (g *grantClient) next(within time.Duration) []byte {
	select {
	case d := <-g.got:
		return d
	case <-time.After(within):
		return nil
	}
}

func TestGrants(t *testing.T) {
	e := newEnv(t)
	v1 := e.add("aps", 1, true)
	v2 := e.add("aps", 2, false)
	b := startBroker(t, "127.0.0.1:0")
	cfg := e.config(b.Addr())
	dist := &expiringDist{base: "https://bucket.example/aps"}
	cfg.Distributor = dist
	sub := subscribe(t, b.Addr(), "aps")
	p := start(t, cfg)

	// The release names the stable location and asks for grants.
	rel := e.verify(sub.next())
	sha1 := rel.Stable.Artifact.SHA256
	if a := rel.Stable.Artifact; !a.Grant || a.URL != "https://bucket.example/aps/"+sha1 {
		t.Fatalf("release artifact %+v; want the stable location and grant true", a)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(v1)); got != sha1 {
		t.Fatalf("release sha256 %s, bundle %s", sha1, got)
	}
	sha2 := fmt.Sprintf("%x", sha256.Sum256(v2))

	verifier := &release.Verifier{Keys: []ed25519.PublicKey{e.pub}}
	truck := newGrantClient(t, b.Addr(), "truck-1")
	other := newGrantClient(t, b.Addr(), "truck-2")
	results := p.grants.results

	truck.ask(`{"model":"aps","sha256":"` + sha1 + `"}`)
	doc := truck.next(waitFor)
	if doc == nil {
		t.Fatal("no grant")
	}
	g, err := verifier.VerifyGrant(doc, "truck-1", sha1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.URL, "https://bucket.example/aps/"+sha1+"?sig=") {
		t.Fatalf("grant url %s", g.URL)
	}
	if _, err := verifier.VerifyGrant(doc, "truck-2", sha1); err == nil {
		t.Fatal("truck-2 accepted truck-1's grant")
	}
	if d := other.next(200 * time.Millisecond); d != nil {
		t.Fatalf("truck-2 received %s", d)
	}

	// Refused: an artifact that is not approved, and malformed requests
	// (they count against the bucket of three too). Nothing is sent; the
	// truck's wait ends and it asks again later.
	third := newGrantClient(t, b.Addr(), "truck-3")
	for _, req := range []string{`{"model":"aps","sha256":"` + sha2 + `"}`, `not json`, `{"model":"aps","sha256":"` + sha1 + `","truck":"truck-2"}`} {
		third.ask(req)
	}
	if d := third.next(500 * time.Millisecond); d != nil {
		t.Fatalf("a refused request got %s", d)
	}
	waitMetric(t, results.WithLabelValues(grantRefused), 3)

	// Once v2 is approved, it is granted too.
	e.approve("aps", 2)
	e.verify(sub.next())
	other.ask(`{"model":"aps","sha256":"` + sha2 + `"}`)
	if d := other.next(waitFor); d == nil {
		t.Fatal("no grant for v2 once approved")
	} else if _, err := verifier.VerifyGrant(d, "truck-2", sha2); err != nil {
		t.Fatal(err)
	}

	// A burst: truck-1 has two answers left in its bucket of three, then
	// one per 5 s.
	for range 5 {
		truck.ask(`{"model":"aps","sha256":"` + sha1 + `"}`)
	}
	waitMetric(t, results.WithLabelValues(grantRateLimited), 2)
	if n := value(results.WithLabelValues(grantGranted)); n < 4 || n > 5 {
		t.Fatalf("%v granted; want 2 before the burst and 2 of it (3 if the machine stalled past a refill)", n)
	}
}

func waitMetric(t *testing.T, c prometheus.Collector, atLeast float64) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for value(c) < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("metric at %v, want at least %v", value(c), atLeast)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
