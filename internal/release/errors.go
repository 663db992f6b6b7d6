package release

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error from this package wraps exactly one of them
// (test with errors.Is) and adds what was wrong and what to do about it.
var (
	// ErrTooLarge: the payload exceeds [MaxSize]. It is not a release
	// document; find out what is publishing on the release topic.
	ErrTooLarge = errors.New("release: document too large")
	// ErrMalformed: not well-formed JSON, not in the shape of schema v1, or
	// not representable canonically (floats, duplicate keys, unknown
	// fields). Check that publisher and agent versions agree.
	ErrMalformed = errors.New("release: malformed document")
	// ErrUnsigned: no signature. Configure the publisher's signing key.
	ErrUnsigned = errors.New("release: document is not signed")
	// ErrUnknownKey: signed by a key the truck does not pin. Install the
	// publisher's current public key on the truck.
	ErrUnknownKey = errors.New("release: signed by a key this truck does not trust")
	// ErrBadSignature: the signature does not verify. The document was
	// altered after signing; discard it.
	ErrBadSignature = errors.New("release: signature does not verify")
	// ErrInvalid: signed and well-formed but its content breaks a rule
	// (bad id, digest, URL, percent...). Fix the publisher's input.
	ErrInvalid = errors.New("release: invalid document")
	// ErrExpired: past expires_at. Check that the publisher is running
	// (it re-signs before expiry) and that the truck's clock is right.
	ErrExpired = errors.New("release: document expired")
	// ErrNotYetValid: issued_at is in the future. Check the truck's clock.
	ErrNotYetValid = errors.New("release: document not yet valid")
	// ErrStale: serial not above the last accepted one; a replay or a
	// rollback attempt. Ignore the document.
	ErrStale = errors.New("release: stale document")
)

// wrap returns an error that wraps sentinel and reads
// "<sentinel>: <formatted detail>".
func wrap(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
