package edgeclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/download"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// Grant timings. grantWait is how long a download waits for the
// publisher's answer before it counts as a transient failure (retried with
// the update's backoff); grantMargin is how much life a cached grant must
// have left to be used, so that a download does not start on a URL about
// to die.
const (
	grantWait   = 20 * time.Second
	grantMargin = time.Minute
	// maxGrants bounds the grants kept (a truck downloads one or two
	// artifacts at a time: stable, or a canary).
	maxGrants = 4
)

// errNoGrant: the publisher did not answer a grant request in time.
var errNoGrant = errors.New("no download grant from the publisher")

// grants gets and keeps download grants (release.Grant) for artifacts
// whose release says "grant": it asks on the truck's grant-request topic
// and takes the signed answers from its grant topic.
type grants struct {
	truck    string
	verifier *release.Verifier
	// publish sends a request; false when the fleet link is down.
	publish func(topic string, payload []byte) bool
	log     *slog.Logger
	wait    time.Duration // for an answer; grantWait

	mu      sync.Mutex
	kept    map[string]*release.Grant  // by artifact sha256
	waiting map[string][]chan struct{} // closed when a grant for the sha256 arrives
}

func newGrants(truck string, v *release.Verifier, publish func(string, []byte) bool, log *slog.Logger) *grants {
	return &grants{truck: truck, verifier: v, publish: publish, log: log, wait: grantWait,
		kept: map[string]*release.Grant{}, waiting: map[string][]chan struct{}{}}
}

// deliver takes a message from the grant topic. Only a grant the publisher
// signed for this truck, for an artifact a download waits for, is kept.
func (g *grants) deliver(data []byte) {
	var peek struct {
		SHA256 string `json:"sha256"`
	}
	if len(data) > release.MaxGrantSize || json.Unmarshal(data, &peek) != nil {
		g.log.Warn("ignored a message on the grant topic: not a grant document", "bytes", len(data))
		return
	}
	g.mu.Lock()
	_, wanted := g.waiting[peek.SHA256]
	g.mu.Unlock()
	if !wanted {
		g.log.Debug("ignored a download grant nothing waits for", "sha256", peek.SHA256)
		return
	}
	gr, err := g.verifier.VerifyGrant(data, g.truck, peek.SHA256)
	if err != nil {
		g.log.Warn("refused a download grant", "err", err)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.kept) >= maxGrants {
		clear(g.kept)
	}
	g.kept[gr.SHA256] = gr
	for _, ch := range g.waiting[gr.SHA256] {
		close(ch)
	}
	delete(g.waiting, gr.SHA256)
}

// url returns a download URL for t's artifact: a kept grant's with enough
// life left, or a new one asked for and awaited (at most grantWait).
func (g *grants) url(ctx context.Context, t update.Target) (string, error) {
	sha := t.Artifact.SHA256
	if u := g.valid(sha); u != "" {
		return u, nil
	}
	ch := make(chan struct{})
	g.mu.Lock()
	g.waiting[sha] = append(g.waiting[sha], ch)
	g.mu.Unlock()
	defer g.unwait(sha, ch)
	req, _ := json.Marshal(release.GrantRequest{Model: t.Model, SHA256: sha})
	if !g.publish(topics.TruckGrantRequest(g.truck), req) {
		return "", update.Mark(update.Interrupted, fmt.Errorf("%w: the fleet link is down; asking again once it is up", errNoGrant))
	}
	g.log.Info("asked the publisher for a download grant", "version", t.Version, "sha256", sha)
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case <-ch:
		if u := g.valid(sha); u != "" {
			return u, nil
		}
		return "", update.Mark(update.Transient, fmt.Errorf("%w: the grant came with too little life left; check the truck's clock", errNoGrant))
	case <-timer.C:
		return "", update.Mark(update.Transient, fmt.Errorf("%w within %s for %s; check that the publisher service runs (it answers grant requests) and that the broker lets it publish on %s",
			errNoGrant, g.wait, sha, topics.TruckGrant(g.truck)))
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// valid returns the URL of the kept grant for sha if it has enough life
// left by the truck's clock (grantMargin, or half its lifetime if that is
// shorter), else "".
func (g *grants) valid(sha string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	gr := g.kept[sha]
	if gr == nil || time.Until(gr.ExpiresAt) < min(grantMargin, gr.ExpiresAt.Sub(gr.IssuedAt)/2) {
		return ""
	}
	return gr.URL
}

// forget drops the grant for sha, after its URL was refused.
func (g *grants) forget(sha string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.kept, sha)
}

func (g *grants) unwait(sha string, ch chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	list := g.waiting[sha]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(g.waiting, sha)
	} else {
		g.waiting[sha] = list
	}
}

// fetch wraps a FetchFunc: for an artifact that needs a grant it downloads
// from the granted URL instead of the release's, and a URL the server
// refuses (401, 403: expired, or the truck's clock) drops the grant and
// fails as transient, so that the retry asks for a fresh one.
func (g *grants) fetch(inner update.FetchFunc) update.FetchFunc {
	return func(ctx context.Context, t update.Target, dst string, progress func(done, total int64)) error {
		if !t.Artifact.Grant {
			return inner(ctx, t, dst, progress)
		}
		u, err := g.url(ctx, t)
		if err != nil {
			return err
		}
		granted := t
		granted.Artifact.URL = u
		err = inner(ctx, granted, dst, progress)
		var he *download.HTTPStatusError
		if errors.As(err, &he) && (he.StatusCode == 401 || he.StatusCode == 403) {
			g.forget(t.Artifact.SHA256)
			return update.Mark(update.Transient, fmt.Errorf("the granted url was refused, asking for a new grant: %w", err))
		}
		return err
	}
}
