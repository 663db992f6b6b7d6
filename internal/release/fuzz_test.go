package release

import (
	"bytes"
	"testing"
)

// FuzzVerify feeds arbitrary bytes to Verify. It must never panic, and
// whatever it accepts must be a valid, canonicalizable document.
func FuzzVerify(f *testing.F) {
	pub, priv := testKey("publisher")
	good := mustSign(f, priv, nil)
	for _, seed := range [][]byte{
		good,
		mustSign(f, priv, func(r *Release) { r.Canary = nil }),
		bytes.Replace(good, []byte(`"signature"`), []byte(`"signaturX"`), 1),
		bytes.Replace(good, []byte(`"serial":7`), []byte(`"serial":7.5`), 1),
		[]byte(`{}`),
		[]byte(`{"signature":null}`),
		[]byte(`{"signature":{"key_id":"","algorithm":"ed25519","value":""}}`),
		[]byte(`[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`),
		[]byte(`{"a":"\ud800"}`),
		[]byte("{\"a\":\"\xff\"}"),
		[]byte(`nul`),
		nil,
	} {
		f.Add(seed)
	}
	v := testVerifier(pub)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := v.Verify(data)
		if err != nil {
			if r != nil {
				t.Fatal("Verify returned a release and an error")
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Verify accepted an invalid release: %v", err)
		}
		if _, err := Canonical(data); err != nil {
			t.Fatalf("Verify accepted a document Canonical refuses: %v", err)
		}
		r.TargetFor("truck-1", []string{"g"})
	})
}

// FuzzCanonical checks that canonicalization never panics and is
// idempotent: the canonical form of a canonical form is itself.
func FuzzCanonical(f *testing.F) {
	_, priv := testKey("publisher")
	f.Add(mustSign(f, priv, nil))
	f.Add([]byte(`{"b":[1,{"z":null,"a":"\u2028\n\u0001"}],"a":true}`))
	f.Add([]byte(`{"a":1e3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Canonical(data)
		if err != nil {
			return
		}
		c2, err := Canonical(c)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, c)
		}
		if !bytes.Equal(c, c2) {
			t.Fatalf("not idempotent:\n%s\n%s", c, c2)
		}
	})
}
