package sagemaker

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"

	"github.com/linkedge/linkedge/publisher/s3dist"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalidConfig wraps every configuration mistake.
	ErrInvalidConfig = errors.New("sagemaker: invalid config")
	// ErrGroupNotFound: SageMaker has no such model package group.
	ErrGroupNotFound = errors.New("model package group not found")
	// ErrPackageNotFound: SageMaker has no such model package.
	ErrPackageNotFound = errors.New("model package not found")
	// ErrNoVersion: the package has no ModelPackageVersion (it is not a
	// versioned package of a group).
	ErrNoVersion = errors.New("model package has no version")
	// ErrNoArtifact: the package names no model data
	// (InferenceSpecification.Containers[0].ModelDataUrl).
	ErrNoArtifact = errors.New("model package has no model data url")
	// ErrImageNotPinned: with the container runtime, the package's serving
	// image is not pinned by digest (or there is none), so no release can
	// name exactly what trucks would run.
	ErrImageNotPinned = errors.New("model package image is not pinned by digest")
	// ErrNotReady: the package's ModelPackageStatus is not Completed.
	ErrNotReady = errors.New("model package is not completed")
	// ErrThrottled: SageMaker or S3 asked us to slow down; the registry
	// backs off.
	ErrThrottled = errors.New("throttled")
	// ErrUnavailable: nothing is known about any group yet.
	ErrUnavailable = errors.New("sagemaker: registry unavailable")
	// ErrMalformedEvent: an SQS message that is not a readable event.
	ErrMalformedEvent = errors.New("malformed event")
	// ErrOtherEvent: a well-formed event of another kind than a model
	// package state change.
	ErrOtherEvent = errors.New("not a model package state change")
)

// class says what an error tells about the thing that failed.
type class int

const (
	// transient: nothing is known about the version; ask again later.
	transient class = iota
	// throttled: transient, and the service wants fewer requests.
	throttled
	// permanent: the version (or group) itself is wrong until someone
	// changes it.
	permanent
)

// throttles are the SDK's own throttle classifiers: ThrottlingException,
// Throttling, RequestLimitExceeded, SlowDown, TooManyRequestsException, a
// bare 429, and the rest of the SDK's list.
var throttles = retry.IsErrorThrottles(retry.DefaultThrottles)

func classify(err error) class {
	switch {
	case err == nil:
		return transient
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return transient
	case errors.Is(err, ErrThrottled), throttles.IsErrorThrottle(err) == aws.TrueTernary:
		return throttled
	case errors.Is(err, ErrGroupNotFound), errors.Is(err, ErrPackageNotFound), errors.Is(err, ErrNoVersion),
		errors.Is(err, ErrNoArtifact), errors.Is(err, ErrImageNotPinned), errors.Is(err, ErrNotReady),
		errors.Is(err, s3dist.ErrNotS3), errors.Is(err, s3dist.ErrNotFound), errors.Is(err, s3dist.ErrInvalidBundle):
		return permanent
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ValidationException", "ResourceNotFound", "ResourceNotFoundException":
			return permanent
		}
	}
	// Access denied, expired credentials, network errors, 5xx: they say
	// nothing about the version, so nothing may be concluded from them.
	return transient
}

// notFound reports whether a SageMaker error says the resource does not
// exist (the service answers ValidationException "... does not exist.").
func notFound(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "ResourceNotFound", "ResourceNotFoundException":
		return true
	case "ValidationException":
		return containsFold(ae.ErrorMessage(), "does not exist") || containsFold(ae.ErrorMessage(), "not found")
	}
	return false
}
