package sagemaker

import (
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/sagemaker"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker/types"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"
)

// Package is what the registry reads from DescribeModelPackage: the parts
// that become a publisher.Version, and the rest, kept for people (logs,
// `linkedge publish` output).
type Package struct {
	ARN     string
	Group   string
	Version int64
	// Approval is ModelApprovalStatus as SageMaker spells it; Status its
	// normalized form.
	Approval string
	Status   publisher.Status
	// PackageStatus is ModelPackageStatus ("Completed" when usable).
	PackageStatus string
	Description   string
	Created       time.Time
	Modified      time.Time
	// ModifiedBy is who last changed the package (for an approved one, who
	// approved it): the Studio user profile, else the IAM identity ARN.
	ModifiedBy string
	// ModelDataURL is InferenceSpecification.Containers[0].ModelDataUrl
	// (or its ModelDataSource.S3DataSource.S3Uri when that names a
	// compressed object).
	ModelDataURL string
	// Image is the SageMaker serving image; ImageDigest its digest when
	// SageMaker recorded one.
	Image, ImageDigest string
	// Metadata is CustomerMetadataProperties.
	Metadata map[string]string
	// Metrics maps a metric report ("ModelQuality.Statistics") to its S3 URI.
	Metrics map[string]string
}

// maxApprovedBy bounds source.approved_by, which is signed and broadcast:
// an assumed-role ARN can be long.
const maxApprovedBy = 128

// FromDescribe maps a DescribeModelPackage answer. It fails only when the
// answer cannot be a LinkEdge version at all (no ARN, no version); a
// missing artifact is reported by [Package.Location].
func FromDescribe(out *sm.DescribeModelPackageOutput) (Package, error) {
	p := Package{
		ARN:           aws.ToString(out.ModelPackageArn),
		Group:         aws.ToString(out.ModelPackageGroupName),
		Approval:      string(out.ModelApprovalStatus),
		Status:        status(out.ModelApprovalStatus),
		PackageStatus: string(out.ModelPackageStatus),
		Description:   aws.ToString(out.ModelPackageDescription),
		Created:       aws.ToTime(out.CreationTime),
		Modified:      aws.ToTime(out.LastModifiedTime),
		ModifiedBy:    who(out.LastModifiedBy),
		Metadata:      maps.Clone(out.CustomerMetadataProperties),
		Metrics:       metrics(out.ModelMetrics),
	}
	if p.ARN == "" {
		return p, fmt.Errorf("describe answer has no ModelPackageArn")
	}
	if out.ModelPackageVersion == nil || *out.ModelPackageVersion < 1 {
		return p, fmt.Errorf("%w: %s is not a versioned package of a model package group", ErrNoVersion, p.ARN)
	}
	p.Version = int64(*out.ModelPackageVersion)
	if spec := out.InferenceSpecification; spec != nil && len(spec.Containers) > 0 {
		c := spec.Containers[0]
		p.Image, p.ImageDigest = aws.ToString(c.Image), aws.ToString(c.ImageDigest)
		p.ModelDataURL = aws.ToString(c.ModelDataUrl)
		if ds := c.ModelDataSource; p.ModelDataURL == "" && ds != nil && ds.S3DataSource != nil &&
			ds.S3DataSource.CompressionType == types.ModelCompressionTypeGzip && ds.S3DataSource.S3DataType == types.S3ModelDataTypeS3Object {
			p.ModelDataURL = aws.ToString(ds.S3DataSource.S3Uri)
		}
	}
	return p, nil
}

// Location returns where the package's model.tar.gz is, or why it cannot
// be used.
func (p Package) Location() (s3dist.Location, error) {
	if p.ModelDataURL == "" {
		return s3dist.Location{}, ErrNoArtifact
	}
	return s3dist.ParseURL(p.ModelDataURL)
}

// Ready returns nil if the package may be announced as far as SageMaker
// is concerned: approved and completed.
func (p Package) Ready() error {
	switch {
	case p.Status != publisher.StatusApproved:
		return fmt.Errorf("%w: %s is %s", publisher.ErrNotApproved, p.ARN, p.Approval)
	case p.PackageStatus != "" && p.PackageStatus != string(types.ModelPackageStatusCompleted):
		return fmt.Errorf("%w: ModelPackageStatus is %s", ErrNotReady, p.PackageStatus)
	}
	return nil
}

// Versioned returns p as a publisher.Version whose artifact is a, stored
// at loc. A container runtime uses the package's image, which must then
// be pinned by digest.
func (p Package) Versioned(loc s3dist.Location, a s3dist.Artifact, container bool) (publisher.Version, error) {
	if a.VersionID != "" {
		loc.VersionID = a.VersionID
	}
	v := publisher.Version{
		Model:       p.Group,
		Version:     p.Version,
		Status:      p.Status,
		Description: p.Description,
		Artifact:    publisher.ArtifactRef{Location: loc.String(), SHA256: a.SHA256, Size: a.Size},
		Runtime:     release.Runtime{Kind: release.RuntimeInProcess},
		Source:      release.Source{Registry: release.RegistrySageMaker, ModelPackageARN: p.ARN},
	}
	if container {
		img, err := pinnedImage(p.Image, p.ImageDigest)
		if err != nil {
			return publisher.Version{}, err
		}
		v.Runtime = release.Runtime{Kind: release.RuntimeContainer, Image: img}
	}
	if p.Status == publisher.StatusApproved {
		at := p.Modified
		if at.IsZero() {
			at = p.Created
		}
		v.Source.ApprovedAt = at.UTC().Truncate(time.Millisecond)
		v.Source.ApprovedBy = p.ModifiedBy
	}
	return v, nil
}

// pinnedImage returns the image by digest: as given if it already is, or
// with SageMaker's ImageDigest.
func pinnedImage(image, digest string) (string, error) {
	if i := strings.Index(image, "@sha256:"); i > 0 {
		return image, nil
	}
	if image != "" && strings.HasPrefix(digest, "sha256:") {
		return image + "@" + digest, nil
	}
	// The cause is the image, not the artifact: the model data may be
	// fine, and the fix is in how the package names its container.
	if image == "" {
		return "", fmt.Errorf("%w: the container runtime (--container-runtime, sagemaker.container_runtime) announces the package's serving image, and InferenceSpecification.Containers[0].Image is empty; register the model with an image as repo@sha256:<digest>", ErrImageNotPinned)
	}
	return "", fmt.Errorf("%w: the container runtime (--container-runtime, sagemaker.container_runtime) needs the serving image pinned by digest, and %q has no @sha256: digest and SageMaker recorded no ImageDigest; register the model with the image as repo@sha256:<digest> (linkedge toolkit image prints it after a push)", ErrImageNotPinned, image)
}

func status(s types.ModelApprovalStatus) publisher.Status {
	switch s {
	case types.ModelApprovalStatusApproved:
		return publisher.StatusApproved
	case types.ModelApprovalStatusRejected:
		return publisher.StatusRejected
	}
	return publisher.StatusPending
}

// who names the identity in a UserContext, clipped to printable text.
func who(u *types.UserContext) string {
	if u == nil {
		return ""
	}
	s := aws.ToString(u.UserProfileName)
	if s == "" && u.IamIdentity != nil {
		s = aws.ToString(u.IamIdentity.Arn)
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > maxApprovedBy {
		s = strings.ToValidUTF8(s[:maxApprovedBy], "")
	}
	return s
}

func metrics(m *types.ModelMetrics) map[string]string {
	if m == nil {
		return nil
	}
	out := map[string]string{}
	add := func(name string, src *types.MetricsSource) {
		if src != nil && src.S3Uri != nil {
			out[name] = *src.S3Uri
		}
	}
	if q := m.ModelQuality; q != nil {
		add("ModelQuality.Statistics", q.Statistics)
		add("ModelQuality.Constraints", q.Constraints)
	}
	if q := m.ModelDataQuality; q != nil {
		add("ModelDataQuality.Statistics", q.Statistics)
		add("ModelDataQuality.Constraints", q.Constraints)
	}
	if b := m.Bias; b != nil {
		add("Bias.Report", b.Report)
	}
	if e := m.Explainability; e != nil {
		add("Explainability.Report", e.Report)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
