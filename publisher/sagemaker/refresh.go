package sagemaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/sagemaker"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker/types"
	"github.com/aws/smithy-go"

	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"
)

// refreshGroup reads one group: its approved packages, newest first, until
// one checks out. It returns that version (none if no approved version
// checks out), the problems met on the way, and an error if the group
// could not be read at all, or if a version could not be judged (a
// transient failure with no earlier good description of it): stepping
// past such a version could roll the fleet back for nothing.
func (r *Registry) refreshGroup(ctx context.Context, group string, now time.Time) ([]publisher.Version, []Problem, error) {
	if err := r.checkGroup(ctx, group); err != nil {
		return nil, nil, err
	}
	sums, err := r.listApproved(ctx, group)
	if err != nil {
		return nil, nil, err
	}
	var probs []Problem
	for _, s := range sums {
		if s.ModelPackageVersion == nil {
			arn := aws.ToString(s.ModelPackageArn)
			probs = append(probs, Problem{Group: group, ARN: arn, Err: fmt.Errorf("model package %s: %w", arn, ErrNoVersion), Since: now})
		}
	}
	for _, s := range sums {
		if s.ModelPackageVersion == nil {
			continue
		}
		arn := aws.ToString(s.ModelPackageArn)
		version := int64(*s.ModelPackageVersion)
		v, err := r.resolve(ctx, group, arn)
		if err == nil {
			r.mu.Lock()
			r.lastGood[arn] = v
			r.mu.Unlock()
			return []publisher.Version{v}, probs, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		err = fmt.Errorf("%s version %d (model package %s): %w", group, version, arn, err)
		probs = append(probs, Problem{Group: group, ARN: arn, Version: version, Err: err, Since: now})
		if classify(err) == permanent {
			continue // this version is bad: the next lower one stands in
		}
		r.mu.Lock()
		good, ok := r.lastGood[arn]
		r.mu.Unlock()
		if ok {
			return []publisher.Version{good}, probs, nil
		}
		return nil, probs, err
	}
	return nil, probs, nil
}

// checkGroup asks SageMaker whether group exists, until it has once: a
// mistyped group in --groups otherwise looks like a group with nothing
// approved, since ListModelPackages may answer it with an empty list. A
// group that does not exist is [ErrGroupNotFound] and is asked about again
// at each refresh, so that the publisher says when a pipeline created it.
// A failure that says nothing about the group is no reason to skip the
// read: a network error leaves it to be asked again, and an answer such
// as AccessDenied (a role without sagemaker:DescribeModelPackageGroup,
// which older set-ups did not need) is logged once and not asked again.
func (r *Registry) checkGroup(ctx context.Context, group string) error {
	r.mu.Lock()
	known := r.exists[group]
	r.mu.Unlock()
	if known {
		return nil
	}
	callCtx, cancel := r.callContext(ctx, r.cfg.CallTimeout)
	_, err := r.cfg.Client.DescribeModelPackageGroup(callCtx, &sm.DescribeModelPackageGroupInput{ModelPackageGroupName: aws.String(group)})
	cancel()
	var ae smithy.APIError
	switch {
	case err == nil:
	case notFound(err):
		return fmt.Errorf("%w: %q does not exist in this account and region (check --groups or sagemaker.groups; it is watched in case a pipeline creates it): %w", ErrGroupNotFound, group, err)
	case errors.As(err, &ae) && classify(err) != throttled:
		r.log.Info("cannot check that the sagemaker model package group exists; a mistyped group will look empty (grant sagemaker:DescribeModelPackageGroup to see it named)",
			"group", group, "err", err)
	default:
		return nil // asked again at the next refresh
	}
	r.mu.Lock()
	r.exists[group] = true
	r.mu.Unlock()
	return nil
}

// listApproved lists every approved versioned package of group, all
// pages, newest first.
func (r *Registry) listApproved(ctx context.Context, group string) ([]types.ModelPackageSummary, error) {
	in := &sm.ListModelPackagesInput{
		ModelPackageGroupName: aws.String(group),
		ModelApprovalStatus:   types.ModelApprovalStatusApproved,
		ModelPackageType:      types.ModelPackageTypeVersioned,
		SortBy:                types.ModelPackageSortByCreationTime,
		SortOrder:             types.SortOrderDescending,
		MaxResults:            aws.Int32(r.cfg.PageSize),
	}
	pages := sm.NewListModelPackagesPaginator(r.cfg.Client, in, func(o *sm.ListModelPackagesPaginatorOptions) {
		o.StopOnDuplicateToken = true
	})
	var out []types.ModelPackageSummary
	for pages.HasMorePages() {
		callCtx, cancel := r.callContext(ctx, r.cfg.CallTimeout)
		page, err := pages.NextPage(callCtx)
		cancel()
		if err != nil {
			if notFound(err) {
				return nil, fmt.Errorf("%w: %s: %w", ErrGroupNotFound, group, err)
			}
			return nil, fmt.Errorf("list model packages of %s: %w", group, err)
		}
		out = append(out, page.ModelPackageSummaryList...)
	}
	// Creation order is not version order when a pipeline registers out of
	// order; the version number is what trucks compare.
	slices.SortStableFunc(out, func(a, b types.ModelPackageSummary) int {
		return cmp.Compare(aws.ToInt32(b.ModelPackageVersion), aws.ToInt32(a.ModelPackageVersion))
	})
	return out, nil
}

// resolve describes one package and checks its artifact.
func (r *Registry) resolve(ctx context.Context, group, arn string) (publisher.Version, error) {
	p, err := r.describe(ctx, arn)
	if err != nil {
		return publisher.Version{}, err
	}
	if p.Group != group {
		return publisher.Version{}, fmt.Errorf("%w: it belongs to group %q", ErrPackageNotFound, p.Group)
	}
	if err := p.Ready(); err != nil {
		return publisher.Version{}, err
	}
	loc, err := p.Location()
	if err != nil {
		return publisher.Version{}, err
	}
	a, err := r.artifact(ctx, p, loc)
	if err != nil {
		return publisher.Version{}, err
	}
	return p.Versioned(loc, a, r.cfg.ContainerRuntime)
}

// describe calls DescribeModelPackage and maps the answer.
func (r *Registry) describe(ctx context.Context, arn string) (Package, error) {
	ctx, cancel := r.callContext(ctx, r.cfg.CallTimeout)
	defer cancel()
	out, err := r.cfg.Client.DescribeModelPackage(ctx, &sm.DescribeModelPackageInput{ModelPackageName: aws.String(arn)})
	if err != nil {
		if notFound(err) {
			return Package{}, fmt.Errorf("%w: %w", ErrPackageNotFound, err)
		}
		return Package{}, fmt.Errorf("describe: %w", err)
	}
	return FromDescribe(out)
}

// artifact returns the digest and size of p's artifact at loc: from the
// cache when the object's ETag is one already read for this package, else
// by reading the object once.
func (r *Registry) artifact(ctx context.Context, p Package, loc s3dist.Location) (s3dist.Artifact, error) {
	headCtx, cancel := r.callContext(ctx, r.cfg.CallTimeout)
	head, err := r.cfg.Artifacts.Head(headCtx, loc)
	cancel()
	if err != nil {
		return s3dist.Artifact{}, err
	}
	if e, ok := r.cache.get(p.ARN, head.ETag); ok && head.ETag != "" {
		if e.Problem != "" {
			// The remembered message already says what was wrong; wrap
			// the sentinel without repeating its text.
			return s3dist.Artifact{}, fmt.Errorf("%w (remembered for etag %s)", rememberedProblem(e.Problem), head.ETag)
		}
		return s3dist.Artifact{Head: s3dist.Head{ETag: head.ETag, VersionID: e.VersionID, Size: e.Size}, SHA256: e.SHA256}, nil
	}
	inspectCtx, cancel := r.callContext(ctx, r.cfg.InspectTimeout)
	a, err := r.cfg.Artifacts.Inspect(inspectCtx, loc, head.ETag)
	cancel()
	if err == nil {
		err = a.CheckModel(p.Group)
	}
	if other, ok := a.OtherVersion(p.Version); ok && err == nil {
		// A pipeline that predicted its version and lost a race with
		// another registration: the registry's number is the one signed
		// with this sha256, and trucks report it, not the bundle's. Logged
		// once per artifact, since its digest is cached.
		r.log.Warn("artifact's metadata.json gives another version than the registry's; announcing the registry's (leave \"version\" out of metadata.json: the registry assigns it)",
			"group", p.Group, "version", p.Version, "metadata_version", other, "arn", p.ARN)
	}
	var entry cacheEntry
	switch {
	case err == nil:
		entry = cacheEntry{SHA256: a.SHA256, Size: a.Size, VersionID: a.VersionID}
	case errors.Is(err, s3dist.ErrInvalidBundle):
		entry = cacheEntry{Problem: err.Error()}
	default:
		return s3dist.Artifact{}, err
	}
	if head.ETag != "" {
		if werr := r.cache.put(p.ARN, head.ETag, entry); werr != nil {
			r.log.Warn("cannot write the artifact cache; digests will be computed again after a restart", "err", werr)
		}
	}
	return a, err
}

// rememberedProblem is an artifact problem read back from the cache: its
// message as first reported, matching s3dist.ErrInvalidBundle.
type rememberedProblem string

func (p rememberedProblem) Error() string        { return string(p) }
func (p rememberedProblem) Is(target error) bool { return target == s3dist.ErrInvalidBundle }

// callContext bounds one call by d; zero (a Config that skipped its
// defaults) leaves ctx's own deadline, rather than one already past.
func (r *Registry) callContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
