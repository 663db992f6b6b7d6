package sagemaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	sm "github.com/aws/aws-sdk-go-v2/service/sagemaker"

	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"

	"github.com/linkedge/linkedge/internal/backoff"
)

// Defaults applied to zero Config fields.
const (
	// DefaultRefreshInterval: SageMaker's List and Describe quotas are
	// shared with the account's pipelines; a minute is gentle, and events
	// make approvals immediate anyway.
	DefaultRefreshInterval = time.Minute
	DefaultMinBackoff      = 2 * time.Second
	DefaultMaxBackoff      = 5 * time.Minute
	// DefaultPageSize is the API's maximum MaxResults.
	DefaultPageSize = 100
)

// API is the part of *sagemaker.Client the registry uses.
type API interface {
	ListModelPackages(ctx context.Context, in *sm.ListModelPackagesInput, optFns ...func(*sm.Options)) (*sm.ListModelPackagesOutput, error)
	DescribeModelPackage(ctx context.Context, in *sm.DescribeModelPackageInput, optFns ...func(*sm.Options)) (*sm.DescribeModelPackageOutput, error)
	// DescribeModelPackageGroup tells a watched group that does not exist
	// (a typo in the configuration) from one with nothing approved yet:
	// ListModelPackages may answer both with an empty list.
	DescribeModelPackageGroup(ctx context.Context, in *sm.DescribeModelPackageGroupInput, optFns ...func(*sm.Options)) (*sm.DescribeModelPackageGroupOutput, error)
}

// Artifacts reads artifacts from S3; *s3dist.Reader implements it.
type Artifacts interface {
	Head(ctx context.Context, loc s3dist.Location) (s3dist.Head, error)
	Inspect(ctx context.Context, loc s3dist.Location, etag string) (s3dist.Artifact, error)
}

// Config configures a [Registry].
type Config struct {
	// Client calls SageMaker; required.
	Client API
	// Artifacts reads model.tar.gz from S3; required.
	Artifacts Artifacts
	// Groups are the model package groups to watch; each name is a model
	// id, so it must be a valid LinkEdge id. Required.
	Groups []string
	// RefreshInterval is the longest time between two reads of a group;
	// [Registry.Versions] answers from memory in between, unless an event
	// asked for a group. Default [DefaultRefreshInterval].
	RefreshInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed refresh
	// (throttling, network); it doubles each time, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// PageSize is ListModelPackages' MaxResults, 1 to 100. Default 100.
	PageSize int32
	// CallTimeout bounds each SageMaker call and each S3 HeadObject: an
	// endpoint that accepts the connection and never answers must not
	// stall the publisher. Default 30s.
	CallTimeout time.Duration
	// InspectTimeout bounds reading one artifact from S3 to compute its
	// digest (it may be large). Default 10m.
	InspectTimeout time.Duration
	// CacheFile, if set, keeps the artifact digests across restarts.
	CacheFile string
	// ContainerRuntime announces versions with runtime kind "container"
	// and the package's image (pinned by digest) instead of "inprocess".
	ContainerRuntime bool
	// Logger receives problems, each logged once while it lasts. Default
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.InspectTimeout <= 0 {
		c.InspectTimeout = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("no sagemaker client"))
	}
	if c.Artifacts == nil {
		errs = append(errs, errors.New("no artifact reader"))
	}
	if len(c.Groups) == 0 {
		errs = append(errs, errors.New("no model package group to watch"))
	}
	seen := map[string]bool{}
	for _, g := range c.Groups {
		if err := topics.ValidID(g); err != nil {
			errs = append(errs, fmt.Errorf("group %q cannot be a LinkEdge model id: %w", g, err))
		}
		if seen[g] {
			errs = append(errs, fmt.Errorf("group %q is listed twice", g))
		}
		seen[g] = true
	}
	if c.RefreshInterval < 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("refresh %s, backoff %s to %s: want positive, min below max", c.RefreshInterval, c.MinBackoff, c.MaxBackoff))
	}
	if c.PageSize < 1 || c.PageSize > 100 {
		errs = append(errs, fmt.Errorf("page size %d, want 1 to 100", c.PageSize))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Registry is the SageMaker Model Registry as a publisher.Registry. It is
// safe for concurrent use; refreshes are serialized.
type Registry struct {
	cfg    Config
	log    *slog.Logger
	cache  *artifactCache
	notify chan struct{}

	refreshMu sync.Mutex // held for a whole Versions call

	mu        sync.Mutex
	dirty     map[string]bool // groups an event asked to refresh
	lastFull  time.Time
	retryAt   time.Time // no SageMaker call before, after a failure
	backoff   backoff.Backoff
	groups    map[string]*groupState
	lastGood  map[string]publisher.Version // by package ARN
	problems  map[string]Problem           // by ARN, or group name for a group problem
	reported  map[string]string            // by problem key: the message last logged
	refreshes int
	created   time.Time // when New ran: a group never read is stale from then
	// exists holds the groups known to exist, or whose existence cannot
	// be asked (no permission): they are not asked again.
	exists map[string]bool
	// failing holds the groups whose last read failed, so their view is
	// older than asked for; see [Registry.Degraded].
	failing map[string]error
}

// groupState is what the registry last learned about one group.
type groupState struct {
	known    bool
	versions []publisher.Version
	readAt   time.Time // of the last successful read
}

// Problem is a version or a group the registry could not use, and why.
type Problem struct {
	Group string
	// ARN and Version are empty for a problem of the whole group.
	ARN     string
	Version int64
	Err     error
	Since   time.Time
}

func (p Problem) key() string {
	if p.ARN != "" {
		return p.ARN
	}
	return "group:" + p.Group
}

// New checks cfg and returns a registry. It reads nothing from AWS yet:
// the first Versions call does.
func New(cfg Config) (*Registry, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cache, err := newArtifactCache(cfg.CacheFile)
	if err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg, log: cfg.Logger, cache: cache, notify: make(chan struct{}, 1),
		dirty: map[string]bool{}, groups: map[string]*groupState{}, lastGood: map[string]publisher.Version{},
		problems: map[string]Problem{}, reported: map[string]string{}, exists: map[string]bool{}, failing: map[string]error{},
		backoff: backoff.Backoff{Min: cfg.MinBackoff, Max: cfg.MaxBackoff}, created: cfg.Now()}
	r.cfg.Groups = slices.Clone(cfg.Groups)
	return r, nil
}

// Name implements publisher.Registry.
func (r *Registry) Name() string { return "sagemaker:" + strings.Join(r.cfg.Groups, ",") }

// Watches reports whether group is one of the registry's groups.
func (r *Registry) Watches(group string) bool { return slices.Contains(r.cfg.Groups, group) }

// Trigger asks for group to be read from SageMaker at the next Versions
// call, however recent the last read; "" means every group. It never
// blocks.
func (r *Registry) Trigger(group string) {
	r.mu.Lock()
	if group == "" {
		r.lastFull = time.Time{}
	} else {
		r.dirty[group] = true
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Notify returns a channel that receives a value after a Trigger: a
// publisher loop that selects on it polls as soon as an event arrives.
// One value may stand for several triggers.
func (r *Registry) Notify() <-chan struct{} { return r.notify }

// Problems returns the versions and groups skipped at the last refresh,
// sorted by key.
func (r *Registry) Problems() []Problem {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Problem, 0, len(r.problems))
	for _, p := range r.problems {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Problem) int { return strings.Compare(a.key(), b.key()) })
	return out
}

// Refreshes returns how many times SageMaker was read (once per group
// read).
func (r *Registry) Refreshes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refreshes
}

// Versions implements publisher.Registry: per group, the newest approved
// version that checks out. It reads SageMaker only for the groups due (see
// [Config.RefreshInterval] and [Registry.Trigger]) and otherwise answers
// from memory. It fails only when no group has ever been read.
func (r *Registry) Versions(ctx context.Context) ([]publisher.Version, error) {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	now := r.cfg.Now()
	r.mu.Lock()
	var due []string
	full := r.lastFull.IsZero() || now.Sub(r.lastFull) >= r.cfg.RefreshInterval
	for _, g := range r.cfg.Groups {
		if full || r.dirty[g] {
			due = append(due, g)
		}
	}
	waiting := now.Before(r.retryAt)
	r.mu.Unlock()

	var errs []error
	if len(due) > 0 && !waiting {
		errs = r.refresh(ctx, due, full, now)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []publisher.Version
	known := 0
	for _, g := range r.cfg.Groups {
		if st := r.groups[g]; st != nil && st.known {
			known++
			out = append(out, st.versions...)
		}
	}
	if known == 0 {
		if waiting {
			errs = append(errs, fmt.Errorf("backing off until %s", r.retryAt.Format(time.RFC3339)))
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return out, nil
}

// refresh reads the due groups and records what it learned. A group that
// fails keeps its previous state and is asked for again after a backoff.
func (r *Registry) refresh(ctx context.Context, due []string, full bool, now time.Time) []error {
	var errs []error
	var failed []string
	failErr := map[string]error{}
	throttledAny := false
	for _, g := range due {
		vs, probs, err := r.refreshGroup(ctx, g, now)
		if ctx.Err() != nil {
			return nil
		}
		r.mu.Lock()
		r.refreshes++
		r.mu.Unlock()
		if err == nil {
			r.setGroup(g, vs, true)
			r.mu.Lock()
			r.groups[g].readAt = now
			delete(r.failing, g)
			r.mu.Unlock()
			r.replaceProblems(g, probs)
			continue
		}
		errs = append(errs, err)
		c := classify(err)
		r.problem(Problem{Group: g, Err: err, Since: now})
		switch {
		case errors.Is(err, ErrGroupNotFound):
			// The group is gone (or misspelt): it has no versions, which
			// the publisher reports as "no approved version remains".
			// That answer is current, so the view is not degraded; the
			// problem and /healthz (the group is never read) say it.
			r.setGroup(g, nil, true)
			r.mu.Lock()
			delete(r.failing, g)
			r.mu.Unlock()
		case c == throttled:
			throttledAny = true
			failed = append(failed, g)
			failErr[g] = err
		default:
			failed = append(failed, g)
			failErr[g] = err
		}
		if c == throttled {
			// Every group shares the account's quota: stop here.
			idx := slices.Index(due, g)
			failed = append(failed, due[idx+1:]...)
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if full {
		r.lastFull = now
	}
	for _, g := range due {
		delete(r.dirty, g)
	}
	for _, g := range failed {
		r.dirty[g] = true
		if err, ok := failErr[g]; ok {
			r.failing[g] = err
		} else {
			r.failing[g] = errors.New("not read: sagemaker throttled the groups read before it")
		}
	}
	if len(failed) > 0 {
		wait := r.backoff.Next()
		r.retryAt = now.Add(wait)
		if throttledAny {
			r.log.Warn("sagemaker throttled the registry; backing off", "wait", wait.Round(time.Millisecond))
		}
	} else {
		r.backoff.Reset()
		r.retryAt = time.Time{}
	}
	return errs
}

func (r *Registry) setGroup(g string, vs []publisher.Version, known bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var readAt time.Time
	if old := r.groups[g]; old != nil {
		readAt = old.readAt
	}
	r.groups[g] = &groupState{known: known, versions: vs, readAt: readAt}
}

// Health reports whether the registry's view is current: nil unless a
// group has not been read successfully for three refresh intervals (at
// least five minutes), in which case the error names the groups, since
// when, and the last problem. The publisher's /healthz answers 503 with
// it, so that a registry that stopped answering is seen.
func (r *Registry) Health() error {
	now := r.cfg.Now()
	staleAfter := max(3*r.cfg.RefreshInterval, 5*time.Minute)
	r.mu.Lock()
	defer r.mu.Unlock()
	var stale []string
	for _, g := range r.cfg.Groups {
		st := r.groups[g]
		switch {
		case st == nil || st.readAt.IsZero():
			if now.Sub(r.created) >= staleAfter {
				stale = append(stale, g+" (never read)")
			}
		case now.Sub(st.readAt) >= staleAfter:
			stale = append(stale, fmt.Sprintf("%s (last read %s ago)", g, now.Sub(st.readAt).Round(time.Second)))
		}
	}
	if len(stale) == 0 {
		return nil
	}
	var last string
	for _, p := range r.problems {
		if p.ARN == "" {
			last = p.Err.Error()
		}
	}
	return fmt.Errorf("%w: the SageMaker view is stale: %s; last problem: %s", ErrUnavailable, strings.Join(stale, ", "), cmp.Or(last, "none recorded"))
}

// Degraded returns nil unless the last read of a group failed, in which
// case the registry answers from an older view of that group: the error
// names the groups and why. The publisher counts it in errors_total at
// every poll it lasts, as it counts a registry it cannot read at all,
// so that an alert on the rate of registry errors fires at once, long
// before [Registry.Health] calls the view stale.
func (r *Registry) Degraded() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failing) == 0 {
		return nil
	}
	var parts []string
	for _, g := range r.cfg.Groups {
		if err, ok := r.failing[g]; ok {
			parts = append(parts, fmt.Sprintf("%s: %v", g, err))
		}
	}
	return fmt.Errorf("%w: answering from an older view of %s", ErrUnavailable, strings.Join(parts, "; "))
}

// problem records p and logs it, once while the same message lasts.
func (r *Registry) problem(p Problem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := p.key()
	if old, ok := r.problems[k]; ok {
		p.Since = old.Since
	}
	r.problems[k] = p
	msg := p.Err.Error()
	if r.reported[k] == msg {
		return
	}
	r.reported[k] = msg
	switch {
	case p.ARN != "":
		r.log.Warn("sagemaker model package not usable; checked again at the next refresh",
			"group", p.Group, "version", p.Version, "arn", p.ARN, "err", p.Err)
	case errors.Is(p.Err, ErrGroupNotFound):
		r.log.Warn("sagemaker model package group does not exist; check its name in --groups (sagemaker.groups); it is watched in case a pipeline creates it",
			"group", p.Group, "err", p.Err)
	default:
		r.log.Warn("sagemaker model package group not read; keeping what it reported before", "group", p.Group, "err", p.Err)
	}
}

// replaceProblems makes probs the whole set of group g's problems after a
// successful read of g: whatever is not in it was resolved.
func (r *Registry) replaceProblems(g string, probs []Problem) {
	now := map[string]bool{}
	for _, p := range probs {
		now[p.key()] = true
	}
	r.mu.Lock()
	for k, p := range r.problems {
		if p.Group == g && !now[k] {
			// A group's problem has no package: naming one (arn="",
			// version=0) after an outage read as a broken package.
			if p.ARN == "" {
				r.log.Info("sagemaker model package group read again", "group", g, "problem_was", p.Err, "since", p.Since.Format(time.RFC3339))
			} else {
				r.log.Info("sagemaker model package usable again", "group", g, "version", p.Version, "arn", p.ARN)
			}
			delete(r.problems, k)
			delete(r.reported, k)
		}
	}
	r.mu.Unlock()
	for _, p := range probs {
		r.problem(p)
	}
}
