package fleetsim

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"sync/atomic"

	"github.com/linkedge/linkedge/internal/netsim"
)

// Link is one truck's connection to the world: its MQTT connection to the
// fleet broker and its artifact downloads, which on a truck share one
// cellular link. Cut takes both down; SetRate slows both.
type Link struct {
	mqtt, http *netsim.Proxy
}

func newLink(brokerAddr, forwardProxyAddr string) (*Link, error) {
	m, err := netsim.New(brokerAddr)
	if err != nil {
		return nil, err
	}
	h, err := netsim.New(forwardProxyAddr)
	if err != nil {
		m.Close()
		return nil, err
	}
	return &Link{mqtt: m, http: h}, nil
}

// Cut drops every connection and refuses new ones until Restore.
func (l *Link) Cut() { l.mqtt.Cut(); l.http.Cut() }

// Restore brings the link back.
func (l *Link) Restore() { l.mqtt.Restore(); l.http.Restore() }

// Online reports whether the link is up.
func (l *Link) Online() bool { return l.mqtt.Online() }

// SetRate limits each direction to bytesPerSecond (0: unlimited).
func (l *Link) SetRate(bytesPerSecond int) {
	l.mqtt.SetRate(bytesPerSecond)
	l.http.SetRate(bytesPerSecond)
}

// Close stops both proxies.
func (l *Link) Close() error { return errors.Join(l.mqtt.Close(), l.http.Close()) }

// forwardProxy is a plain HTTP forward proxy: a truck's download client
// sends it absolute-form requests ("GET http://host/path"), and it fetches
// them. Each truck reaches it through its own Link, so cutting or slowing a
// truck's link cuts or slows its downloads, whatever host they go to (the
// local artifact server, or S3 through a presigned URL).
type forwardProxy struct {
	ln  net.Listener
	srv *http.Server
	// fault, when set, sees every request first; returning true means it
	// answered (a 404, a captive-portal page, corrupted bytes).
	fault atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
}

func startForwardProxy() (*forwardProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.Out.URL = r.In.URL // absolute-form: scheme and host are in the request line
		r.Out.Host = r.In.Host
	}}
	p := &forwardProxy{ln: ln}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := p.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *forwardProxy) Addr() string { return p.ln.Addr().String() }

func (p *forwardProxy) Close() error { return p.srv.Close() }
