package publisher

import (
	"context"
	"errors"
	"time"

	"github.com/linkedge/linkedge/internal/release"
)

// Status is a version's approval status, normalized across registries.
// SageMaker's Approved, Rejected and PendingManualApproval map to
// StatusApproved, StatusRejected and StatusPending.
type Status string

// The statuses. Only approved versions are ever announced.
const (
	StatusPending  Status = "pending"
	StatusApproved Status = "approved"
	StatusRejected Status = "rejected"
)

// Version is one version of one model as a registry reports it: everything
// the publisher needs to decide whether to announce it and to build the
// release document's target.
type Version struct {
	// Model is the model id (topics.ValidID); a SageMaker backend maps a
	// model package group to it.
	Model string
	// Version is the registry's version number, 1 or above.
	Version int64
	Status  Status
	// Description is free text for people; it is not announced.
	Description string
	Artifact    ArtifactRef
	// Runtime says how trucks run it (in-process ONNX, or a container
	// pinned by digest).
	Runtime release.Runtime
	// Source is copied into the release document: the registry kind, the
	// model package ARN, and who approved the version when.
	Source release.Source
}

// ArtifactRef locates a version's model.tar.gz in the registry's own
// storage. It is not what trucks download: a [Distributor] turns it into a
// URL they can use without credentials.
type ArtifactRef struct {
	// Location is a file path, an s3:// URI or an https:// URL.
	Location string
	// SHA256 (lowercase hex) and Size are what trucks check the download
	// against; the registry must know them without the publisher
	// downloading the artifact.
	SHA256 string
	Size   int64
}

// Registry is a model registry the publisher polls. Implementations: the
// local folder registry (see [NewLocalRegistry]); a SageMaker Model
// Registry backend can implement it the same way.
type Registry interface {
	// Name identifies the registry in logs, e.g. "local:/srv/registry".
	Name() string
	// Versions returns every version of every model the registry watches,
	// in any order. An error means "unknown", never "none": the publisher
	// then changes nothing, rather than withdraw what it cannot see.
	Versions(ctx context.Context) ([]Version, error)
}

// Distributor turns an artifact into a URL trucks can download without
// credentials: the local artifact server's URL, or a presigned S3 URL.
type Distributor interface {
	// URL returns the download URL of v's artifact and when the URL stops
	// working; the zero time means never. A release document never
	// outlives its URL.
	URL(ctx context.Context, v Version) (url string, expires time.Time, err error)
}

// Sentinel errors, checked with errors.Is.
var (
	// ErrUnknownVersion: the registry has no such model version.
	ErrUnknownVersion = errors.New("publisher: unknown model version")
	// ErrNotApproved: the version exists but is not approved.
	ErrNotApproved = errors.New("publisher: version is not approved")
	// ErrSuperseded: a higher version of the model is approved, so the
	// publisher would announce that one instead.
	ErrSuperseded = errors.New("publisher: a higher approved version exists")
	// ErrNotConnected: the broker connection is down; the announcement is
	// retried on the next poll.
	ErrNotConnected = errors.New("publisher: not connected to the broker")
	// ErrBrokerUnreachable: no connection could be made before the
	// deadline.
	ErrBrokerUnreachable = errors.New("publisher: broker unreachable")
	// ErrBrokerRefused: the broker refused the connection for a reason
	// retrying cannot fix (bad credentials, client id rejected).
	ErrBrokerRefused = errors.New("publisher: broker refused the connection")
	// ErrNoAck: the broker did not acknowledge the publish in time; the
	// announcement is not recorded and will be retried.
	ErrNoAck = errors.New("publisher: broker did not acknowledge the release")
)

// targets returns each model's target, its highest approved version, and
// the set of every model seen (approved or not).
func targets(vs []Version) (map[string]Version, map[string]bool) {
	best := map[string]Version{}
	seen := map[string]bool{}
	for _, v := range vs {
		seen[v.Model] = true
		if v.Status != StatusApproved {
			continue
		}
		if cur, ok := best[v.Model]; !ok || v.Version > cur.Version {
			best[v.Model] = v
		}
	}
	return best, seen
}
