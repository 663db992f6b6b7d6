package release

import "time"

// Schema identifies version 1 of the release document. A change that an old
// truck could misread gets a new schema (and the old truck refuses it).
const Schema = "linkedge.release/v1"

// MediaTypeBundle is the media type of a LinkEdge model bundle (a gzipped tar
// with model.onnx and metadata.json; see package inference/bundle).
const MediaTypeBundle = "application/vnd.linkedge.bundle.v1+tar+gzip"

// Runtime kinds.
const (
	// RuntimeInProcess runs the model inside the agent (ONNX Runtime).
	RuntimeInProcess = "inprocess"
	// RuntimeContainer runs the model in a container image pinned by digest.
	RuntimeContainer = "container"
)

// Model registries a target can come from (informational).
const (
	RegistryLocal     = "local"
	RegistrySageMaker = "sagemaker"
)

// AlgorithmEd25519 is the only signature algorithm.
const AlgorithmEd25519 = "ed25519"

// Release is the signed release document for one model.
type Release struct {
	// Schema must be [Schema].
	Schema string `json:"schema"`
	// Model is the model id (see topics.ValidID).
	Model string `json:"model"`
	// Serial increases strictly with every document the publisher signs for
	// this model; trucks refuse a serial not above the last one they
	// accepted (see [CheckNewer]).
	Serial int64 `json:"serial"`
	// IssuedAt and ExpiresAt bound the document's validity; see
	// [Verifier.MaxSkew].
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Stable is what every truck runs unless it is selected for Canary.
	// A clearing pin (Clear) has none.
	Stable Target `json:"stable,omitzero"`
	// Canary, when set, is tried by a subset of the fleet first. A pin has
	// none.
	Canary *Canary `json:"canary,omitempty"`
	// Truck is set on a pin (the document retained on one truck's desired
	// topic) and on nothing else: it names the one truck the pin is for, so
	// that no other signed document (a model release, another truck's pin)
	// replayed on that topic can move the truck. See [Release.CheckAudience].
	Truck string `json:"truck,omitempty"`
	// Clear, on a pin, hands the truck back to the model's release. A
	// clearing pin has no targets; clearing takes a signed document, so
	// that no one but the publisher can clear an operator's pin.
	Clear bool `json:"clear,omitempty"`
	// Signature is filled by [Sign] and checked by [Verifier.Verify]. It is
	// not covered by itself: the signed bytes are the canonical form of
	// every other member.
	Signature *Signature `json:"signature,omitempty"`
}

// Target is one model version a truck can run.
type Target struct {
	// Version is the model version, 1 or above (the registry's version
	// number, e.g. a SageMaker model package version).
	Version  int64    `json:"version"`
	Artifact Artifact `json:"artifact"`
	Runtime  Runtime  `json:"runtime"`
	Source   Source   `json:"source"`
}

// Canary is a target rolled out to part of the fleet. Its JSON form is the
// target's members plus "percent" and "groups".
type Canary struct {
	Target
	// Percent of trucks, 0 to 100, selected by [Bucket].
	Percent int `json:"percent"`
	// Groups whose trucks run the canary regardless of Percent (e.g.
	// "test-fleet"). Each is a valid id (see topics.ValidID).
	Groups []string `json:"groups,omitempty"`
}

// Artifact is the model bundle to download. The truck checks SHA256 and
// Size before using the download, so URL may point at any mirror.
type Artifact struct {
	// URL is an http or https URL without credentials.
	URL string `json:"url"`
	// SHA256 is the lowercase hex digest of the file (64 characters).
	SHA256 string `json:"sha256"`
	// Size is the file size in bytes, above 0.
	Size int64 `json:"size"`
	// MediaType must be [MediaTypeBundle].
	MediaType string `json:"media_type"`
	// Grant, when true, says URL names where the artifact lives but does
	// not download it by itself (a private S3 object): the truck asks the
	// publisher for a [Grant], a signed download URL bound to the truck and
	// this digest, when it needs the bytes. A presigned URL then never has
	// to be in the document, which stays the same for as long as the
	// release does instead of being signed again before each URL expires.
	Grant bool `json:"grant,omitempty"`
}

// Runtime says how the truck runs the target.
type Runtime struct {
	// Kind is [RuntimeInProcess] or [RuntimeContainer].
	Kind string `json:"kind"`
	// Image is required iff Kind is [RuntimeContainer], and must be pinned
	// by digest ("repo@sha256:<64 hex>") so the signature covers exactly
	// what runs.
	Image string `json:"image,omitempty"`
}

// Source records where the target came from. It is informational: trucks
// report it but make no decision on it.
type Source struct {
	// Registry is [RegistryLocal] or [RegistrySageMaker].
	Registry        string    `json:"registry"`
	ModelPackageARN string    `json:"model_package_arn,omitempty"`
	ApprovedAt      time.Time `json:"approved_at,omitzero"`
	ApprovedBy      string    `json:"approved_by,omitempty"`
}

// Signature is the Ed25519 signature over the canonical form of the rest of
// the document.
type Signature struct {
	// KeyID is [KeyID] of the signing key's public half.
	KeyID string `json:"key_id"`
	// Algorithm is [AlgorithmEd25519].
	Algorithm string `json:"algorithm"`
	// Value is the 64-byte signature in standard, padded base64.
	Value string `json:"value"`
}
