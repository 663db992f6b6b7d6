package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/s3dist"
	"github.com/linkedge/linkedge/publisher/sagemaker"
)

// sagemakerFlags are the flags that put `publisher` and `publish` on the
// SageMaker Model Registry. Each one overrides its key in the config
// file's registry_kind and sagemaker section (publisher.SageMakerConfig);
// apply merges them. AWS credentials come from the SDK's standard chain
// (environment, shared config and SSO, web identity, container or
// instance role); nothing secret is a flag or a key.
type sagemakerFlags struct {
	kind        string
	groups      []string
	queueURL    string
	presignTTL  time.Duration
	region      string
	endpointURL string
	pathStyle   bool
	refresh     time.Duration
	cacheFile   string
	container   bool
	inRelease   bool
	// publish only: which package to announce, not configuration.
	arn   string
	group string
}

// register adds the flags; publish adds the one-shot's --model-package-arn
// and --group (its --version is the command's own).
func (s *sagemakerFlags) register(cmd *cobra.Command, publish bool) {
	fl := cmd.Flags()
	fl.StringVar(&s.kind, "registry-kind", publisher.RegistryKindLocal, "model registry: local (a folder, --registry) or sagemaker (the SageMaker Model Registry); config key registry_kind")
	fl.StringVar(&s.region, "region", "", "AWS region (default $AWS_REGION or the profile's)")
	fl.StringVar(&s.endpointURL, "endpoint-url", "", "send every AWS call (SageMaker, S3, SQS) to this endpoint (S3-compatible stores, tests); without it $AWS_ENDPOINT_URL_<SERVICE> apply")
	fl.BoolVar(&s.pathStyle, "s3-path-style", false, "address S3 buckets by path (most S3-compatible stores need it)")
	fl.DurationVar(&s.presignTTL, "presign-ttl", s3dist.DefaultTTL, "lifetime of the presigned artifact URLs trucks download (1s to 168h)")
	fl.BoolVar(&s.container, "container-runtime", false, "announce the package's container image (pinned by digest) as the runtime instead of in-process ONNX")
	fl.StringVar(&s.cacheFile, "artifact-cache", "", "file remembering artifact digests by package ARN and ETag (default beside --state)")
	if publish {
		fl.StringVar(&s.arn, "model-package-arn", "", "announce this SageMaker model package (implies --registry-kind sagemaker)")
		fl.StringVar(&s.group, "group", "", "SageMaker model package group (the model), with --version")
		return
	}
	fl.StringSliceVar(&s.groups, "groups", nil, "SageMaker model package groups to watch, comma-separated; each is a model id")
	fl.StringVar(&s.queueURL, "sqs-queue-url", "", "SQS queue receiving the EventBridge model package events (docs/pipeline-hook.md); polling goes on as the safety net")
	fl.DurationVar(&s.refresh, "sagemaker-refresh", sagemaker.DefaultRefreshInterval, "read every group from SageMaker at least this often")
	fl.BoolVar(&s.inRelease, "urls-in-release", false, "put presigned URLs in the releases (for agents older than download grants) instead of answering trucks' grant requests")
}

// sagemakerOnlyFlags are the flags that mean something with the SageMaker
// registry kind only.
var sagemakerOnlyFlags = []string{"groups", "sqs-queue-url", "sagemaker-refresh", "urls-in-release", "group",
	"presign-ttl", "region", "endpoint-url", "s3-path-style", "artifact-cache", "container-runtime"}

// apply lays the flags given on the command line over cfg's registry_kind
// and sagemaker section, as publisherFlags does for the other keys. The
// section's flags only mean something with the SageMaker kind: given with
// the local registry they are refused, rather than ignored while the user
// believes them applied (a --container-runtime that left every release in
// process).
func (s *sagemakerFlags) apply(cmd *cobra.Command, cfg *publisher.Config) error {
	changed := cmd.Flags().Changed
	override(cmd, "registry-kind", &cfg.RegistryKind, s.kind)
	if s.arn != "" {
		cfg.RegistryKind = publisher.RegistryKindSageMaker
	}
	if cfg.RegistryKind != publisher.RegistryKindSageMaker {
		// An unknown kind is reported as such by Validate.
		local := cfg.RegistryKind == "" || cfg.RegistryKind == publisher.RegistryKindLocal
		for _, name := range sagemakerOnlyFlags {
			if !local || cmd.Flags().Lookup(name) == nil || !changed(name) {
				continue
			}
			if name == "container-runtime" {
				return fmt.Errorf("--container-runtime: %w: it applies to the SageMaker Model Registry only (--registry-kind sagemaker); "+
					"with the local registry a version runs in a container when it names its image: "+
					"`linkedge registry add BUNDLE --image NAME@sha256:…` or `linkedge registry approve --image …` (docs/agent.md, \"Serving from a container\")",
					publisher.ErrInvalidConfig)
			}
			return fmt.Errorf("--%s: %w: it applies to the SageMaker Model Registry only; add --registry-kind sagemaker (or registry_kind: sagemaker in the config file), or leave it out for the local registry",
				name, publisher.ErrInvalidConfig)
		}
		if changed("registry-kind") {
			// --registry-kind local over a SageMaker config file: the
			// file's section describes a backend no longer used.
			cfg.SageMaker = nil
		}
		return nil
	}
	var sec publisher.SageMakerConfig
	if cfg.SageMaker != nil {
		sec = *cfg.SageMaker
	}
	override(cmd, "groups", &sec.Groups, s.groups)
	override(cmd, "sqs-queue-url", &sec.SQSQueueURL, s.queueURL)
	override(cmd, "sagemaker-refresh", &sec.RefreshInterval, s.refresh)
	override(cmd, "presign-ttl", &sec.PresignTTL, s.presignTTL)
	override(cmd, "region", &sec.Region, s.region)
	override(cmd, "endpoint-url", &sec.EndpointURL, s.endpointURL)
	override(cmd, "s3-path-style", &sec.S3PathStyle, s.pathStyle)
	override(cmd, "artifact-cache", &sec.ArtifactCache, s.cacheFile)
	override(cmd, "container-runtime", &sec.ContainerRuntime, s.container)
	override(cmd, "urls-in-release", &sec.URLsInRelease, s.inRelease)
	cfg.SageMaker = &sec
	return nil
}

func awsOptions(sec *publisher.SageMakerConfig) sagemaker.AWSOptions {
	return sagemaker.AWSOptions{Region: sec.Region, EndpointURL: sec.EndpointURL, S3PathStyle: sec.S3PathStyle}
}

// sagemakerSection returns cfg's SageMaker section, empty if there is none
// (validation then says what is missing).
func sagemakerSection(cfg publisher.Config) publisher.SageMakerConfig {
	if cfg.SageMaker == nil {
		return publisher.SageMakerConfig{}
	}
	return *cfg.SageMaker
}

// sagemakerBackend is everything the SageMaker registry kind plugs into a
// publisher.Config, plus the event consumer to run beside the service.
type sagemakerBackend struct {
	Clients     sagemaker.Clients
	Registry    *sagemaker.Registry
	Distributor *s3dist.Presigner
	// Events is nil without sagemaker.sqs_queue_url.
	Events *sagemaker.Events
}

// apply points cfg at the backend.
func (b *sagemakerBackend) apply(cfg *publisher.Config) {
	cfg.Registry, cfg.Distributor = b.Registry, b.Distributor
}

// newSageMakerBackend builds the backend cfg.SageMaker describes, for its
// groups (the service's, or the one group of `publish`). It checks cfg
// first, so that a mistake in the file or the flags is reported as such
// before any AWS call. The artifact cache goes beside the state file
// unless sagemaker.artifact_cache says otherwise.
func newSageMakerBackend(ctx context.Context, cfg publisher.Config, log *slog.Logger) (*sagemakerBackend, error) {
	if err := cfg.ValidateSettings(); err != nil {
		return nil, err
	}
	sec := sagemakerSection(cfg)
	// With no local registry folder, nothing else creates the state
	// file's folder (the publisher's lock file goes there too).
	if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o755); err != nil {
		return nil, fmt.Errorf("state folder: %w", err)
	}
	awsCfg, err := sagemaker.LoadAWSConfig(ctx, awsOptions(&sec))
	if err != nil {
		return nil, err
	}
	cl := sagemaker.NewClients(awsCfg, awsOptions(&sec))
	cache := sec.ArtifactCache
	if cache == "" {
		cache = filepath.Join(filepath.Dir(cfg.StateFile), "sagemaker-artifacts.json")
	}
	// A zero refresh interval and presign TTL take the packages' defaults.
	reg, err := sagemaker.New(sagemaker.Config{Client: cl.SageMaker, Artifacts: &s3dist.Reader{Client: cl.S3}, Groups: sec.Groups,
		RefreshInterval: sec.RefreshInterval, CacheFile: cache, ContainerRuntime: sec.ContainerRuntime, Logger: log})
	if err != nil {
		return nil, err
	}
	dist := &s3dist.Presigner{Client: cl.Presign, TTL: sec.PresignTTL, Credentials: cl.Credentials}
	if err := dist.Check(); err != nil {
		return nil, fmt.Errorf("sagemaker.presign_ttl: %w", err)
	}
	b := &sagemakerBackend{Clients: cl, Registry: reg, Distributor: dist}
	if sec.SQSQueueURL != "" {
		b.Events = &sagemaker.Events{Client: cl.SQS, QueueURL: sec.SQSQueueURL, Registry: reg, Logger: log}
	}
	return b, nil
}

// runSageMakerPublisher runs the publisher service over b, and b's event
// consumer beside it, until ctx ends. If either stops, the other is
// stopped too; Run's error (or the consumer's) is returned.
func runSageMakerPublisher(ctx context.Context, cfg publisher.Config, b *sagemakerBackend) error {
	b.apply(&cfg)
	if cfg.Metrics == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		cfg.Metrics = reg
	}
	p, err := publisher.New(cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var evErr error
	if b.Events != nil {
		wg.Go(func() {
			defer cancel()
			evErr = b.Events.Run(ctx)
		})
	}
	err = p.Run(ctx)
	cancel()
	wg.Wait()
	return errors.Join(err, evErr)
}

// runPublishSageMaker is `linkedge publish` on SageMaker: it announces one
// model package, named by --model-package-arn or by --group and version,
// and returns only once the broker acknowledged the release. Everything
// that would make the announcement wrong is refused first, with the
// package ARN and what to do: not approved, superseded by a higher
// approved version, or an unusable artifact.
func runPublishSageMaker(ctx context.Context, out io.Writer, cfg publisher.Config, s *sagemakerFlags, version int64, log *slog.Logger) (*release.Release, error) {
	sec := sagemakerSection(cfg)
	awsCfg, err := sagemaker.LoadAWSConfig(ctx, awsOptions(&sec))
	if err != nil {
		return nil, err
	}
	cl := sagemaker.NewClients(awsCfg, awsOptions(&sec))
	group := s.group
	if s.arn != "" {
		pkg, err := sagemaker.Lookup(ctx, cl.SageMaker, s.arn)
		if err != nil {
			return nil, &publishStageError{stage: stageLookup, err: err}
		}
		if (group != "" && group != pkg.Group) || (version != 0 && version != pkg.Version) {
			return nil, fmt.Errorf("%s is %s version %d, not %s version %d", s.arn, pkg.Group, pkg.Version, group, version)
		}
		if err := pkg.Ready(); err != nil {
			return nil, fmt.Errorf("not announced: %w\napprove it in SageMaker Studio or with `aws sagemaker update-model-package --model-package-arn %s --model-approval-status Approved`", err, s.arn)
		}
		group, version = pkg.Group, pkg.Version
	}
	if group == "" || version < 1 {
		return nil, errors.New("name the model package: --model-package-arn ARN, or --group G --version N")
	}
	// The one-shot reads only the package's group, whatever groups the
	// file lists for the service.
	sec.Groups = []string{group}
	cfg.SageMaker = &sec
	b, err := newSageMakerBackend(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	if _, err := b.Registry.Announceable(ctx, group, version); err != nil {
		return nil, &publishStageError{stage: stageRegistryRead, err: err}
	}
	b.apply(&cfg)
	r, err := publisher.PublishOnce(ctx, cfg, group, version)
	if err != nil {
		return nil, &publishStageError{stage: stageBroker, err: err}
	}
	a := r.Stable.Artifact
	u := a.URL
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i] + "?<presigned>"
	}
	fmt.Fprintf(out, "announced %s version %d (%s): serial %d, sha256 %s, %d bytes, %s, valid until %s\n",
		r.Model, r.Stable.Version, r.Stable.Source.ModelPackageARN, r.Serial, a.SHA256, a.Size, u, r.ExpiresAt.Format(time.RFC3339))
	return r, nil
}

// Stages of `linkedge publish` on SageMaker, as its errors name them.
const (
	stageLookup       = "the SageMaker lookup of the model package (DescribeModelPackage)"
	stageRegistryRead = "the SageMaker read of the model package group and its artifact in S3"
	stageBroker       = "the broker"
)

// publishStageError is an error of one stage of `linkedge publish` on
// SageMaker. A deadline met before the broker stage says which AWS call
// stalled: the message used to blame the broker for a SageMaker endpoint
// that never answered.
type publishStageError struct {
	stage string
	err   error
}

func (e *publishStageError) Error() string { return e.err.Error() }
func (e *publishStageError) Unwrap() error { return e.err }

// explainPublishSageMaker adds what to do next to broker failures; the
// registry's refusals already say it (with the package ARN), and the local
// registry's hints in explainPublish would mislead. A timeout names the
// stage that stalled.
func explainPublishSageMaker(err error, timeout time.Duration) error {
	if errors.Is(err, publisher.ErrNotApproved) || errors.Is(err, publisher.ErrUnknownVersion) || errors.Is(err, publisher.ErrSuperseded) {
		return err
	}
	var se *publishStageError
	if errors.As(err, &se) && se.stage != stageBroker && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("not announced: %s did not finish within %s (--timeout); nothing was sent to the broker. "+
			"Check that the SageMaker and S3 endpoints answer (--region, --endpoint-url, the network path from here), or give --timeout more time: %w",
			se.stage, timeout, se.err)
	}
	return explainPublish(err, "", 0, timeout)
}
