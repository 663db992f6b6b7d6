package release

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// Sign validates r, signs it with key and returns the document to publish.
// It sets r.Signature (any previous signature is replaced).
//
// The returned bytes are the canonical form of the whole document, signature
// included, so they are compact and byte-for-byte reproducible; any
// equivalent JSON spelling would verify just as well.
func Sign(r *Release, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("release: sign: private key is %d bytes, want %d (load it with ReadPrivateKeyFile)", len(key), ed25519.PrivateKeySize)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	unsigned := *r
	unsigned.Signature = nil
	doc, sig, err := signDocument(&unsigned, key)
	if err != nil {
		return nil, err
	}
	r.Signature = sig
	return doc, nil
}

// signDocument signs the JSON form of v (which has no signature member)
// and returns the canonical document with its signature.
func signDocument(v any, key ed25519.PrivateKey) ([]byte, *Signature, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, nil, wrap(ErrInvalid, "encode: %v", err)
	}
	// Go through the same parser a truck uses, so a document that could not
	// be canonicalized (a string with invalid UTF-8, say) fails here rather
	// than on every truck.
	obj, err := parseDocument(raw)
	if err != nil {
		return nil, nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	sig := &Signature{
		KeyID:     KeyID(pub),
		Algorithm: AlgorithmEd25519,
		Value:     base64.StdEncoding.EncodeToString(ed25519.Sign(key, signedBytes(obj))),
	}
	obj["signature"] = map[string]any{
		"key_id":    sig.KeyID,
		"algorithm": sig.Algorithm,
		"value":     sig.Value,
	}
	return appendCanonical(nil, obj), sig, nil
}
