package edgeclient

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/edgeclient/update"
	"github.com/linkedge/linkedge/internal/download"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

const grantSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestGrants(t *testing.T) {
	pub, priv := release.GenerateKey()
	_, forger := release.GenerateKey()
	sign := func(key ed25519.PrivateKey, truck, sha, url string, life time.Duration) []byte {
		now := time.Now().UTC().Truncate(time.Millisecond)
		doc, err := release.SignGrant(&release.Grant{Schema: release.GrantSchema, Truck: truck, Model: "aps-failure", SHA256: sha,
			URL: url, IssuedAt: now, ExpiresAt: now.Add(life)}, key)
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	target := update.Target{Model: "aps-failure", Version: 3, Artifact: release.Artifact{URL: "https://bucket.example/aps", SHA256: grantSHA, Size: 10, Grant: true}}
	for _, tc := range []struct {
		name    string
		answer  func(req []byte) []byte // nil: no answer
		offline bool
		want    string // the URL, or "" for an error
		class   update.Class
	}{
		{name: "signed for this truck", answer: func([]byte) []byte {
			return sign(priv, "truck-1", grantSHA, "https://bucket.example/aps?sig=1", time.Hour)
		},
			want: "https://bucket.example/aps?sig=1"},
		{name: "forged", answer: func([]byte) []byte { return sign(forger, "truck-1", grantSHA, "http://127.0.0.1:22/", time.Hour) }, class: update.Transient},
		{name: "another truck's", answer: func([]byte) []byte {
			return sign(priv, "truck-2", grantSHA, "https://bucket.example/aps?sig=2", time.Hour)
		}, class: update.Transient},
		{name: "another artifact", answer: func([]byte) []byte {
			return sign(priv, "truck-1", strings.Repeat("1", 64), "https://bucket.example/x?sig=3", time.Hour)
		}, class: update.Transient},
		{name: "not a grant", answer: func([]byte) []byte { return []byte("<html>captive portal</html>") }, class: update.Transient},
		{name: "expired on arrival", answer: func([]byte) []byte {
			return sign(priv, "truck-1", grantSHA, "https://bucket.example/aps?sig=4", time.Millisecond)
		}, class: update.Transient},
		{name: "no answer", class: update.Transient},
		{name: "link down", offline: true, class: update.Interrupted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g *grants
			var mu sync.Mutex
			var asked []string
			publish := func(topic string, payload []byte) bool {
				if tc.offline {
					return false
				}
				mu.Lock()
				asked = append(asked, topic+" "+string(payload))
				mu.Unlock()
				if tc.answer != nil {
					doc := tc.answer(payload)
					time.Sleep(time.Millisecond) // let an "expired on arrival" grant expire
					go g.deliver(doc)
				}
				return true
			}
			g = newGrants("truck-1", &release.Verifier{Keys: []ed25519.PublicKey{pub}, MaxSkew: -1}, publish, slog.New(slog.DiscardHandler))
			g.wait = 300 * time.Millisecond
			url, err := g.url(context.Background(), target)
			if tc.want != "" {
				if err != nil || url != tc.want {
					t.Fatalf("got %q, %v; want %s", url, err, tc.want)
				}
			} else if err == nil || update.Classify(context.Background(), err) != tc.class {
				t.Fatalf("got %q, %v; want a %v error", url, err, tc.class)
			}
			if !tc.offline {
				var req release.GrantRequest
				if len(asked) != 1 || !strings.HasPrefix(asked[0], topics.TruckGrantRequest("truck-1")+" ") ||
					json.Unmarshal([]byte(strings.SplitN(asked[0], " ", 2)[1]), &req) != nil || req.SHA256 != grantSHA || req.Model != "aps-failure" {
					t.Fatalf("asked %q", asked)
				}
			}
			if tc.want == "" {
				return
			}
			// Kept: the next download asks nothing.
			if u, err := g.url(context.Background(), target); err != nil || u != tc.want || len(asked) != 1 {
				t.Fatalf("second url: %q, %v, asked %d times", u, err, len(asked))
			}
			// A refused URL drops the grant and is a transient failure.
			fetch := g.fetch(func(_ context.Context, got update.Target, _ string, _ func(int64, int64)) error {
				if got.Artifact.URL != tc.want {
					t.Errorf("downloading %s, want the granted %s", got.Artifact.URL, tc.want)
				}
				return &download.HTTPStatusError{StatusCode: 403, URL: got.Artifact.URL}
			})
			err = fetch(context.Background(), target, "", nil)
			if update.Classify(context.Background(), err) != update.Transient || g.valid(grantSHA) != "" {
				t.Fatalf("403: %v (class %v), grant kept %v", err, update.Classify(context.Background(), err), g.valid(grantSHA) != "")
			}
		})
	}
}

// TestGrantsNotNeeded: a release without "grant" downloads its own URL.
func TestGrantsNotNeeded(t *testing.T) {
	g := newGrants("truck-1", &release.Verifier{}, func(string, []byte) bool { t.Error("asked for a grant"); return false }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	want := errors.New("inner")
	err := g.fetch(func(_ context.Context, got update.Target, _ string, _ func(int64, int64)) error {
		if got.Artifact.URL != "http://artifacts.example/v3" {
			t.Errorf("url %s", got.Artifact.URL)
		}
		return want
	})(context.Background(), update.Target{Artifact: release.Artifact{URL: "http://artifacts.example/v3"}}, "", nil)
	if !errors.Is(err, want) {
		t.Fatalf("got %v", err)
	}
}
