package release

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/linkedge/linkedge/internal/atomicfile"
)

// PEM block types of key files.
const (
	pemPrivate = "PRIVATE KEY" // PKCS#8
	pemPublic  = "PUBLIC KEY"  // PKIX (SubjectPublicKeyInfo)
)

// GenerateKey returns a new Ed25519 key pair from crypto/rand. It cannot
// fail: since Go 1.24 crypto/rand never returns an error (the program
// crashes instead if the system's random source is broken).
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic("release: crypto/rand failed: " + err.Error()) // unreachable, see above
	}
	return pub, priv
}

// KeyID names a public key in signatures and logs: the first 16 hex
// characters (8 bytes) of SHA-256 of the raw 32-byte key. It is a label
// for picking the right pinned key, not a security boundary: the signature
// check is done with the key itself.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// MarshalPrivateKeyPEM encodes key as a PKCS#8 "PRIVATE KEY" PEM block.
func MarshalPrivateKeyPEM(key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("release: private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("release: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes key as a PKIX "PUBLIC KEY" PEM block.
func MarshalPublicKeyPEM(key ed25519.PublicKey) ([]byte, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("release: public key is %d bytes, want %d", len(key), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("release: encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), nil
}

// WritePrivateKeyFile atomically writes key to path as PKCS#8 PEM with mode
// 0600, replacing any existing file.
func WritePrivateKeyFile(path string, key ed25519.PrivateKey) error {
	data, err := MarshalPrivateKeyPEM(key)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("release: write private key: %w", err)
	}
	return nil
}

// WritePublicKeyFile atomically writes key to path as PKIX PEM with mode
// 0644, replacing any existing file.
func WritePublicKeyFile(path string, key ed25519.PublicKey) error {
	data, err := MarshalPublicKeyPEM(key)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("release: write public key: %w", err)
	}
	return nil
}

// ReadPrivateKeyFile reads an Ed25519 private key written by
// [WritePrivateKeyFile] (or `openssl genpkey -algorithm ed25519`).
func ReadPrivateKeyFile(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release: read private key: %w", err)
	}
	key, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// ReadPublicKeyFile reads an Ed25519 public key written by
// [WritePublicKeyFile] (or `openssl pkey -pubout`).
func ReadPublicKeyFile(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release: read public key: %w", err)
	}
	key, err := ParsePublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// ParsePrivateKeyPEM decodes the first PEM block of data as a PKCS#8
// Ed25519 private key.
func ParsePrivateKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	der, err := pemBlock(data, pemPrivate)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("release: parse PKCS#8 private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("release: private key is %s, want ed25519; generate one with `linkedge keys generate`", keyKind(k))
	}
	return priv, nil
}

// ParsePublicKeyPEM decodes the first PEM block of data as a PKIX Ed25519
// public key.
func ParsePublicKeyPEM(data []byte) (ed25519.PublicKey, error) {
	der, err := pemBlock(data, pemPublic)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("release: parse PKIX public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("release: public key is %s, want ed25519; use the .pub file written by `linkedge keys generate`", keyKind(k))
	}
	return pub, nil
}

// pemBlock returns the DER bytes of the first PEM block of data, which must
// have type want. The errors name the usual mix-ups.
func pemBlock(data []byte, want string) ([]byte, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("release: no PEM block found; want a " + want + " PEM file (-----BEGIN " + want + "-----)")
	}
	if b.Type == want {
		return b.Bytes, nil
	}
	hint := ""
	switch b.Type {
	case pemPublic:
		hint = "; this is a public key (.pub), pass the private key (.key)"
	case pemPrivate:
		hint = "; this is a private key (.key), pass the public key (.pub), and keep the private key off trucks"
	case "OPENSSH PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
		hint = "; only PKCS#8 ed25519 keys are supported, generate one with `linkedge keys generate`"
	case "CERTIFICATE":
		hint = "; certificates are not supported, pass the bare public key"
	}
	return nil, fmt.Errorf("release: PEM block is %q, want %q%s", b.Type, want, hint)
}

func keyKind(k any) string {
	switch k.(type) {
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "ed25519"
	}
	return fmt.Sprintf("a %T", k)
}
