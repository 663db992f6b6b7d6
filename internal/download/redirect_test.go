package download

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckRedirect(t *testing.T) {
	req := func(u string) *http.Request {
		r, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	public := req("https://203.0.113.5/model.tar.gz")
	for _, tc := range []struct {
		name string
		to   string
		via  []*http.Request
		ok   bool
	}{
		{"public to public", "https://198.51.100.7/model.tar.gz", []*http.Request{public}, true},
		{"public to loopback", "http://127.0.0.1:8080/v1/hold", []*http.Request{public}, false},
		{"public to loopback v6", "http://[::1]:8080/", []*http.Request{public}, false},
		{"public to localhost", "http://localhost:9883/metrics", []*http.Request{public}, false},
		{"public to a private network", "http://10.1.2.3/", []*http.Request{public}, false},
		{"public to link-local (cloud metadata)", "http://169.254.169.254/latest/meta-data/", []*http.Request{public}, false},
		{"depot mirror within its network", "http://10.1.2.4/model.tar.gz", []*http.Request{req("http://10.1.2.3/model.tar.gz")}, true},
		{"too many", "https://198.51.100.7/6", []*http.Request{public, public, public, public, public}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRedirect(req(tc.to), tc.via)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrRedirect)) {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// A8 end to end: the artifact host (here a public address, reached
// through an HTTP proxy that plays it) redirects the download to a service
// on the truck's loopback. The service is never asked, and the download
// fails at once instead of retrying into it.
func TestRedirectIntoTheTruckRefused(t *testing.T) {
	// One server plays the network: as an HTTP proxy it sees every
	// request's absolute URL. The artifact host redirects to the truck's
	// loopback; anything for the loopback counts as reaching the truck's
	// own service.
	var internalHits atomic.Int64
	host := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Hostname() == "203.0.113.5" {
			http.Redirect(w, r, "http://127.0.0.1:8080/v1/hold/brakes", http.StatusFound)
			return
		}
		internalHits.Add(1)
	}))
	t.Cleanup(host.Close)
	proxy, _ := url.Parse(host.URL)
	o := Options{Client: NewClient(proxy, nil), StallTimeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, sha := artifact(testSize, 1)
	err := Fetch(ctx, "http://203.0.113.5/model.tar.gz", dstPath(t), testSize, sha, o)
	if !errors.Is(err, ErrRedirect) {
		t.Fatalf("got %v, want ErrRedirect", err)
	}
	if n := internalHits.Load(); n != 0 {
		t.Fatalf("the truck's internal service was asked %d times", n)
	}
}
