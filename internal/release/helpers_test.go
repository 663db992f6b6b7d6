package release

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"
)

// tb is the part of testing.TB that *rapid.T also implements, so helpers
// work in property tests too.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// testNow is the verifier clock in tests; testRelease is valid around it.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testKey returns a deterministic key pair so failures reproduce.
func testKey(seed string) (ed25519.PublicKey, ed25519.PrivateKey) {
	s := sha256.Sum256([]byte(seed))
	priv := ed25519.NewKeyFromSeed(s[:])
	return priv.Public().(ed25519.PublicKey), priv
}

func testTarget(version int64) Target {
	return Target{
		Version: version,
		Artifact: Artifact{
			URL:       "https://models.example.com/aps-failure/v3/model.tar.gz?X-Amz-Signature=abc&x=<y>",
			SHA256:    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			Size:      12345,
			MediaType: MediaTypeBundle,
		},
		Runtime: Runtime{Kind: RuntimeInProcess},
		Source: Source{
			Registry:        RegistrySageMaker,
			ModelPackageARN: "arn:aws:sagemaker:eu-west-1:123456789012:model-package/aps-failure/3",
			ApprovedAt:      testNow.Add(-48 * time.Hour),
			ApprovedBy:      "data-science@example.com",
		},
	}
}

func testRelease() *Release {
	canary := testTarget(4)
	canary.Runtime = Runtime{Kind: RuntimeContainer, Image: "registry.example.com:5000/linkedge/aps@sha256:" + "ab" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"}
	return &Release{
		Schema:    Schema,
		Model:     "aps-failure",
		Serial:    7,
		IssuedAt:  testNow.Add(-time.Hour),
		ExpiresAt: testNow.Add(23 * time.Hour),
		Stable:    testTarget(3),
		Canary:    &Canary{Target: canary, Percent: 10, Groups: []string{"test-fleet"}},
	}
}

func testVerifier(keys ...ed25519.PublicKey) *Verifier {
	return &Verifier{Keys: keys, Now: func() time.Time { return testNow }}
}

// mustSign signs testRelease after applying edit.
func mustSign(t tb, priv ed25519.PrivateKey, edit func(*Release)) []byte {
	t.Helper()
	r := testRelease()
	if edit != nil {
		edit(r)
	}
	data, err := Sign(r, priv)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return data
}

// toMap decodes a document into a generic map for tampering.
func toMap(t tb, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return m
}

func fromMap(t tb, m map[string]any) []byte {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// signRaw signs an arbitrary JSON object the way Sign does, bypassing
// Validate and the Release type, to build documents a buggy or newer
// publisher could send.
func signRaw(t tb, priv ed25519.PrivateKey, m map[string]any) []byte {
	t.Helper()
	delete(m, "signature")
	body, err := Canonical(fromMap(t, m))
	if err != nil {
		t.Fatalf("Canonical: %v", err)
	}
	m["signature"] = map[string]any{
		"key_id":    KeyID(priv.Public().(ed25519.PublicKey)),
		"algorithm": AlgorithmEd25519,
		"value":     base64.StdEncoding.EncodeToString(ed25519.Sign(priv, body)),
	}
	return fromMap(t, m)
}

// sub returns the nested object of m at path.
func sub(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}
