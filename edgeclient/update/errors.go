package update

import (
	"context"
	"errors"
	"fmt"

	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/download"
)

// Class says what a failed step means for the target, and so what the
// machine does next. Every step's error is classified here, in one place.
type Class int

// The classes, from the cheapest to the only one that costs an attempt.
const (
	// Interrupted: the fleet link or the agent's context went away. The
	// record stays; the next Apply of the same target resumes. Free.
	Interrupted Class = iota + 1
	// Deferred: a precondition is not met (an expired download URL, a
	// safety hold). The update waits for the condition; free.
	Deferred
	// Transient: the artifact source or the truck's infrastructure
	// misbehaved (404, 5xx, a captive-portal page, wrong size or sha256,
	// a timeout, a container engine error). Retried with jittered
	// exponential backoff, for ever; a new release or a reconnect retries
	// at once. Free. A URL whose source answered badly MaxURLFailures
	// times is tried only every DeadURLRetry ([ErrDeadURL]).
	Transient
	// Permanent: the model itself is bad on this truck. It does not load,
	// fails its golden samples, or fails probation on served requests. The
	// only class that counts as an attempt; MaxAttempts of them give the
	// target up.
	Permanent
)

func (c Class) String() string {
	switch c {
	case Interrupted:
		return "interrupted"
	case Deferred:
		return "deferred"
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Sentinels callers check with errors.Is; Apply's errors wrap exactly one
// of the first four.
var (
	// ErrInterrupted: see [Interrupted].
	ErrInterrupted = errors.New("update interrupted")
	// ErrDeferred: see [Deferred].
	ErrDeferred = errors.New("update deferred")
	// ErrTransient: see [Transient].
	ErrTransient = errors.New("update failed for now; retrying")
	// ErrPermanent: see [Permanent].
	ErrPermanent = errors.New("model failed on this truck")
	// ErrGivenUp means the target failed MaxAttempts times for a permanent
	// reason and will not be tried again; only a different target (another
	// artifact, runtime or image) moves the truck. It wraps ErrPermanent.
	ErrGivenUp = fmt.Errorf("%w; given up", ErrPermanent)
	// ErrDeadURL means the target's artifact URL answered badly
	// MaxURLFailures times: it is tried again only every DeadURLRetry,
	// and a newer document naming the artifact at another URL is tried at
	// once. It comes with ErrTransient.
	ErrDeadURL = errors.New("artifact url is dead")
)

// classed carries a Class through wrapping.
type classed struct {
	class Class
	err   error
}

func (e *classed) Error() string { return e.err.Error() }
func (e *classed) Unwrap() error { return e.err }

// Is makes errors.Is(err, ErrTransient) (and the others) true.
func (e *classed) Is(target error) bool { return target == e.class.sentinel() }

func (c Class) sentinel() error {
	switch c {
	case Interrupted:
		return ErrInterrupted
	case Deferred:
		return ErrDeferred
	case Transient:
		return ErrTransient
	case Permanent:
		return ErrPermanent
	}
	return nil
}

// Mark gives err class c; Classify then returns c whatever wraps it.
func Mark(c Class, err error) error {
	if err == nil {
		return nil
	}
	return &classed{class: c, err: err}
}

// Classify says what err means for the target. ctx is the context the
// failed step ran on: its end makes any error an interruption, since a
// cancelled call's error says nothing about the artifact or the model.
//
// Unmarked errors are classified by what they wrap:
//   - context cancellation or deadline: Interrupted;
//   - download: 401 or 403 (an expired presigned URL, the truck's clock):
//     Deferred until a fresh release;
//   - download: any other failure, including a digest or size mismatch: the
//     source misbehaved, or a mirror or captive portal answered. Transient;
//   - runtime.ErrUnavailable (the container engine, an image that never
//     answered): Transient;
//   - runtime.ErrUnhealthy, inference.ErrModelMismatch (does not load),
//     inference.ErrGoldenMismatch, bundle.ErrInvalid (the signed bytes are
//     not a valid bundle for this release; the machine checks their sha256
//     first, so this is not corruption at rest): Permanent;
//   - anything else: Transient, because giving a good version up for a
//     local hiccup strands the truck, while a retry costs little.
func Classify(ctx context.Context, err error) Class {
	if err == nil {
		return 0
	}
	var ce *classed
	if errors.As(err, &ce) {
		return ce.class
	}
	if (ctx != nil && ctx.Err() != nil) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Interrupted
	}
	var he *download.HTTPStatusError
	if errors.As(err, &he) && (he.StatusCode == 401 || he.StatusCode == 403) {
		return Deferred
	}
	if errors.Is(err, runtime.ErrUnavailable) {
		return Transient
	}
	if errors.Is(err, runtime.ErrUnhealthy) || errors.Is(err, bundle.ErrInvalid) ||
		errors.Is(err, inference.ErrModelMismatch) || errors.Is(err, inference.ErrGoldenMismatch) {
		return Permanent
	}
	return Transient
}
