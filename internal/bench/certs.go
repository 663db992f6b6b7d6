package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// fleetPKI is a private fleet CA and the certificates of a mutual-TLS
// fleet: the broker's, and one client certificate per name. Keys are ECDSA
// P-256, as tlstest makes them for the tests. RSA certificates, or a chain
// with an intermediate CA, make every mutual-TLS handshake larger.
type fleetPKI struct {
	dir        string
	CA         string
	ServerCert string
	ServerKey  string
	caCert     *x509.Certificate
	caKey      *ecdsa.PrivateKey
}

func newFleetPKI(dir string) (*fleetPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(), Subject: pkix.Name{CommonName: "linkedge fleet CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &fleetPKI{dir: dir, CA: filepath.Join(dir, "ca.pem"), caCert: cert, caKey: key}
	if err := writePEMFile(p.CA, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	p.ServerCert, p.ServerKey, err = p.issue("fleet-broker", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	return p, err
}

// client issues a client certificate whose common name is name.
func (p *fleetPKI) client(name string) (cert, key string, err error) {
	return p.issue(name, x509.ExtKeyUsageClientAuth, nil, nil)
}

func (p *fleetPKI) issue(name string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) (string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: ips, DNSNames: dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	if err := writePEMFile(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	return certFile, keyFile, writePEMFile(keyFile, "EC PRIVATE KEY", kb)
}

func serialNumber() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func writePEMFile(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}
