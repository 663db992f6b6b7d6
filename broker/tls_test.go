package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/tlsconfig/tlstest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns their paths and a pool trusting the certificate.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "linkedge-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certPath, keyPath, pool
}

func TestTLSListener(t *testing.T) {
	cert, key, pool := selfSigned(t, t.TempDir())
	b := startBroker(t, func(c *Config) {
		c.TLSCert, c.TLSKey = cert, key
	})

	o := clientOpts(b.Addr())
	o.Servers = nil
	o.AddBroker("ssl://" + b.Addr()).SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	c := connect(t, o)
	in := newInbox()
	subscribe(t, c, "linkedge/v1/tls", 1, in)
	publish(t, c, "linkedge/v1/tls", 1, false, "secret")
	if m := in.next(t); string(m.Payload()) != "secret" {
		t.Errorf("got %q", m.Payload())
	}

	if _, err := tryConnect(t, clientOpts(b.Addr()).SetConnectTimeout(2*time.Second)); err == nil {
		t.Error("plain MQTT accepted on the TLS listener")
	}
}

func TestTLSBadKeyPair(t *testing.T) {
	dir := t.TempDir()
	cert, _, _ := selfSigned(t, dir)
	_, err := New(Config{TLSCert: cert, TLSKey: filepath.Join(dir, "missing.pem")})
	if err == nil {
		t.Fatal("New accepted a missing key file")
	}
}

// TestMutualTLS: with tls_client_ca every client must present a certificate
// of that CA; one without, or one from another CA, is refused at the TLS
// handshake.
func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "fleet")
	srvCert, srvKey := ca.Server(t, "broker")
	b := startBroker(t, func(c *Config) {
		c.TLSCert, c.TLSKey, c.TLSClientCA = srvCert, srvKey, ca.File
	})
	dial := func(c tlsconfig.Client) error {
		cfg, err := c.Build()
		if err != nil {
			t.Fatal(err)
		}
		return tryTLS(t, b.Addr(), cfg, clientOpts(b.Addr()))
	}
	cert, key := ca.Client(t, "truck-1")
	if err := dial(tlsconfig.Client{CAFile: ca.File, CertFile: cert, KeyFile: key}); err != nil {
		t.Fatalf("a truck with a fleet certificate: %v", err)
	}
	if err := dial(tlsconfig.Client{CAFile: ca.File}); err == nil {
		t.Fatal("a client without a certificate connected")
	}
	other := tlstest.NewCA(t, "other")
	oc, ok := other.Client(t, "intruder")
	if err := dial(tlsconfig.Client{CAFile: ca.File, CertFile: oc, KeyFile: ok}); err == nil {
		t.Fatal("a client with another CA's certificate connected")
	}
}

func TestClientCAConfig(t *testing.T) {
	if err := (&Config{TLSClientCA: "ca.pem"}).Validate(); err == nil || !strings.Contains(err.Error(), "tls_client_ca needs tls_cert") {
		t.Fatalf("client CA without a TLS listener: %v", err)
	}
	ca := tlstest.NewCA(t, "fleet")
	cert, key := ca.Server(t, "broker")
	junk := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(junk, []byte("junk"), 0o600)
	if _, err := New(Config{TLSCert: cert, TLSKey: key, TLSClientCA: junk}); !errors.Is(err, tlsconfig.ErrInvalid) {
		t.Fatalf("junk client CA: %v", err)
	}
}

// A6: with tls_bind_username, a certificate logs in only as the user it
// names; without it, any fleet certificate plus any password would do.
func TestTLSBindUsername(t *testing.T) {
	ca := tlstest.NewCA(t, "fleet")
	srvCert, srvKey := ca.Server(t, "broker")
	users := writeUsersFile(t, map[string]string{"t1": "truck:t1-pw", "t2": "truck:t2-pw", "fleet": "publisher:fleet-pw"})
	b := startBroker(t, func(c *Config) {
		c.TLSCert, c.TLSKey, c.TLSClientCA, c.UsersFile, c.TLSBindUsername = srvCert, srvKey, ca.File, users, true
	})
	cert, key := ca.Client(t, "t1")
	cfg, err := tlsconfig.Client{CAFile: ca.File, CertFile: cert, KeyFile: key}.Build()
	if err != nil {
		t.Fatal(err)
	}
	dial := func(user string) error {
		o := clientOpts(b.Addr()).SetUsername(user).SetPassword(user + "-pw")
		if user != "fleet" {
			o.SetClientID("linkedge-truck-" + user)
		}
		return tryTLS(t, b.Addr(), cfg, o)
	}
	if err := dial("t1"); err != nil {
		t.Fatalf("t1 with t1's certificate: %v", err)
	}
	for _, user := range []string{"t2", "fleet"} {
		if err := dial(user); err == nil {
			t.Errorf("t1's certificate logged in as %s", user)
		}
	}
}

// tryTLS connects o to the broker at addr over TLS with cfg (a 2 s connect
// timeout), disconnects, and returns the connect error.
func tryTLS(t *testing.T, addr string, cfg *tls.Config, o *paho.ClientOptions) error {
	t.Helper()
	o.Servers = nil
	o.AddBroker("ssl://" + addr).SetTLSConfig(cfg).SetConnectTimeout(2 * time.Second)
	cl, err := tryConnect(t, o)
	if err == nil {
		cl.Disconnect(0)
	}
	return err
}
