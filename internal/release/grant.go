package release

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linkedge/linkedge/internal/topics"
)

// GrantSchema identifies version 1 of the grant document.
const GrantSchema = "linkedge.grant/v1"

// MaxGrantSize is the largest grant [Verifier.VerifyGrant] reads. A grant
// with a presigned S3 URL is about 1.5 KiB.
const MaxGrantSize = 16 << 10

// MaxGrantLifetime bounds a grant's validity window: SigV4's limit for a
// presigned URL, which is what a grant carries.
const MaxGrantLifetime = 7 * 24 * time.Hour

// Grant is the publisher's answer to a truck that needs the bytes of an
// artifact whose release says [Artifact.Grant]: a download URL (typically
// presigned, so a capability until it expires) for one artifact, signed and
// bound to one truck. A grant moves nothing: the truck uses it only for an
// artifact its verified release (or pin) already names, and checks the
// download's size and digest as always; the signature keeps anyone else on
// the broker from pointing the truck's downloader somewhere else.
type Grant struct {
	// Schema must be [GrantSchema].
	Schema string `json:"schema"`
	// Truck is the truck the grant was made for.
	Truck string `json:"truck"`
	// Model and SHA256 name the artifact (its lowercase hex digest).
	Model  string `json:"model"`
	SHA256 string `json:"sha256"`
	// URL downloads it: an http or https URL without user:password@.
	URL string `json:"url"`
	// IssuedAt and ExpiresAt bound the URL's use; ExpiresAt is before the
	// URL itself stops working.
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Signature is filled by [SignGrant].
	Signature *Signature `json:"signature,omitempty"`
}

// Validate checks a grant's content rules, except the signature and the
// clock, in one error wrapping [ErrInvalid].
func (g *Grant) Validate() error {
	var p problems
	if g.Schema != GrantSchema {
		p.add("schema", "is %q, want %q", truncate(g.Schema), GrantSchema)
	}
	if err := topics.ValidID(g.Truck); err != nil {
		p.add("truck", "%v", err)
	}
	if err := topics.ValidID(g.Model); err != nil {
		p.add("model", "%v", err)
	}
	if !sha256Hex.MatchString(g.SHA256) {
		p.add("sha256", "is %q, want 64 lowercase hex characters", truncate(g.SHA256))
	}
	if msg := checkURL(g.URL); msg != "" {
		p.add("url", "%s", msg)
	}
	if p.window(g.IssuedAt, g.ExpiresAt) && g.ExpiresAt.Sub(g.IssuedAt) > MaxGrantLifetime {
		p.add("expires_at", "is %s after issued_at, more than the %s a presigned URL can live", g.ExpiresAt.Sub(g.IssuedAt), MaxGrantLifetime)
	}
	return p.err()
}

// SignGrant validates g, signs it with key and returns the document to
// publish; it sets g.Signature.
func SignGrant(g *Grant, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("release: sign grant: private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	unsigned := *g
	unsigned.Signature = nil
	doc, sig, err := signDocument(&unsigned, key)
	if err != nil {
		return nil, err
	}
	g.Signature = sig
	return doc, nil
}

// VerifyGrant checks a grant the way [Verifier.Verify] checks a release
// (size, canonical parse, signature against a pinned key, schema, strict
// decoding, content, validity window with the skew allowance), and then
// that it was made for truck and for the artifact with digest sha256.
func (v *Verifier) VerifyGrant(data []byte, truck, sha256 string) (*Grant, error) {
	if len(data) > MaxGrantSize {
		return nil, wrap(ErrTooLarge, "grant of %d bytes, limit %d", len(data), MaxGrantSize)
	}
	g, err := decodeSigned[Grant](v, data, GrantSchema)
	if err != nil {
		return nil, err
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	switch {
	case g.Truck != truck:
		return nil, wrap(ErrInvalid, "grant is for truck %q, this is %q; ignore it", g.Truck, truck)
	case g.SHA256 != sha256:
		return nil, wrap(ErrInvalid, "grant is for artifact %s, the download needs %s; ignore it", g.SHA256, sha256)
	}
	if err := v.checkWindow(fmt.Sprintf("grant for %s", g.SHA256), g.IssuedAt, g.ExpiresAt); err != nil {
		return nil, err
	}
	return g, nil
}

// GrantRequest is what a truck sends on its grant-request topic
// (topics.TruckGrantRequest) to ask for a [Grant]. The truck is the
// topic's, never a member: the broker lets a truck publish only on its
// own topics.
type GrantRequest struct {
	Model  string `json:"model"`
	SHA256 string `json:"sha256"`
}

// MaxGrantRequestSize bounds a grant request (a real one is ~100 bytes).
const MaxGrantRequestSize = 1 << 10

// ParseGrantRequest decodes a grant request strictly: at most
// [MaxGrantRequestSize] bytes, one JSON object with exactly the members of
// [GrantRequest], a valid model id and a lowercase hex digest.
func ParseGrantRequest(data []byte) (GrantRequest, error) {
	var r GrantRequest
	if len(data) > MaxGrantRequestSize {
		return r, wrap(ErrTooLarge, "grant request of %d bytes, limit %d", len(data), MaxGrantRequestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return GrantRequest{}, wrap(ErrMalformed, "grant request: %v; want {\"model\":…,\"sha256\":…}", err)
	}
	if len(bytes.TrimSpace(data[dec.InputOffset():])) > 0 {
		return GrantRequest{}, wrap(ErrMalformed, "grant request: data after the JSON object")
	}
	var p problems
	if err := topics.ValidID(r.Model); err != nil {
		p.add("model", "%v", err)
	}
	if !sha256Hex.MatchString(r.SHA256) {
		p.add("sha256", "is %q, want 64 lowercase hex characters", truncate(r.SHA256))
	}
	if err := p.err(); err != nil {
		return GrantRequest{}, fmt.Errorf("grant request: %w", err)
	}
	return r, nil
}
