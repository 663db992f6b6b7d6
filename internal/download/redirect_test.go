package download

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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

// The dial-time half of A8: each address a bound attempt connects to is
// checked, whatever the name resolved to before.
func TestRefuseInternal(t *testing.T) {
	bound, proxied := &binding{}, &binding{}
	bound.public.Store(true)
	proxied.public.Store(true)
	proxied.proxied.Store(true)
	for _, tc := range []struct {
		name    string
		b       *binding
		address string
		ok      bool
	}{
		{"no binding (not a download)", nil, "127.0.0.1:80", true},
		{"started inside the truck's networks", &binding{}, "127.0.0.1:8080", true},
		{"bound, public address", bound, "198.51.100.7:443", true},
		{"bound, loopback", bound, "127.0.0.1:8080", false},
		{"bound, loopback v6", bound, "[::1]:8080", false},
		{"bound, v4-mapped loopback", bound, "[::ffff:127.0.0.1]:8080", false},
		{"bound, private", bound, "10.1.2.3:80", false},
		{"bound, link-local (cloud metadata)", bound, "169.254.169.254:80", false},
		{"bound, link-local with a zone", bound, "[fe80::1%eth0]:80", false},
		{"bound, through a proxy on the depot network", proxied, "10.0.0.8:3128", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.b != nil {
				ctx = context.WithValue(ctx, bindingKey{}, tc.b)
			}
			err := refuseInternal(ctx, "tcp", tc.address, nil)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrRedirect)) {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// A8 against DNS rebinding: the redirect's host resolves to a public
// address when checkRedirect looks, and to the truck's loopback when the
// transport dials it a moment later. The connection is refused, the
// service is never asked, and the download is not retried. Downloads that
// start on loopback, and bound ones through a proxy, still work.
func TestRedirectRebindingRefusedAtDial(t *testing.T) {
	data, sha := artifact(1000, 21)
	var internalHits atomic.Int64
	// One server plays every host, by the Host it is asked for (directly,
	// or as a proxy).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/start":
			http.Redirect(w, r, "http://rebind.example/model.tar.gz", http.StatusFound)
		case "/model.tar.gz":
			internalHits.Add(1)
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	srvAddr := srv.Listener.Addr().String()
	// The check sees public addresses for both names.
	lookup := lookupIPAddr
	t.Cleanup(func() { lookupIPAddr = lookup })
	lookupIPAddr = func(ctx context.Context, host string) ([]net.IPAddr, error) {
		switch host {
		case "artifacts.example":
			return []net.IPAddr{{IP: net.ParseIP("203.0.113.5")}}, nil
		case "rebind.example":
			return []net.IPAddr{{IP: net.ParseIP("203.0.113.6")}}, nil
		}
		return nil, errors.New("no such host")
	}
	for _, tc := range []struct {
		name    string
		url     string
		proxied bool
		ok      bool
	}{
		{"public host redirects to a name that rebinds to loopback", "http://artifacts.example/start", false, false},
		{"a download that starts on loopback", srv.URL + "/start", false, true},
		{"public host through a proxy on loopback", "http://artifacts.example/start", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			internalHits.Store(0)
			var proxy *url.URL
			if tc.proxied {
				proxy, _ = url.Parse(srv.URL)
			}
			c := NewClient(proxy, nil)
			tr := c.Transport.(*http.Transport)
			if !tc.proxied {
				tr.Proxy = nil // whatever the environment says: these are direct
			}
			// The transport's own lookup at the dial: every name is now the
			// test server on loopback. The client's dialer checks what it
			// connects to.
			dial := tr.DialContext
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if host, _, _ := net.SplitHostPort(addr); strings.HasSuffix(host, ".example") {
					addr = srvAddr
				}
				return dial(ctx, network, addr)
			}
			t.Cleanup(c.CloseIdleConnections)
			o := Options{Client: c, StallTimeout: 5 * time.Second, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			dst := dstPath(t)
			res, err := FetchWithResult(ctx, tc.url, dst, int64(len(data)), sha, o)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				assertFile(t, dst, data)
				return
			}
			if !errors.Is(err, ErrRedirect) || !strings.Contains(err.Error(), "would connect to 127.0.0.1") {
				t.Fatalf("got %v, want ErrRedirect at the connection", err)
			}
			if n := internalHits.Load(); n != 0 {
				t.Fatalf("the truck's internal service was asked %d times", n)
			}
			if res.Attempts != 1 {
				t.Fatalf("%d attempts, want 1: a refused redirect is not retried", res.Attempts)
			}
		})
	}
}
