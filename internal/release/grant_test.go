package release

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

const testSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func testGrant() *Grant {
	return &Grant{
		Schema: GrantSchema, Truck: "truck-1", Model: "aps-failure", SHA256: testSHA,
		URL:      "https://linkedge-ml.s3.eu-west-1.amazonaws.com/aps-failure/3/model.tar.gz?X-Amz-Signature=abc&X-Amz-Expires=86400",
		IssuedAt: testNow.Add(-time.Minute), ExpiresAt: testNow.Add(23 * time.Hour),
	}
}

func signGrant(t *testing.T, g *Grant, key ed25519.PrivateKey) []byte {
	t.Helper()
	doc, err := SignGrant(g, key)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestGrantRoundTrip(t *testing.T) {
	pub, priv := testKey("publisher")
	doc := signGrant(t, testGrant(), priv)
	v := &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return testNow }}
	g, err := v.VerifyGrant(doc, "truck-1", testSHA)
	if err != nil {
		t.Fatal(err)
	}
	if want := testGrant(); g.URL != want.URL || g.Truck != want.Truck || !g.ExpiresAt.Equal(want.ExpiresAt) || g.Signature == nil {
		t.Fatalf("got %+v", g)
	}
}

func TestVerifyGrantRefuses(t *testing.T) {
	pub, priv := testKey("publisher")
	_, other := testKey("someone else")
	resign := func(edit func(m map[string]any)) []byte {
		doc := signGrant(t, testGrant(), priv)
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "signature")
		edit(m)
		raw, _ := json.Marshal(m)
		obj, err := parseDocument(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, sig, err := signDocument(obj, priv)
		if err != nil {
			t.Fatal(err)
		}
		m["signature"] = sig
		out, _ := json.Marshal(m)
		return out
	}
	tampered := signGrant(t, testGrant(), priv)
	tampered = []byte(strings.Replace(string(tampered), "linkedge-ml.s3", "evil-host.s3", 1))
	release := mustSign(t, priv, nil)
	for _, tc := range []struct {
		name  string
		data  []byte
		truck string
		sha   string
		now   time.Time
		want  error
		msg   string
	}{
		{name: "another truck's grant", data: signGrant(t, testGrant(), priv), truck: "truck-2", sha: testSHA, want: ErrInvalid, msg: `for truck "truck-1", this is "truck-2"`},
		{name: "another artifact", data: signGrant(t, testGrant(), priv), truck: "truck-1", sha: strings.Repeat("0", 64), want: ErrInvalid, msg: "the download needs 0000"},
		{name: "expired", data: signGrant(t, testGrant(), priv), truck: "truck-1", sha: testSHA, now: testNow.Add(24 * time.Hour), want: ErrExpired},
		{name: "not yet valid", data: signGrant(t, testGrant(), priv), truck: "truck-1", sha: testSHA, now: testNow.Add(-time.Hour), want: ErrNotYetValid},
		{name: "changed after signing", data: tampered, truck: "truck-1", sha: testSHA, want: ErrBadSignature},
		{name: "signed by another key", data: signGrant(t, testGrant(), other), truck: "truck-1", sha: testSHA, want: ErrUnknownKey},
		{name: "unsigned", data: []byte(`{"schema":"linkedge.grant/v1","truck":"truck-1"}`), truck: "truck-1", sha: testSHA, want: ErrUnsigned},
		{name: "a release is not a grant", data: release, truck: "truck-1", sha: testSHA, want: ErrInvalid, msg: `understands "linkedge.grant/v1"`},
		{name: "signed unknown field", data: resign(func(m map[string]any) { m["mirror"] = "x" }), truck: "truck-1", sha: testSHA, want: ErrMalformed, msg: `unknown field "mirror"`},
		{name: "file url", data: resign(func(m map[string]any) { m["url"] = "file:///etc/passwd" }), truck: "truck-1", sha: testSHA, want: ErrInvalid, msg: "scheme"},
		{name: "credentials in url", data: resign(func(m map[string]any) { m["url"] = "https://u:p@example.com/x" }), truck: "truck-1", sha: testSHA, want: ErrInvalid, msg: "embeds credentials"},
		{name: "lives too long", data: resign(func(m map[string]any) { m["expires_at"] = testNow.Add(8 * 24 * time.Hour).Format(time.RFC3339) }), truck: "truck-1", sha: testSHA, want: ErrInvalid, msg: "more than"},
		{name: "too large", data: make([]byte, MaxGrantSize+1), truck: "truck-1", sha: testSHA, want: ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = testNow
			}
			v := &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return now }}
			_, err := v.VerifyGrant(tc.data, tc.truck, tc.sha)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestSignGrantValidates(t *testing.T) {
	_, priv := testKey("publisher")
	g := testGrant()
	g.Truck = "truck/1"
	if _, err := SignGrant(g, priv); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "truck") {
		t.Fatalf("got %v", err)
	}
}

func TestParseGrantRequest(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"ok", `{"model":"aps-failure","sha256":"` + testSHA + `"}`, nil},
		{"ok with spaces", " {\"sha256\":\"" + testSHA + "\", \"model\":\"aps-failure\"}\n", nil},
		{"unknown member", `{"model":"aps-failure","sha256":"` + testSHA + `","truck":"truck-2"}`, ErrMalformed},
		{"trailing data", `{"model":"aps-failure","sha256":"` + testSHA + `"}x`, ErrMalformed},
		{"two objects", `{"model":"aps-failure","sha256":"` + testSHA + `"}{}`, ErrMalformed},
		{"not json", `model=aps-failure`, ErrMalformed},
		{"bad digest", `{"model":"aps-failure","sha256":"ABC"}`, ErrInvalid},
		{"bad model", `{"model":"a/b","sha256":"` + testSHA + `"}`, ErrInvalid},
		{"too large", `{"model":"` + strings.Repeat("a", MaxGrantRequestSize) + `"}`, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseGrantRequest([]byte(tc.in))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %+v, %v; want %v", r, err, tc.want)
			}
			if err == nil && (r.Model != "aps-failure" || r.SHA256 != testSHA) {
				t.Fatalf("got %+v", r)
			}
		})
	}
}

func FuzzVerifyGrant(f *testing.F) {
	pub, priv := testKey("publisher")
	doc, err := SignGrant(testGrant(), priv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Add([]byte(`{"schema":"linkedge.grant/v1"}`))
	v := &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return testNow }}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := v.VerifyGrant(data, "truck-1", testSHA)
		if err == nil && (g.Truck != "truck-1" || g.SHA256 != testSHA || g.Validate() != nil) {
			t.Fatalf("accepted %+v", g)
		}
	})
}

func FuzzParseGrantRequest(f *testing.F) {
	f.Add([]byte(`{"model":"aps-failure","sha256":"` + testSHA + `"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseGrantRequest(data)
		if err == nil && (len(data) > MaxGrantRequestSize || !sha256Hex.MatchString(r.SHA256)) {
			t.Fatalf("accepted %q as %+v", data, r)
		}
	})
}
