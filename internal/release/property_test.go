package release

import (
	"crypto/ed25519"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"pgregory.net/rapid"
)

// Generators for valid releases. Free-text fields get arbitrary Unicode
// (control characters, U+2028, quotes, backslashes, HTML characters) to
// exercise canonical string escaping; only U+FFFD is excluded, which the
// format refuses.

func genID() *rapid.Generator[string] {
	return rapid.StringMatching(`[A-Za-z0-9._-]{1,64}`).Filter(func(s string) bool { return s != "." && s != ".." })
}

func genText() *rapid.Generator[string] {
	return rapid.String().Filter(func(s string) bool { return !strings.ContainsRune(s, utf8.RuneError) })
}

func genTime(t *rapid.T, label string) time.Time {
	sec := rapid.Int64Range(946684800, 4102444800).Draw(t, label+"_sec") // 2000 to 2100
	nsec := rapid.Int64Range(0, 999999999).Draw(t, label+"_nsec")
	return time.Unix(sec, nsec).UTC()
}

func genTarget(t *rapid.T, label string) Target {
	tgt := Target{
		Version: rapid.Int64Range(1, 1<<62).Draw(t, label+"_version"),
		Artifact: Artifact{
			URL: fmt.Sprintf("%s://%s/%s?%s",
				rapid.SampledFrom([]string{"http", "https"}).Draw(t, label+"_scheme"),
				rapid.StringMatching(`[a-z0-9]{1,20}(\.[a-z0-9]{1,10}){0,3}(:[0-9]{1,5})?`).Draw(t, label+"_host"),
				url.PathEscape(genText().Draw(t, label+"_path")),
				url.QueryEscape(genText().Draw(t, label+"_query"))),
			SHA256:    rapid.StringMatching(`[0-9a-f]{64}`).Draw(t, label+"_sha256"),
			Size:      rapid.Int64Range(1, 1<<62).Draw(t, label+"_size"),
			MediaType: MediaTypeBundle,
		},
		Runtime: Runtime{Kind: RuntimeInProcess},
		Source: Source{
			Registry:        rapid.SampledFrom([]string{RegistryLocal, RegistrySageMaker}).Draw(t, label+"_registry"),
			ModelPackageARN: genText().Draw(t, label+"_arn"),
			ApprovedBy:      genText().Draw(t, label+"_by"),
		},
	}
	if rapid.Bool().Draw(t, label+"_approved") {
		tgt.Source.ApprovedAt = genTime(t, label+"_approved_at")
	}
	if rapid.Bool().Draw(t, label+"_container") {
		tgt.Runtime = Runtime{
			Kind:  RuntimeContainer,
			Image: rapid.StringMatching(`[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}(:[a-z0-9.]{1,8})?@sha256:[0-9a-f]{64}`).Draw(t, label+"_image"),
		}
	}
	return tgt
}

func genRelease(t *rapid.T) *Release {
	issued := genTime(t, "issued")
	r := &Release{
		Schema:    Schema,
		Model:     genID().Draw(t, "model"),
		Serial:    rapid.Int64Range(1, 1<<62).Draw(t, "serial"),
		IssuedAt:  issued,
		ExpiresAt: issued.Add(time.Duration(rapid.Int64Range(1, int64(365*24*time.Hour)).Draw(t, "validity"))),
		Stable:    genTarget(t, "stable"),
	}
	if rapid.Bool().Draw(t, "has_canary") {
		r.Canary = &Canary{
			Target:  genTarget(t, "canary"),
			Percent: rapid.IntRange(0, 100).Draw(t, "percent"),
			Groups:  rapid.SliceOfN(genID(), 0, 5).Draw(t, "groups"),
		}
	}
	return r
}

func TestPropertySignVerifyRoundTrip(t *testing.T) {
	pub, priv := testKey("publisher")
	rapid.Check(t, func(t *rapid.T) {
		r := genRelease(t)
		data, err := Sign(r, priv)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		v := &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return r.IssuedAt }}
		got, err := v.Verify(data)
		if err != nil {
			t.Fatalf("Verify: %v\n%s", err, data)
		}
		if !sameJSON(t, got, r) {
			t.Fatalf("round trip changed the release:\n got %+v\nwant %+v", got, r)
		}
	})
}

// Any single changed byte must be caught. The one exception is a change
// that leaves the content identical, such as the case of a hex digit in a
// \u00XX escape (the canonical form of a control character); then Verify
// may succeed, but only with exactly the signed content.
func TestPropertySingleByteChange(t *testing.T) {
	pub, priv := testKey("publisher")
	rapid.Check(t, func(t *rapid.T) {
		r := genRelease(t)
		data, err := Sign(r, priv)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		v := &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return r.IssuedAt }}
		for k := range 20 {
			i := rapid.IntRange(0, len(data)-1).Draw(t, fmt.Sprint("index", k))
			b := rapid.Byte().Filter(func(b byte) bool { return b != data[i] }).Draw(t, fmt.Sprint("byte", k))
			changed := []byte(string(data))
			changed[i] = b
			got, err := v.Verify(changed)
			if err == nil && !sameJSON(t, got, r) {
				t.Fatalf("byte %d changed %q -> %q: Verify accepted different content\n%s", i, data[i], b, changed)
			}
		}
	})
}
