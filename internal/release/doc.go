// Package release defines the signed release document: the contract between
// the LinkEdge publisher and the trucks.
//
// # What it says
//
// For one model, a release document names the [Target] every truck should
// run (Stable) and, optionally, a [Canary] target that a chosen share of the
// fleet runs first. A target names the model version, the artifact to
// download (URL, SHA-256, size, media type), how to run it, and where it came
// from. The publisher keeps one document per model retained on the fleet
// broker (see package topics) and re-signs it before it expires.
//
// # Trust chain
//
// The broker, the network and the artifact store are not trusted. What a
// truck trusts is the publisher's Ed25519 public key, pinned on the truck at
// install time. Everything else follows from it:
//
//  1. The truck verifies the document's signature with a pinned key BEFORE
//     it looks at any other field. Until then the bytes are only parsed
//     enough to find the signature and compute the canonical form; no field
//     value is acted on, and nothing is logged as if it were true.
//  2. The signature covers the canonical form of every received member except
//     "signature" itself (see [Canonical]), computed from the bytes as
//     received, not from a re-encoding of the decoded struct. A field this
//     agent does not know is therefore still covered, and is then refused by
//     the strict decode: an old agent never silently ignores a signed
//     instruction it does not understand.
//  3. The signed document carries the artifact's SHA-256 and size, so the
//     artifact can come from any mirror or cache: the truck checks the
//     download against the digest before it unpacks or loads it.
//  4. Container runtimes are pinned by image digest for the same reason.
//
// # Freshness
//
// A valid signature proves who wrote a document, not that it is current. Two
// more checks stop an attacker (or a confused broker) from replaying an old,
// genuinely signed document:
//
//   - Serial: strictly increasing per model. A truck remembers the last
//     serial it accepted and refuses anything not newer ([CheckNewer]). To
//     withdraw a bad version the publisher announces the older version with
//     a newer serial, so "roll back" is a forward step in serial order.
//   - Expiry: each document carries issued_at and expires_at, and trucks
//     refuse it outside that window (with a clock-skew allowance). A
//     replayed document therefore dies at its expiry even on a truck that
//     never saw the newer one. The publisher re-signs (same content, new
//     serial and times) well before expiry; a truck offline for longer than
//     the validity window keeps running what it has and picks up the current
//     document when it reconnects.
//
// # Canary selection
//
// A truck runs the canary target if it belongs to one of the canary's groups,
// or if its bucket ([Bucket]) is below the canary percent. The bucket depends
// only on the model and truck id, so it is stable across documents: raising
// the percent only adds trucks, and each model samples a different cohort.
//
// # Keys
//
// Keys are Ed25519, stored as PEM: PKCS#8 "PRIVATE KEY" (mode 0600, on the
// publisher only) and PKIX "PUBLIC KEY" (on every truck). A key is named in a
// document by its [KeyID], so a truck can pin several keys during a rotation.
package release
