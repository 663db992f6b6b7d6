package s3dist

import (
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Sentinel errors, checked with errors.Is. The first four describe the
// artifact itself: asking again will not help until someone fixes it.
var (
	// ErrNotS3: the location is not an s3://bucket/key URL.
	ErrNotS3 = errors.New("not an s3:// url")
	// ErrNotFound: no such bucket or key.
	ErrNotFound = errors.New("s3 object not found")
	// ErrInvalidBundle: the object is not a valid LinkEdge model bundle, or
	// its metadata names another model or version.
	ErrInvalidBundle = errors.New("not a valid linkedge bundle")
	// ErrAccessDenied: the credentials may not read the object. Fix the
	// IAM or bucket policy (docs/pipeline-hook.md).
	ErrAccessDenied = errors.New("s3 access denied")
	// ErrChanged: the object changed while it was read; read it again.
	ErrChanged = errors.New("s3 object changed while it was read")
	// ErrTTL: a presign lifetime outside what SigV4 allows.
	ErrTTL = errors.New("presign lifetime out of range")
)

// classify maps an S3 API error onto this package's sentinels, keeping the
// original error in the chain.
func classify(err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nsb *types.NoSuchBucket
	if errors.As(err, &nsk) || errors.As(err, &nf) || errors.As(err, &nsb) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NoSuchBucket", "NotFound":
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden":
			return fmt.Errorf("%w: %w", ErrAccessDenied, err)
		case "PreconditionFailed":
			return fmt.Errorf("%w: %w", ErrChanged, err)
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case http.StatusForbidden:
			// HEAD answers carry no body, so a 403 has no error code.
			return fmt.Errorf("%w: %w", ErrAccessDenied, err)
		case http.StatusPreconditionFailed:
			return fmt.Errorf("%w: %w", ErrChanged, err)
		}
	}
	return err
}
