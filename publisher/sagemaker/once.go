package sagemaker

import (
	"context"
	"fmt"

	"github.com/linkedge/linkedge/publisher"
)

// Lookup describes one model package by ARN: the pipeline hook knows the
// ARN its RegisterModel step created, and needs the group and version.
func Lookup(ctx context.Context, client API, arn string) (Package, error) {
	cfg := Config{Client: client}
	cfg.setDefaults() // the call's deadline among them
	r := &Registry{cfg: cfg}
	p, err := r.describe(ctx, arn)
	if err != nil {
		return Package{}, fmt.Errorf("model package %s: %w", arn, err)
	}
	return p, nil
}

// Announceable reads group now and returns its version if it is the one
// the publisher would announce, or says precisely why not: not approved,
// superseded by a higher approved version, or skipped for a problem (the
// problem, naming the package ARN).
func (r *Registry) Announceable(ctx context.Context, group string, version int64) (publisher.Version, error) {
	if !r.Watches(group) {
		return publisher.Version{}, fmt.Errorf("%w: group %s is not watched", ErrInvalidConfig, group)
	}
	r.Trigger(group)
	vs, err := r.Versions(ctx)
	if err != nil {
		return publisher.Version{}, err
	}
	for _, p := range r.Problems() {
		if p.Group == group && p.ARN == "" {
			return publisher.Version{}, p.Err
		}
	}
	var best *publisher.Version
	for i := range vs {
		if vs[i].Model == group {
			best = &vs[i]
		}
	}
	if best != nil && best.Version == version {
		return *best, nil
	}
	for _, p := range r.Problems() {
		if p.Group == group && p.Version == version {
			return publisher.Version{}, fmt.Errorf("not announced: %w", p.Err)
		}
	}
	if best != nil && best.Version > version {
		return publisher.Version{}, fmt.Errorf("%w: %s version %d is approved, and so is the higher version %d, which the publisher announces instead; reject version %d to roll back to %d",
			publisher.ErrSuperseded, group, version, best.Version, best.Version, version)
	}
	return publisher.Version{}, fmt.Errorf("%w: %s version %d is not among the approved versions of the model package group", publisher.ErrNotApproved, group, version)
}
