package release

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignVerifyMatrix(t *testing.T) {
	pub, priv := testKey("publisher")
	otherPub, otherPriv := testKey("other")
	good := mustSign(t, priv, nil)

	// tamper decodes the good document, applies edit and re-encodes it
	// without re-signing.
	tamper := func(edit func(m map[string]any)) []byte {
		m := toMap(t, good)
		edit(m)
		return fromMap(t, m)
	}
	// resign decodes the good document, applies edit and signs the result
	// with the publisher key, as a buggy or newer publisher would.
	resign := func(edit func(m map[string]any)) []byte {
		m := toMap(t, good)
		edit(m)
		return signRaw(t, priv, m)
	}

	tests := []struct {
		name    string
		data    []byte
		v       *Verifier
		want    error  // nil means success
		wantMsg string // substring of the error message
	}{
		{name: "good", data: good},
		{name: "good with rotated keys pinned", data: good, v: testVerifier(otherPub, pub)},
		{name: "good without canary", data: mustSign(t, priv, func(r *Release) { r.Canary = nil })},

		{name: "unsigned", data: tamper(func(m map[string]any) { delete(m, "signature") }), want: ErrUnsigned},
		{name: "signature null", data: tamper(func(m map[string]any) { m["signature"] = nil }), want: ErrUnsigned},
		{name: "signature not object", data: tamper(func(m map[string]any) { m["signature"] = "abc" }), want: ErrMalformed},
		{name: "signature extra member", data: tamper(func(m map[string]any) { sub(m, "signature")["note"] = "x" }), want: ErrMalformed, wantMsg: `"note"`},
		{name: "signature missing value", data: tamper(func(m map[string]any) { delete(sub(m, "signature"), "value") }), want: ErrMalformed, wantMsg: "signature.value"},

		{name: "tampered model", data: tamper(func(m map[string]any) { m["model"] = "other-model" }), want: ErrBadSignature},
		{name: "tampered serial", data: tamper(func(m map[string]any) { m["serial"] = 8 }), want: ErrBadSignature},
		{name: "tampered expires_at", data: tamper(func(m map[string]any) { m["expires_at"] = "2030-01-01T00:00:00Z" }), want: ErrBadSignature},
		{name: "tampered stable version", data: tamper(func(m map[string]any) { sub(m, "stable")["version"] = 2 }), want: ErrBadSignature},
		{name: "tampered artifact url", data: tamper(func(m map[string]any) { sub(m, "stable", "artifact")["url"] = "https://evil.example.com/m.tar.gz" }), want: ErrBadSignature},
		{name: "tampered artifact sha256", data: tamper(func(m map[string]any) {
			sub(m, "stable", "artifact")["sha256"] = strings.Repeat("0", 64)
		}), want: ErrBadSignature},
		{name: "tampered canary percent", data: tamper(func(m map[string]any) { sub(m, "canary")["percent"] = 100 }), want: ErrBadSignature},
		{name: "tampered canary groups", data: tamper(func(m map[string]any) { sub(m, "canary")["groups"] = []any{"all"} }), want: ErrBadSignature},
		{name: "removed canary", data: tamper(func(m map[string]any) { delete(m, "canary") }), want: ErrBadSignature},
		{name: "added field", data: tamper(func(m map[string]any) { m["extra"] = true }), want: ErrBadSignature},
		{name: "tampered approved_by (informational, still covered)", data: tamper(func(m map[string]any) {
			sub(m, "stable", "source")["approved_by"] = "mallory"
		}), want: ErrBadSignature},

		{name: "tampered signature value", data: tamper(func(m map[string]any) {
			s := sub(m, "signature")
			v := []byte(s["value"].(string))
			v[10] ^= 0x01
			s["value"] = string(v)
		}), want: ErrBadSignature},
		{name: "signature value not base64", data: tamper(func(m map[string]any) { sub(m, "signature")["value"] = "!!!" }), want: ErrBadSignature},
		{name: "signature value with spare bits set", data: tamper(func(m map[string]any) {
			s := sub(m, "signature")
			v := []byte(s["value"].(string)) // 86 data chars + "=="; the last data char carries 2 unused bits
			v[85] = flipUnusedBits(v[85])
			s["value"] = string(v)
		}), want: ErrBadSignature},
		{name: "unsupported algorithm", data: tamper(func(m map[string]any) { sub(m, "signature")["algorithm"] = "rsa" }), want: ErrBadSignature, wantMsg: "not supported"},
		{name: "wrong key under the pinned key id", data: func() []byte {
			m := toMap(t, mustSign(t, otherPriv, nil))
			sub(m, "signature")["key_id"] = KeyID(pub)
			return fromMap(t, m)
		}(), want: ErrBadSignature},
		{name: "unknown key id", data: mustSign(t, otherPriv, nil), want: ErrUnknownKey, wantMsg: KeyID(otherPub)},
		{name: "no keys pinned", data: good, v: testVerifier(), want: ErrUnknownKey, wantMsg: "no publisher key is pinned"},
		{name: "broken pinned key", data: good, v: testVerifier(pub[:16]), want: ErrUnknownKey},

		{name: "expired", data: good, v: &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return testNow.Add(24 * time.Hour) }}, want: ErrExpired},
		{name: "expired within skew", data: good, v: &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return testNow.Add(23*time.Hour + 4*time.Minute) }}},
		{name: "expired, no skew", data: good, v: &Verifier{Keys: []ed25519.PublicKey{pub}, MaxSkew: -1, Now: func() time.Time { return testNow.Add(23 * time.Hour) }}, want: ErrExpired},
		{name: "not yet valid", data: good, v: &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return testNow.Add(-2 * time.Hour) }}, want: ErrNotYetValid, wantMsg: "clock"},
		{name: "not yet valid within skew", data: good, v: &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return testNow.Add(-time.Hour - 4*time.Minute) }}},
		{name: "not yet valid, custom skew", data: good, v: &Verifier{Keys: []ed25519.PublicKey{pub}, MaxSkew: time.Minute, Now: func() time.Time { return testNow.Add(-time.Hour - 4*time.Minute) }}, want: ErrNotYetValid},

		{name: "empty", data: nil, want: ErrMalformed},
		{name: "truncated", data: good[:len(good)/2], want: ErrMalformed},
		{name: "not an object", data: []byte(`["linkedge.release/v1"]`), want: ErrMalformed, wantMsg: "array"},
		{name: "trailing data", data: append(bytes.Clone(good), []byte(` {}`)...), want: ErrMalformed, wantMsg: "after the top-level value"},
		{name: "duplicate key", data: bytes.Replace(good, []byte(`{"canary"`), []byte(`{"model":"x","canary"`), 1), want: ErrMalformed, wantMsg: "duplicate"},
		{name: "float number", data: bytes.Replace(good, []byte(`"serial":7`), []byte(`"serial":7.0`), 1), want: ErrMalformed, wantMsg: "7.0"},
		{name: "exponent number", data: bytes.Replace(good, []byte(`"serial":7`), []byte(`"serial":7e0`), 1), want: ErrMalformed},
		{name: "invalid UTF-8", data: bytes.Replace(good, []byte(`aps-failure`), []byte("aps-\xffailure"), 1), want: ErrMalformed, wantMsg: "UTF-8"},
		{name: "too deep", data: []byte(strings.Repeat("[", 100) + strings.Repeat("]", 100)), want: ErrMalformed, wantMsg: "nested"},
		{name: "too large", data: bytes.Repeat([]byte(" "), MaxSize+1), want: ErrTooLarge},

		{name: "signed unknown field", data: resign(func(m map[string]any) { m["priority"] = 1 }), want: ErrMalformed, wantMsg: `unknown field "priority" at top level`},
		{name: "signed unknown nested field", data: resign(func(m map[string]any) { sub(m, "canary", "artifact")["mirror"] = "x" }), want: ErrMalformed, wantMsg: `unknown field "mirror" in canary.artifact`},
		{name: "signed differently cased field", data: resign(func(m map[string]any) { m["Model"] = m["model"]; delete(m, "model") }), want: ErrMalformed, wantMsg: `"Model"`},
		{name: "signed wrong type", data: resign(func(m map[string]any) { m["serial"] = "7" }), want: ErrMalformed},
		{name: "signed bad time", data: resign(func(m map[string]any) { m["issued_at"] = "yesterday" }), want: ErrMalformed},
		{name: "signed newer schema", data: resign(func(m map[string]any) { m["schema"] = "linkedge.release/v2" }), want: ErrInvalid, wantMsg: "upgrade"},
		{name: "signed bad model id", data: resign(func(m map[string]any) { m["model"] = "a/b" }), want: ErrInvalid, wantMsg: "model:"},
		{name: "signed zero serial", data: resign(func(m map[string]any) { m["serial"] = 0 }), want: ErrInvalid, wantMsg: "serial"},
		{name: "signed bad sha256", data: resign(func(m map[string]any) { sub(m, "stable", "artifact")["sha256"] = strings.Repeat("A", 64) }), want: ErrInvalid, wantMsg: "stable.artifact.sha256"},
		{name: "signed zero size", data: resign(func(m map[string]any) { sub(m, "stable", "artifact")["size"] = 0 }), want: ErrInvalid, wantMsg: "stable.artifact.size"},
		{name: "signed ftp url", data: resign(func(m map[string]any) { sub(m, "stable", "artifact")["url"] = "ftp://x/y" }), want: ErrInvalid, wantMsg: "scheme"},
		{name: "signed percent 101", data: resign(func(m map[string]any) { sub(m, "canary")["percent"] = 101 }), want: ErrInvalid, wantMsg: "canary.percent"},
		{name: "signed container without image", data: resign(func(m map[string]any) { delete(sub(m, "canary", "runtime"), "image") }), want: ErrInvalid, wantMsg: "canary.runtime.image"},
		{name: "signed image by tag", data: resign(func(m map[string]any) { sub(m, "canary", "runtime")["image"] = "linkedge/aps:latest" }), want: ErrInvalid, wantMsg: "pinned by digest"},
		{name: "signed expiry before issue", data: resign(func(m map[string]any) { m["expires_at"] = "2025-06-01T10:00:00Z" }), want: ErrInvalid, wantMsg: "expires_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.v
			if v == nil {
				v = testVerifier(pub)
			}
			r, err := v.Verify(tt.data)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if r == nil || r.Model != "aps-failure" || r.Signature == nil {
					t.Fatalf("Verify returned %+v", r)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if r != nil {
				t.Errorf("Verify returned a release along with error %v", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
			assertOneSentinel(t, err)
		})
	}
}

// flipUnusedBits changes a base64 character to another one with the same
// top 4 bits, which decodes to the same bytes under a lax decoder.
func flipUnusedBits(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.IndexByte(alphabet, c)
	return alphabet[i^0x01]
}

// assertOneSentinel checks that err wraps exactly one sentinel, so callers
// can switch on errors.Is without ambiguity.
func assertOneSentinel(t *testing.T, err error) {
	t.Helper()
	n := 0
	for _, s := range []error{ErrTooLarge, ErrMalformed, ErrUnsigned, ErrUnknownKey, ErrBadSignature, ErrInvalid, ErrExpired, ErrNotYetValid, ErrStale} {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("error %q wraps %d sentinels, want 1", err, n)
	}
}

func TestVerifyReturnsSignedContent(t *testing.T) {
	pub, priv := testKey("publisher")
	want := testRelease()
	data, err := Sign(want, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := testVerifier(pub).Verify(data)
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, got, want) {
		t.Fatalf("Verify returned\n%+v\nwant\n%+v", got, want)
	}
	if got.Signature.KeyID != KeyID(pub) || got.Signature.Algorithm != AlgorithmEd25519 {
		t.Errorf("signature = %+v", got.Signature)
	}
}

func TestSignOutputIsCanonical(t *testing.T) {
	_, priv := testKey("publisher")
	data := mustSign(t, priv, nil)
	tree, err := parseJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	if canon := appendCanonical(nil, tree); !bytes.Equal(canon, data) {
		t.Errorf("Sign output is not in canonical form:\n%s\n%s", data, canon)
	}
	if !bytes.Contains(data, []byte(`&x=<y>`)) {
		t.Errorf("HTML characters were escaped: %s", data)
	}
	// Signing is deterministic (Ed25519 is), so republishing the same
	// release gives identical bytes.
	if again := mustSign(t, priv, nil); !bytes.Equal(again, data) {
		t.Error("Sign is not deterministic")
	}
}

func TestSignRejects(t *testing.T) {
	_, priv := testKey("publisher")
	tests := []struct {
		name, wantMsg string
		edit          func(r *Release)
	}{
		{"schema", "schema", func(r *Release) { r.Schema = "" }},
		{"model", "model", func(r *Release) { r.Model = "a b" }},
		{"serial", "serial", func(r *Release) { r.Serial = -1 }},
		{"issued_at", "issued_at", func(r *Release) { r.IssuedAt = time.Time{} }},
		{"expires_at", "expires_at", func(r *Release) { r.ExpiresAt = time.Time{} }},
		{"expires equals issued", "not after", func(r *Release) { r.ExpiresAt = r.IssuedAt }},
		{"version", "stable.version", func(r *Release) { r.Stable.Version = 0 }},
		{"url missing", "stable.artifact.url: is missing", func(r *Release) { r.Stable.Artifact.URL = "" }},
		{"url no host", "no host", func(r *Release) { r.Stable.Artifact.URL = "https:///x" }},
		{"url credentials", "credentials", func(r *Release) { r.Stable.Artifact.URL = "https://u:p@h/x" }},
		{"url relative", "scheme", func(r *Release) { r.Stable.Artifact.URL = "/models/x.tar.gz" }},
		{"sha256 short", "sha256", func(r *Release) { r.Stable.Artifact.SHA256 = "abc" }},
		{"size", "size", func(r *Release) { r.Stable.Artifact.Size = -5 }},
		{"media type", "media_type", func(r *Release) { r.Stable.Artifact.MediaType = "application/gzip" }},
		{"runtime kind", "runtime.kind", func(r *Release) { r.Stable.Runtime.Kind = "docker" }},
		{"inprocess with image", "runtime.image", func(r *Release) { r.Stable.Runtime.Image = "x@sha256:" + strings.Repeat("a", 64) }},
		{"container digest uppercase", "pinned by digest", func(r *Release) { r.Canary.Runtime.Image = "x@sha256:" + strings.Repeat("A", 64) }},
		{"registry", "source.registry", func(r *Release) { r.Stable.Source.Registry = "mlflow" }},
		{"percent", "canary.percent", func(r *Release) { r.Canary.Percent = -1 }},
		{"group", "canary.groups[1]", func(r *Release) { r.Canary.Groups = []string{"ok", "not ok"} }},
		{"invalid UTF-8", "invalid UTF-8", func(r *Release) { r.Stable.Source.ApprovedBy = "\xff" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testRelease()
			tt.edit(r)
			_, err := Sign(r, priv)
			if err == nil {
				t.Fatal("Sign succeeded")
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v wraps neither ErrInvalid nor ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
			if r.Signature != nil {
				t.Error("Sign set a signature on failure")
			}
		})
	}

	t.Run("reports every problem", func(t *testing.T) {
		r := testRelease()
		r.Serial = 0
		r.Stable.Version = 0
		err := r.Validate()
		for _, want := range []string{"serial", "stable.version"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Validate() = %v, want it to mention %q", err, want)
			}
		}
	})

	t.Run("bad key", func(t *testing.T) {
		if _, err := Sign(testRelease(), priv[:32]); err == nil {
			t.Fatal("Sign accepted a 32-byte private key")
		}
	})
}

func sameJSON(t tb, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}
