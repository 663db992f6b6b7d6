package release

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// A throwaway key pair made with `openssl genpkey -algorithm ed25519` and
// `openssl pkey -pubout`, to check interoperability. Its key id was
// computed with `openssl pkey -pubout -outform DER | tail -c 32 | sha256sum`.
const (
	opensslPrivate = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIObyC8vmFZgcNlMc/4dOKKgNhhsyxL0ae4p7GYur9pJ/
-----END PRIVATE KEY-----
`
	opensslPublic = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAqncmtuQzsV+FYEStbX7gvN2kjTTd1NRAgQ8iLESq6hc=
-----END PUBLIC KEY-----
`
	opensslKeyID = "4ea9fdeeb836cf3e"
)

func TestKeyFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	pub, priv := GenerateKey()
	keyPath := filepath.Join(dir, "publisher.key")
	pubPath := filepath.Join(dir, "publisher.pub")
	if err := WritePrivateKeyFile(keyPath, priv); err != nil {
		t.Fatal(err)
	}
	if err := WritePublicKeyFile(pubPath, pub); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		for path, want := range map[string]fs.FileMode{keyPath: 0o600, pubPath: 0o644} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s mode = %v, want %v", filepath.Base(path), got, want)
			}
		}
	}
	gotPriv, err := ReadPrivateKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	gotPub, err := ReadPublicKeyFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if !gotPriv.Equal(priv) || !gotPub.Equal(pub) {
		t.Fatal("keys changed in a round trip")
	}

	// And the pair works end to end.
	data, err := Sign(testRelease(), gotPriv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testVerifier(gotPub).Verify(data); err != nil {
		t.Fatal(err)
	}
}

func TestOpenSSLKeys(t *testing.T) {
	priv, err := ParsePrivateKeyPEM([]byte(opensslPrivate))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM([]byte(opensslPublic))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public()) {
		t.Fatal("public key does not match private key")
	}
	if got := KeyID(pub); got != opensslKeyID {
		t.Errorf("KeyID = %s, want %s", got, opensslKeyID)
	}
	// Our encoding is the standard one, byte for byte.
	if got, _ := MarshalPublicKeyPEM(pub); string(got) != opensslPublic {
		t.Errorf("MarshalPublicKeyPEM =\n%s", got)
	}
	if got, _ := MarshalPrivateKeyPEM(priv); string(got) != opensslPrivate {
		t.Errorf("MarshalPrivateKeyPEM =\n%s", got)
	}
}

func TestKeyID(t *testing.T) {
	pub, _ := GenerateKey()
	id := KeyID(pub)
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Errorf("KeyID = %q, want 16 lowercase hex characters", id)
	}
	other, _ := GenerateKey()
	if KeyID(other) == id {
		t.Error("two random keys share a key id")
	}
}

func TestReadKeyErrors(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPubDER, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaPubDER, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}

	tests := []struct {
		name, data, wantMsg string
		private             bool
	}{
		{"private: empty", "", "no PEM block", true},
		{"private: garbage", "hello", "no PEM block", true},
		{"private: given public", opensslPublic, "this is a public key", true},
		{"private: openssh", block("OPENSSH PRIVATE KEY", []byte{1}), "only PKCS#8 ed25519", true},
		{"private: ecdsa", block("PRIVATE KEY", ecDER), "want ed25519", true},
		{"private: corrupt DER", block("PRIVATE KEY", []byte{1, 2, 3}), "parse PKCS#8", true},
		{"public: empty", "", "no PEM block", false},
		{"public: given private", opensslPrivate, "this is a private key", false},
		{"public: certificate", block("CERTIFICATE", []byte{1}), "certificates are not supported", false},
		{"public: ecdsa", block("PUBLIC KEY", ecPubDER), "want ed25519", false},
		{"public: rsa", block("PUBLIC KEY", rsaPubDER), "*rsa.PublicKey", false},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, string(rune('a'+i)))
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.private {
				_, err = ReadPrivateKeyFile(path)
			} else {
				_, err = ReadPublicKeyFile(path)
			}
			if err == nil {
				t.Fatal("want error")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should mention %q and the path", err, tt.wantMsg)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := ReadPublicKeyFile(filepath.Join(dir, "nope.pub"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v does not wrap fs.ErrNotExist", err)
		}
	})
	t.Run("write bad key", func(t *testing.T) {
		if err := WritePrivateKeyFile(filepath.Join(dir, "x.key"), nil); err == nil {
			t.Error("wrote an empty private key")
		}
		if err := WritePublicKeyFile(filepath.Join(dir, "x.pub"), make([]byte, 5)); err == nil {
			t.Error("wrote a 5-byte public key")
		}
	})
}
