package release

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"
)

// The example in docs/release-format.md, verbatim. If this test fails, the
// format changed and the doc must change with it.
const (
	docsExamplePublicKey = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAfbg/RffePJM/dDu8MPE8GIvbfOlVJz6dgulOnlilmH8=
-----END PUBLIC KEY-----
`
	docsExampleKeyID    = "d4fa10368ba2a31e"
	docsExampleDocument = `{
  "canary": {
    "artifact": {
      "media_type": "application/vnd.linkedge.bundle.v1+tar+gzip",
      "sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
      "size": 49102,
      "url": "https://models.example.com/aps-failure/4/model.tar.gz"
    },
    "groups": [
      "test-fleet"
    ],
    "percent": 10,
    "runtime": {
      "kind": "inprocess"
    },
    "source": {
      "approved_at": "2025-06-01T10:00:00Z",
      "approved_by": "jane@example.com",
      "model_package_arn": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/aps-failure/4",
      "registry": "sagemaker"
    },
    "version": 4
  },
  "expires_at": "2025-06-08T12:00:00Z",
  "issued_at": "2025-06-01T12:00:00Z",
  "model": "aps-failure",
  "schema": "linkedge.release/v1",
  "serial": 7,
  "signature": {
    "algorithm": "ed25519",
    "key_id": "d4fa10368ba2a31e",
    "value": "qOpfoAYb/6mtCiygDLl/Od+Ifjg9eWVbBEiWYR18A6nxLiEg3dx4GpiAxc2bCxQVKQV0oQcP80iD2awI/jCzBg=="
  },
  "stable": {
    "artifact": {
      "media_type": "application/vnd.linkedge.bundle.v1+tar+gzip",
      "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
      "size": 48213,
      "url": "https://models.example.com/aps-failure/3/model.tar.gz"
    },
    "runtime": {
      "kind": "inprocess"
    },
    "source": {
      "approved_at": "2025-05-29T12:00:00Z",
      "approved_by": "jane@example.com",
      "model_package_arn": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/aps-failure/3",
      "registry": "sagemaker"
    },
    "version": 3
  }
}`
)

func TestDocsExample(t *testing.T) {
	pub, err := ParsePublicKeyPEM([]byte(docsExamplePublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if got := KeyID(pub); got != docsExampleKeyID {
		t.Errorf("KeyID = %s, want %s", got, docsExampleKeyID)
	}
	issued := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	v := &Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return issued }}
	r, err := v.Verify([]byte(docsExampleDocument))
	if err != nil {
		t.Fatal(err)
	}
	if r.Serial != 7 || r.Stable.Version != 3 || r.Canary.Version != 4 || r.Canary.Percent != 10 {
		t.Errorf("decoded %+v", r)
	}

	// The publisher sends the compact form; re-signing the decoded release
	// with the same key reproduces it exactly.
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(docsExampleDocument)); err != nil {
		t.Fatal(err)
	}
	_, priv := testKey("docs-example")
	again, err := Sign(r, priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, compact.Bytes()) {
		t.Errorf("re-signed example differs:\n%s\n%s", again, compact.Bytes())
	}
}

func TestDocsCanonicalExample(t *testing.T) {
	got, err := Canonical([]byte(`{ "b": [1, {"z": null, "a": true}], "a": "x\u0041\/<\u001F" }`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"xA/<\u001f","b":[1,{"a":true,"z":null}]}`; string(got) != want {
		t.Errorf("Canonical = %s, want %s", got, want)
	}
}
