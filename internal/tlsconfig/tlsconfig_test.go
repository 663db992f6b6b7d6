package tlsconfig_test

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/tlsconfig/tlstest"
)

func TestBuild(t *testing.T) {
	ca := tlstest.NewCA(t, "fleet")
	cert, key := ca.Client(t, "truck-1")
	other := tlstest.NewCA(t, "other")
	_, otherKey := other.Client(t, "x")
	junk := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)

	if cfg, err := (tlsconfig.Client{}).Build(); cfg != nil || err != nil {
		t.Fatalf("zero value: %v, %v; want nil, nil (Go's defaults)", cfg, err)
	}
	cfg, err := tlsconfig.Client{CAFile: ca.File, CertFile: cert, KeyFile: key, ServerName: "broker.fleet"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.ServerName != "broker.fleet" || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("config %+v", cfg)
	}
	for name, c := range map[string]tlsconfig.Client{
		"missing ca file":           {CAFile: filepath.Join(t.TempDir(), "nope.pem")},
		"ca file without a cert":    {CAFile: junk},
		"cert without key":          {CertFile: cert},
		"key without cert":          {KeyFile: key},
		"key of another cert":       {CertFile: cert, KeyFile: otherKey},
		"certificate is not a cert": {CertFile: junk, KeyFile: key},
	} {
		if _, err := c.Build(); !errors.Is(err, tlsconfig.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	withCA := tlsconfig.Client{CAFile: ca.File}
	for url, ok := range map[string]bool{"ssl://fleet:8883": true, "MQTTS://fleet:8883": true, "wss://fleet/mqtt": true, "tcp://fleet:1883": false, "ws://fleet/mqtt": false} {
		if err := withCA.CheckScheme(url); (err == nil) != ok {
			t.Errorf("CheckScheme(%s) = %v", url, err)
		}
	}
	if err := (tlsconfig.Client{}).CheckScheme("tcp://fleet:1883"); err != nil {
		t.Errorf("no tls settings with tcp://: %v", err)
	}
	if _, err := tlsconfig.ClientCAs(junk); !errors.Is(err, tlsconfig.ErrInvalid) {
		t.Errorf("client CAs from junk: %v", err)
	}
}

// TestPrivateCAAndMutualTLS runs an HTTPS server that requires client
// certificates from the fleet CA: the configured client gets through, one
// without a certificate and one trusting only the system roots do not.
func TestPrivateCAAndMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "fleet")
	srvCert, srvKey := ca.Server(t, "broker")
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.ClientCAs(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.TLS.PeerCertificates[0].Subject.CommonName))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	get := func(c tlsconfig.Client) error {
		cfg, err := c.Build()
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Get(srv.URL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	cert, key := ca.Client(t, "truck-1")
	if err := get(tlsconfig.Client{CAFile: ca.File, CertFile: cert, KeyFile: key}); err != nil {
		t.Fatalf("configured client: %v", err)
	}
	if err := get(tlsconfig.Client{CAFile: ca.File}); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	if err := get(tlsconfig.Client{CertFile: cert, KeyFile: key}); err == nil {
		t.Fatal("a client trusting only the system roots accepted the fleet CA's server")
	}
	stranger := tlstest.NewCA(t, "stranger")
	sc, sk := stranger.Client(t, "intruder")
	if err := get(tlsconfig.Client{CAFile: ca.File, CertFile: sc, KeyFile: sk}); err == nil {
		t.Fatal("a certificate from another CA got through")
	}
}
