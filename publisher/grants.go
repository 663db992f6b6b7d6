package publisher

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// A GrantDistributor is a [Distributor] whose URLs are capabilities that
// expire (presigned S3 URLs). The publisher service then keeps them out of
// the release: the document names the artifact's stable location with
// "grant": true, and a truck asks for a grant (a fresh URL, signed and
// bound to it) when it downloads. The release is then signed again only as
// its own release_ttl runs out, not before every URL expires, which spares
// every truck a new document every few hours (docs/publisher.md, "Download
// grants").
type GrantDistributor interface {
	Distributor
	// StableURL is where v's artifact lives, without credentials. It need
	// not download anything by itself.
	StableURL(ctx context.Context, v Version) (string, error)
}

// Grant limits. A truck asks once per download attempt (and again only
// when its grant expired or its download was refused): a stable and a
// canary artifact, or two approvals in quick succession, make a burst of
// two or three. So each truck has a bucket of grantBurst answers that
// refills one per grantInterval; more is a truck gone wrong or hostile,
// and each answer costs a presign and a signature.
const (
	grantBurst    = 3
	grantInterval = 5 * time.Second
	grantQueue    = 256
	grantTimeout  = 10 * time.Second
)

// Results of grants_total.
const (
	grantGranted     = "granted"
	grantRefused     = "refused"
	grantRateLimited = "rate_limited"
	grantBusy        = "busy"
	grantFailed      = "failed"
)

// grantKey names an approved artifact.
type grantKey struct{ model, sha256 string }

type grantRequest struct {
	truck string
	data  []byte
}

// grantServer answers trucks' grant requests. Requests arrive from the
// session's paho goroutine into a bounded queue (a full queue drops them:
// the truck asks again after its retry delay); one goroutine, run, answers
// them in order.
type grantServer struct {
	key     ed25519.PrivateKey
	dist    GrantDistributor
	send    func(ctx context.Context, topic string, doc []byte) error
	log     *slog.Logger
	results *prometheus.CounterVec
	now     func() time.Time

	// approved is the registry's approved versions by model and digest,
	// replaced after every registry read: only those get grants.
	approved atomic.Pointer[map[grantKey]Version]
	reqs     chan grantRequest

	// buckets are the trucks' rate limits; only run touches them.
	buckets map[string]*grantBucket

	dropMu sync.Mutex
	drops  int // requests dropped since the last warning
}

func newGrantServer(key ed25519.PrivateKey, dist GrantDistributor, send func(context.Context, string, []byte) error,
	log *slog.Logger, reg prometheus.Registerer) (*grantServer, error) {
	g := &grantServer{key: key, dist: dist, send: send, log: log, now: time.Now,
		reqs: make(chan grantRequest, grantQueue), buckets: map[string]*grantBucket{},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkedge_publisher_grants_total",
			Help: "Trucks' download grant requests, by result: granted, refused (malformed, or not an approved artifact), rate_limited, busy (queue full), failed (presign, sign or publish).",
		}, []string{"result"}),
	}
	if err := reg.Register(g.results); err != nil {
		return nil, fmt.Errorf("publisher: register metrics: %w", err)
	}
	for _, r := range []string{grantGranted, grantRefused, grantRateLimited, grantBusy, grantFailed} {
		g.results.WithLabelValues(r)
	}
	return g, nil
}

// setApproved replaces the view of approved artifacts from a registry read.
func (g *grantServer) setApproved(vs []Version) {
	m := make(map[grantKey]Version)
	for _, v := range vs {
		if v.Status == StatusApproved {
			m[grantKey{v.Model, v.Artifact.SHA256}] = v
		}
	}
	g.approved.Store(&m)
}

// offer queues a request from the session; it never blocks.
func (g *grantServer) offer(topic string, data []byte) {
	truck, ok := topics.ParseTruckGrantRequest(topic)
	if !ok {
		g.results.WithLabelValues(grantRefused).Inc()
		return
	}
	select {
	case g.reqs <- grantRequest{truck: truck, data: data}:
	default:
		g.results.WithLabelValues(grantBusy).Inc()
		g.dropMu.Lock()
		g.drops++
		g.dropMu.Unlock()
	}
}

// run answers requests until ctx ends.
func (g *grantServer) run(ctx context.Context) {
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			for t, b := range g.buckets {
				if b.full(g.now()) {
					delete(g.buckets, t)
				}
			}
			g.dropMu.Lock()
			if g.drops > 0 {
				g.log.Warn("dropped download grant requests: more arrived than the publisher could answer; the trucks ask again", "dropped", g.drops)
				g.drops = 0
			}
			g.dropMu.Unlock()
		case r := <-g.reqs:
			result, err := g.answer(ctx, r)
			g.results.WithLabelValues(result).Inc()
			switch {
			case err == nil:
			case result == grantFailed:
				g.log.Warn("cannot answer a download grant request; the truck asks again", "truck", r.truck, "err", err)
			default:
				g.log.Info("download grant request refused", "truck", r.truck, "result", result, "err", err)
			}
		}
	}
}

// answer checks one request and sends the grant.
func (g *grantServer) answer(ctx context.Context, r grantRequest) (string, error) {
	now := g.now()
	b := g.buckets[r.truck]
	if b == nil {
		b = &grantBucket{tokens: grantBurst, at: now}
		g.buckets[r.truck] = b
	}
	if !b.take(now) {
		return grantRateLimited, fmt.Errorf("more than %d requests, then one per %s", grantBurst, grantInterval)
	}
	req, err := release.ParseGrantRequest(r.data)
	if err != nil {
		return grantRefused, err
	}
	var v Version
	ok := false
	if approved := g.approved.Load(); approved != nil {
		v, ok = (*approved)[grantKey{req.Model, req.SHA256}]
	}
	if !ok {
		return grantRefused, fmt.Errorf("%s artifact %s is not an approved version in the registry (as last read)", req.Model, req.SHA256)
	}
	ctx, cancel := context.WithTimeout(ctx, grantTimeout)
	defer cancel()
	url, expires, err := g.dist.URL(ctx, v)
	if err != nil {
		return grantFailed, fmt.Errorf("download url for %s version %d: %w", v.Model, v.Version, err)
	}
	issued := now.UTC().Truncate(time.Millisecond)
	if expires.IsZero() || expires.Sub(issued) > release.MaxGrantLifetime {
		expires = issued.Add(release.MaxGrantLifetime)
	}
	doc, err := release.SignGrant(&release.Grant{Schema: release.GrantSchema, Truck: r.truck, Model: v.Model, SHA256: v.Artifact.SHA256,
		URL: url, IssuedAt: issued, ExpiresAt: expires.UTC().Truncate(time.Millisecond)}, g.key)
	if err != nil {
		return grantFailed, err
	}
	if err := g.send(ctx, topics.TruckGrant(r.truck), doc); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return grantFailed, err
		}
		return grantFailed, fmt.Errorf("send the grant: %w", err)
	}
	g.log.Debug("download grant sent", "truck", r.truck, "model", v.Model, "version", v.Version, "expires_at", expires)
	return grantGranted, nil
}

// grantBucket is one truck's token bucket.
type grantBucket struct {
	tokens float64
	at     time.Time // of the last refill
}

func (b *grantBucket) refill(now time.Time) {
	b.tokens = min(grantBurst, b.tokens+now.Sub(b.at).Seconds()/grantInterval.Seconds())
	b.at = now
}

// take spends a token if there is one.
func (b *grantBucket) take(now time.Time) bool {
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full reports whether the bucket has refilled, so forgetting it changes
// nothing.
func (b *grantBucket) full(now time.Time) bool {
	b.refill(now)
	return b.tokens >= grantBurst
}
