// Package tlsconfig turns the TLS settings of LinkEdge's MQTT and HTTP
// clients (the truck agent, the publisher, the operator commands) into a
// crypto/tls configuration: a private fleet CA to trust besides the system
// roots, and a client certificate for brokers that require mutual TLS.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrInvalid wraps every error in TLS settings.
var ErrInvalid = errors.New("invalid tls settings")

// Client is the TLS settings of a client. The zero value uses the system
// roots and offers no certificate. YAML key `tls`.
type Client struct {
	// CAFile is a PEM file of CA certificates to trust in addition to the
	// system roots: the fleet's private CA, say. Downloads from public
	// hosts (S3) still verify against the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the PEM client certificate and its key,
	// offered to a server that asks for one (a broker with
	// tls_client_ca). Set both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName, when set, is the name the server's certificate must
	// carry, instead of the host in the URL (a broker reached by IP).
	ServerName string `yaml:"server_name"`
}

// IsZero reports whether c changes nothing from Go's defaults.
func (c Client) IsZero() bool { return c == Client{} }

// Build returns the tls.Config for c, or nil for the zero value (the
// caller's default then applies). It reads the files now, so a wrong path
// or a key that does not match its certificate is reported at start, not
// at the first connection.
func (c Client) Build() (*tls.Config, error) {
	if c.IsZero() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: ca_file: %w", ErrInvalid, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: ca_file %s holds no PEM certificate", ErrInvalid, c.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.CertFile != "" && c.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: cert_file %s and key_file %s: %w", ErrInvalid, c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case c.CertFile != "" || c.KeyFile != "":
		return nil, fmt.Errorf("%w: cert_file and key_file must be set together", ErrInvalid)
	}
	return cfg, nil
}

// CheckScheme refuses settings that would be ignored: paho uses TLS only
// for ssl://, tls://, mqtts:// and wss:// brokers, so CA and certificate
// files given with a tcp:// or ws:// broker would leave the connection in
// plain text without a word.
func (c Client) CheckScheme(brokerURL string) error {
	if c.IsZero() {
		return nil
	}
	scheme, _, _ := strings.Cut(brokerURL, "://")
	switch strings.ToLower(scheme) {
	case "ssl", "tls", "mqtts", "wss":
		return nil
	}
	return fmt.Errorf("%w: tls settings with the broker %s, which is not a TLS URL; use ssl:// (or wss://)", ErrInvalid, brokerURL)
}

// ClientCAs reads a PEM file of the CAs whose certificates a server accepts
// from clients (the broker's tls_client_ca).
func ClientCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrInvalid, file)
	}
	return pool, nil
}
