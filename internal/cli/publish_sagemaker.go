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

// Registry kinds for --registry-kind.
const (
	registryKindLocal     = "local"
	registryKindSageMaker = "sagemaker"
)

// sagemakerFlags are the flags that put `publisher` and `publish` on the
// SageMaker Model Registry. AWS credentials come from the SDK's standard
// chain (environment, shared config and SSO, web identity, container or
// instance role); nothing secret is a flag.
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
	// publish only
	arn   string
	group string
}

// register adds the flags; publish adds the one-shot's --model-package-arn
// and --group (its --version is the command's own).
func (s *sagemakerFlags) register(cmd *cobra.Command, publish bool) {
	fl := cmd.Flags()
	fl.StringVar(&s.kind, "registry-kind", registryKindLocal, "model registry: local (a folder, --registry) or sagemaker (the SageMaker Model Registry)")
	fl.StringVar(&s.region, "region", "", "AWS region (default $AWS_REGION or the profile's)")
	fl.StringVar(&s.endpointURL, "endpoint-url", "", "send every AWS call to this endpoint (S3-compatible stores, tests); $AWS_ENDPOINT_URL_<SERVICE> overrides it per service")
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
}

// enabled reports whether the flags select the SageMaker registry.
func (s *sagemakerFlags) enabled() bool { return s.kind == registryKindSageMaker || s.arn != "" }

func (s *sagemakerFlags) check() error {
	switch s.kind {
	case registryKindLocal, registryKindSageMaker:
	default:
		return fmt.Errorf("--registry-kind %q: want %s or %s", s.kind, registryKindLocal, registryKindSageMaker)
	}
	return nil
}

func (s *sagemakerFlags) awsOptions() sagemaker.AWSOptions {
	return sagemaker.AWSOptions{Region: s.region, EndpointURL: s.endpointURL, S3PathStyle: s.pathStyle}
}

// sagemakerBackend is everything the SageMaker registry kind plugs into a
// publisher.Config, plus the event consumer to run beside the service.
type sagemakerBackend struct {
	Clients     sagemaker.Clients
	Registry    *sagemaker.Registry
	Distributor *s3dist.Presigner
	// Events is nil without --sqs-queue-url.
	Events *sagemaker.Events
}

// apply points cfg at the backend.
func (b *sagemakerBackend) apply(cfg *publisher.Config) {
	cfg.Registry, cfg.Distributor = b.Registry, b.Distributor
}

// sagemakerRegistryFromFlags builds the SageMaker backend for groups (the
// --groups of `publisher`, or the one group of `publish`). stateFile is
// the publisher's state file; the artifact cache goes beside it unless
// --artifact-cache says otherwise.
func sagemakerRegistryFromFlags(ctx context.Context, s *sagemakerFlags, groups []string, stateFile string, log *slog.Logger) (*sagemakerBackend, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(groups) == 0 {
		return nil, errors.New("no model package group: pass --groups g1,g2 (the groups' names are the model ids trucks run)")
	}
	if stateFile == "" {
		return nil, errors.New("--state is required with --registry-kind sagemaker (the publisher's memory of what it announced)")
	}
	// With no local registry folder, nothing else creates the state
	// file's folder (the publisher's lock file goes there too).
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o755); err != nil {
		return nil, fmt.Errorf("state folder: %w", err)
	}
	cfg, err := sagemaker.LoadAWSConfig(ctx, s.awsOptions())
	if err != nil {
		return nil, err
	}
	cl := sagemaker.NewClients(cfg, s.awsOptions())
	cache := s.cacheFile
	if cache == "" {
		cache = filepath.Join(filepath.Dir(stateFile), "sagemaker-artifacts.json")
	}
	refresh := s.refresh
	if refresh == 0 {
		refresh = sagemaker.DefaultRefreshInterval
	}
	reg, err := sagemaker.New(sagemaker.Config{Client: cl.SageMaker, Artifacts: &s3dist.Reader{Client: cl.S3}, Groups: groups,
		RefreshInterval: refresh, CacheFile: cache, ContainerRuntime: s.container, Logger: log})
	if err != nil {
		return nil, err
	}
	dist := &s3dist.Presigner{Client: cl.Presign, TTL: s.presignTTL, Credentials: cl.Credentials}
	if err := dist.Check(); err != nil {
		return nil, fmt.Errorf("--presign-ttl: %w", err)
	}
	b := &sagemakerBackend{Clients: cl, Registry: reg, Distributor: dist}
	if s.queueURL != "" {
		b.Events = &sagemaker.Events{Client: cl.SQS, QueueURL: s.queueURL, Registry: reg, Logger: log}
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
	if err := s.check(); err != nil {
		return nil, err
	}
	awsCfg, err := sagemaker.LoadAWSConfig(ctx, s.awsOptions())
	if err != nil {
		return nil, err
	}
	cl := sagemaker.NewClients(awsCfg, s.awsOptions())
	group := s.group
	if s.arn != "" {
		pkg, err := sagemaker.Lookup(ctx, cl.SageMaker, s.arn)
		if err != nil {
			return nil, err
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
	b, err := sagemakerRegistryFromFlags(ctx, s, []string{group}, cfg.StateFile, log)
	if err != nil {
		return nil, err
	}
	if _, err := b.Registry.Announceable(ctx, group, version); err != nil {
		return nil, err
	}
	b.apply(&cfg)
	r, err := publisher.PublishOnce(ctx, cfg, group, version)
	if err != nil {
		return nil, err
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

// explainPublishSageMaker adds what to do next to broker failures; the
// registry's refusals already say it (with the package ARN), and the local
// registry's hints in explainPublish would mislead.
func explainPublishSageMaker(err error, timeout time.Duration) error {
	if errors.Is(err, publisher.ErrNotApproved) || errors.Is(err, publisher.ErrUnknownVersion) || errors.Is(err, publisher.ErrSuperseded) {
		return err
	}
	return explainPublish(err, "", 0, timeout)
}
