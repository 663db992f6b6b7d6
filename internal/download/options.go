package download

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options tune Fetch. The zero value is ready to use.
type Options struct {
	// Client sends the requests. Default: a client that gives up on a
	// connect after 10s and on response headers after 30s, but has no
	// overall timeout: a large model over a slow link may take hours, and
	// a hung transfer is caught by StallTimeout instead.
	Client *http.Client

	// MinBackoff and MaxBackoff bound the jittered exponential wait between
	// attempts (defaults 500ms and 30s). The wait starts again from
	// MinBackoff after any attempt that received bytes, because on cellular
	// a drop after progress is the normal case, not a sign of overload.
	// A server's Retry-After is honoured, up to MaxBackoff, so a
	// misconfigured server cannot park a truck for the rest of its
	// online window.
	MinBackoff, MaxBackoff time.Duration

	// MaxAttempts caps the HTTP requests of one call; 0 means retry until
	// the context is done (the caller cancels when the truck goes offline).
	MaxAttempts int

	// MaxStatusRetries caps the retries of error answers (408, 429, 5xx)
	// in a row, with no byte of the file received between them: the
	// answer after that many retries is returned. 0 means no cap
	// (MaxAttempts still applies). A caller that keeps its own count of
	// a source's bad answers (the truck's update machine) sets it, so that
	// a source answering 503 for ever reaches that count; connection
	// errors are no answers and stay retried here.
	MaxStatusRetries int

	// StallTimeout aborts an attempt that receives no byte (headers
	// included) for this long, and retries it (default 60s). A TCP
	// connection over cellular can hang without ever failing.
	StallTimeout time.Duration

	// Progress, if set, is called with the bytes held so far and the total
	// size: once at the start (showing what was resumed), at most every
	// ~100ms while bytes arrive, and once at the end. It runs on the
	// goroutine that called Fetch, between reads, so it must be quick.
	Progress func(done, total int64)

	// Logger receives one line per retry, restart and completion. Default:
	// discard. URLs are logged without their query string.
	Logger *slog.Logger
}

const (
	defaultMinBackoff   = 500 * time.Millisecond
	defaultMaxBackoff   = 30 * time.Second
	defaultStallTimeout = 60 * time.Second
	progressInterval    = 100 * time.Millisecond
)

func (o Options) withDefaults() Options {
	if o.Client == nil {
		o.Client = defaultClient()
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = defaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = defaultStallTimeout
	}
	if o.MaxAttempts < 0 {
		o.MaxAttempts = 0
	}
	if o.MaxStatusRetries < 0 {
		o.MaxStatusRetries = 0
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// defaultClient is shared by all calls so that connections are reused.
var defaultClient = sync.OnceValue(func() *http.Client { return NewClient(nil, nil) })

// NewClient returns a client with the timeouts downloads need over slow,
// flaky links. proxy routes every request through an HTTP proxy; nil takes
// the proxy from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
// tlsCfg, if not nil, verifies HTTPS servers (a private CA) and offers a
// client certificate.
func NewClient(proxy *url.URL, tlsCfg *tls.Config) *http.Client {
	t, ok := http.DefaultTransport.(*http.Transport)
	if ok {
		t = t.Clone()
	} else {
		t = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	if proxy != nil {
		t.Proxy = http.ProxyURL(proxy)
	}
	if tlsCfg != nil {
		t.TLSClientConfig = tlsCfg.Clone()
	}
	// Which requests go through a proxy is noted on their binding: the
	// proxy's address is then what is dialled, and is not checked.
	proxyFor := t.Proxy
	t.Proxy = func(req *http.Request) (*url.URL, error) {
		var u *url.URL
		var err error
		if proxyFor != nil {
			u, err = proxyFor(req)
		}
		if b := bindingOf(req.Context()); b != nil {
			b.proxied.Store(u != nil)
		}
		return u, err
	}
	// No TCP keepalive probes: a download moves bytes or trips the stall
	// timeout, and probes on a metered link are paid for. ControlContext
	// sees the address actually connected to (see binding).
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1, ControlContext: refuseInternal}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	// An HTTP/2 connection that went silent would otherwise be reused by
	// the next attempt and stall again; pings detect it.
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}
	return &http.Client{Transport: t, CheckRedirect: checkRedirect}
}

// maxRedirects is more than a CDN or a presigning front needs (net/http
// allows 10).
const maxRedirects = 5

// checkRedirect refuses a redirect from a public host into the truck's own
// networks (loopback, private, link-local addresses): the artifact host is
// not trusted, and the truck's downloader must not become its way to the
// truck's local services. A URL that starts on such an address (a depot
// mirror the operator signed) may redirect within them. The check resolves
// the name once, for a clear early error; the transport resolves it again
// when it dials, so a redirect that left a public host also binds the
// request's connections to public addresses (see binding), and an answer
// that changed in between (DNS rebinding) is refused at the connection.
// The first host is the signed URL's: its DNS is trusted as far as the URL.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrRedirect, maxRedirects)
	}
	from, to := via[0].URL.Hostname(), req.URL.Hostname()
	if internalHost(req.Context(), from) {
		return nil
	}
	if internalHost(req.Context(), to) {
		return fmt.Errorf("%w: %s sent the download to %s, an address in the truck's own networks", ErrRedirect, from, to)
	}
	if b := bindingOf(req.Context()); b != nil {
		b.public.Store(true)
	}
	return nil
}

// lookupIPAddr resolves names for internalHost. It is a variable only so
// that a test can make a name resolve to a public address at the check and
// to loopback when the transport dials it; nothing else sets it.
var lookupIPAddr = net.DefaultResolver.LookupIPAddr

// internalHost reports whether host is, or resolves to, a loopback,
// private, link-local or unspecified address. A name that does not resolve
// counts as internal: it cannot be checked.
func internalHost(ctx context.Context, host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		addrs, err := lookupIPAddr(ctx, host)
		if err != nil || len(addrs) == 0 {
			return true
		}
		ips = ips[:0]
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	return slices.ContainsFunc(ips, internalIP)
}

func internalIP(ip net.IP) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified()
}

// binding travels in the context of one attempt's request, and so of its
// redirects and of the dials the transport makes for them. checkRedirect
// sets public once a redirect left a public host; from then on
// refuseInternal refuses any connection of the attempt to an internal
// address, whatever the name resolved to when it was checked.
type binding struct {
	public atomic.Bool
	// proxied: the request being sent goes through a proxy. The dial is
	// then to the proxy (which the operator chose, often on a private
	// network), and the proxy resolves the name itself, out of reach.
	// An attempt's requests are sent one at a time, so this describes the
	// dial in progress.
	proxied atomic.Bool
}

type bindingKey struct{}

// withBinding gives ctx a fresh binding.
func withBinding(ctx context.Context) context.Context {
	return context.WithValue(ctx, bindingKey{}, &binding{})
}

func bindingOf(ctx context.Context) *binding {
	b, _ := ctx.Value(bindingKey{}).(*binding)
	return b
}

// refuseInternal is the download client's net.Dialer ControlContext: it
// runs for each address the dialer connects to, after the name was
// resolved, and refuses internal ones for a bound attempt. The error wraps
// ErrRedirect, which Fetch does not retry.
func refuseInternal(ctx context.Context, network, address string, _ syscall.RawConn) error {
	b := bindingOf(ctx)
	if b == nil || !b.public.Load() || b.proxied.Load() {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	if ip := net.ParseIP(host); ip != nil && !internalIP(ip) {
		return nil
	}
	return fmt.Errorf("%w: the download left a public host and would connect to %s, an address in the truck's own networks", ErrRedirect, host)
}
