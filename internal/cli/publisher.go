package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// Environment variables the publisher commands read when the flag (and the
// config file) leave the value empty. The password has no flag value in
// process listings this way.
const (
	envRegistry     = "LINKEDGE_REGISTRY"
	envMQTTPassword = "LINKEDGE_MQTT_PASSWORD"
)

// publisherFlags are the flags `publisher` and `publish` share. A flag
// given on the command line overrides the config file; unset ones keep the
// file's value or the publisher's default.
type publisherFlags struct {
	config         string
	broker         string
	clientID       string
	username       string
	password       string
	registry       string
	key            string
	state          string
	listen         string
	artifactURL    string
	poll           time.Duration
	ttl            time.Duration
	publishTimeout time.Duration
	tlsCA          string
	tlsCert        string
	tlsKey         string
	replica        int
	// sm are the SageMaker flags of `publisher` and `publish`; nil for
	// commands that work with the local registry only (`pin`).
	sm *sagemakerFlags
}

func (f *publisherFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML config file (see docs/publisher.md); flags override it")
	fl.StringVar(&f.broker, "broker", "", "fleet broker URL, e.g. tcp://127.0.0.1:1883")
	fl.StringVar(&f.clientID, "client-id", "", "MQTT client id (default "+publisher.DefaultClientID+")")
	fl.StringVar(&f.username, "username", "", "MQTT username (a user with the publisher role)")
	fl.StringVar(&f.password, "password", "", "MQTT password (default $"+envMQTTPassword+")")
	fl.StringVar(&f.registry, "registry", "", "local registry folder (default $"+envRegistry+")")
	fl.StringVar(&f.key, "key", "", "Ed25519 private key (PKCS#8 PEM) that signs releases")
	fl.StringVar(&f.state, "state", "", "state file (default REGISTRY/"+publisher.DefaultStateFileName+")")
	fl.StringVar(&f.listen, "artifacts-listen", "", "artifact server address (default "+publisher.DefaultArtifactListen+")")
	fl.StringVar(&f.artifactURL, "artifacts-url", "", "base URL trucks download artifacts from (default http://ARTIFACTS-LISTEN)")
	fl.DurationVar(&f.poll, "poll", 0, "registry poll interval (default 2s)")
	fl.DurationVar(&f.ttl, "ttl", 0, "release validity; re-signed when a third remains (default 720h)")
	fl.DurationVar(&f.publishTimeout, "publish-timeout", 0, "wait for the broker's acknowledgement of one release (default 10s)")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA file to trust for the broker besides the system roots (tls.ca_file)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM client certificate for a broker that requires mutual TLS (tls.cert_file)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert (tls.key_file)")
	fl.IntVar(&f.replica, "replica", 0, fmt.Sprintf("with publishers running at once for availability, a number of each one's own, 0-%d: no two sign the same serial (replica)", publisher.MaxReplicas-1))
}

// publisherConfig builds the config: file, then flags, then environment.
// The registry kind is settled here, so that commands branch on
// cfg.RegistryKind alone.
func (f *publisherFlags) publisherConfig(cmd *cobra.Command) (publisher.Config, error) {
	var cfg publisher.Config
	if f.config != "" {
		var err error
		if cfg, err = publisher.LoadConfig(f.config); err != nil {
			return cfg, err
		}
	}
	override(cmd, "broker", &cfg.Broker, f.broker)
	override(cmd, "client-id", &cfg.ClientID, f.clientID)
	override(cmd, "username", &cfg.Username, f.username)
	override(cmd, "password", &cfg.Password, f.password)
	override(cmd, "registry", &cfg.RegistryDir, f.registry)
	override(cmd, "key", &cfg.KeyFile, f.key)
	override(cmd, "state", &cfg.StateFile, f.state)
	override(cmd, "artifacts-listen", &cfg.ArtifactListen, f.listen)
	override(cmd, "artifacts-url", &cfg.ArtifactBaseURL, f.artifactURL)
	override(cmd, "tls-ca", &cfg.TLS.CAFile, f.tlsCA)
	override(cmd, "tls-cert", &cfg.TLS.CertFile, f.tlsCert)
	override(cmd, "tls-key", &cfg.TLS.KeyFile, f.tlsKey)
	override(cmd, "poll", &cfg.PollInterval, f.poll)
	override(cmd, "ttl", &cfg.ReleaseTTL, f.ttl)
	override(cmd, "publish-timeout", &cfg.PublishTimeout, f.publishTimeout)
	override(cmd, "replica", &cfg.Replica, f.replica)
	if f.sm != nil {
		if err := f.sm.apply(cmd, &cfg); err != nil {
			return cfg, err
		}
	}
	switch cfg.RegistryKind {
	case "", publisher.RegistryKindLocal:
		// The variable names a local registry, so it means nothing (and
		// would be refused as registry_dir) with the SageMaker kind.
		if cfg.RegistryDir == "" {
			cfg.RegistryDir = os.Getenv(envRegistry)
		}
	case publisher.RegistryKindSageMaker:
		if f.sm == nil {
			return cfg, fmt.Errorf("%s: %w: registry_kind: sagemaker: `linkedge %s` works with the local registry only; give it a config file with registry_dir instead", f.config, publisher.ErrInvalidConfig, cmd.Name())
		}
	default:
		// Unknown: stop before the commands branch on it. Validate
		// reports it, along with any other mistake.
		return cfg, cfg.Validate()
	}
	if cfg.Password == "" {
		cfg.Password = os.Getenv(envMQTTPassword)
	}
	cfg.Logger = slog.Default()
	return cfg, nil
}

// rolloutFlags are `publisher`'s staged rollout flags; any of them given
// makes a policy (or changes the file's), --no-rollout drops it.
type rolloutFlags struct {
	groups       []string
	percent      int
	soak         time.Duration
	minCommitted int
	haltAfter    int
	off          bool
}

func (r *rolloutFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVar(&r.groups, "canary-groups", nil, "stage new versions: trucks in these groups run one first (rollout.groups)")
	fl.IntVar(&r.percent, "canary-percent", 0, "stage new versions: this percent of the other trucks runs one first (rollout.percent)")
	fl.DurationVar(&r.soak, "canary-soak", 0, "how long the canary runs before promotion (rollout.soak, default 1h)")
	fl.IntVar(&r.minCommitted, "canary-min-committed", 0, "canary trucks that must have committed before promotion (rollout.min_committed, default 1)")
	fl.IntVar(&r.haltAfter, "canary-halt-after", 0, "canary trucks reporting a failure that halt the rollout (rollout.halt_after, default 1)")
	fl.BoolVar(&r.off, "no-rollout", false, "announce new versions to every truck at once, whatever the config file says")
}

func (r *rolloutFlags) apply(cmd *cobra.Command, cfg *publisher.Config) {
	if r.off {
		cfg.Rollout = nil
		return
	}
	changed := false
	for _, name := range []string{"canary-groups", "canary-percent", "canary-soak", "canary-min-committed", "canary-halt-after"} {
		changed = changed || cmd.Flags().Changed(name)
	}
	if !changed {
		return
	}
	var rc publisher.RolloutConfig
	if cfg.Rollout != nil {
		rc = *cfg.Rollout
	}
	override(cmd, "canary-groups", &rc.Groups, r.groups)
	override(cmd, "canary-percent", &rc.Percent, r.percent)
	override(cmd, "canary-soak", &rc.Soak, r.soak)
	override(cmd, "canary-min-committed", &rc.MinCommitted, r.minCommitted)
	override(cmd, "canary-halt-after", &rc.HaltAfter, r.haltAfter)
	cfg.Rollout = &rc
}

func newPublisherCmd() *cobra.Command {
	var smf sagemakerFlags
	var rf rolloutFlags
	f := publisherFlags{sm: &smf}
	cmd := &cobra.Command{
		Use:   "publisher",
		Short: "Announce each model's highest approved version to the fleet as a signed release",
		Long: `Publisher watches a model registry (a local folder edited with "linkedge registry", or
the SageMaker Model Registry: --registry-kind sagemaker, or registry_kind: sagemaker and a
sagemaker: section in the config file; see docs/aws.md) and keeps one signed release
document per model retained on the fleet broker:

  - a model's target is its highest approved version;
  - when the target changes (a newer version approved, or the announced one rejected),
    a new document with a higher serial is published (retained, QoS 1);
  - an announcement counts only once the broker acknowledged it; until then it is
    retried every poll, and the state file remembers what was acknowledged, so a
    restart announces nothing twice;
  - documents are re-signed before they expire (when a third of --ttl remains);
  - with a rollout policy (--canary-groups and/or --canary-percent, or rollout: in the
    config file), a new version goes to the canary trucks first and to everyone after
    --canary-soak, unless canary trucks report that it failed: then the canary is
    withdrawn and the rollout halted (docs/publisher.md, "Staged rollouts").

It also serves the approved artifacts for trucks to download, with resumable Range
requests, at ARTIFACTS-URL/artifacts/{model}/{version}/model.tar.gz, plus /healthz
and /metrics on the same address. It runs until interrupted (SIGINT or SIGTERM).`,
		Example: `  linkedge publisher --broker tcp://127.0.0.1:1883 --registry ./registry --key publisher.key
  linkedge publisher --config /etc/linkedge/publisher.yaml --canary-groups early --canary-percent 5 --canary-soak 2h
  linkedge publisher --config /etc/linkedge/publisher.yaml
  linkedge publisher --config /etc/linkedge/publisher-sagemaker.yaml --presign-ttl 12h
  linkedge publisher --broker tcp://fleet:1883 --registry /srv/registry --key /etc/linkedge/publisher.key \
      --artifacts-listen 0.0.0.0:9884 --artifacts-url https://models.example.com`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.publisherConfig(cmd)
			if err != nil {
				return err
			}
			rf.apply(cmd, &cfg)
			if cfg.RegistryKind == publisher.RegistryKindSageMaker {
				b, err := newSageMakerBackend(cmd.Context(), cfg, cfg.Logger)
				if err != nil {
					return err
				}
				return runSageMakerPublisher(cmd.Context(), cfg, b)
			}
			return runPublisher(cmd.Context(), cfg)
		},
	}
	f.register(cmd)
	smf.register(cmd, false)
	rf.register(cmd)
	return cmd
}

func runPublisher(ctx context.Context, cfg publisher.Config) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = reg
	p, err := publisher.New(cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Run(ctx)
}

func newPublishCmd() *cobra.Command {
	var (
		f       publisherFlags
		model   string
		version int64
		approve bool
		by      string
		timeout time.Duration
		smf     sagemakerFlags
	)
	f.sm = &smf
	cmd := &cobra.Command{
		Use:   "publish",
		Short: "Announce one approved model version now and wait for the broker to acknowledge it",
		Long: `Publish is the pipeline hook: it announces exactly --model at --version to the fleet and
exits 0 only once the broker has acknowledged the signed release (retained, QoS 1).
It uses the same registry, key and state file as "linkedge publisher", follows the same
serial rule, and always signs a new document (even if the version was announced before).

It refuses a version that is unknown, not approved (pass --approve to approve it first),
or below the model's highest approved version (the publisher would announce that one
instead; reject the newer version to roll back).

--timeout bounds the whole command: reading the registry (on SageMaker, the model
package and its artifact), connecting to the broker and waiting for its
acknowledgement. When it runs out, publish exits non-zero, names the step that
stalled, and records nothing. (--publish-timeout, the service's wait for one
acknowledgement, is deprecated here: --timeout covers it.)

Publish serves no artifacts: the release points at --artifacts-url (default
http://ARTIFACTS-LISTEN), where a running "linkedge publisher" serves them.

On the SageMaker Model Registry (--model-package-arn ARN, or --group G --version N with
--registry-kind sagemaker or registry_kind: sagemaker in the config file) it announces
that model package with a presigned S3 URL; the file's sagemaker: section applies, except
its groups, queue and refresh interval, which are the service's (docs/aws.md).`,
		Example: `  linkedge publish --model aps-failure --version 2 --broker tcp://127.0.0.1:1883 \
      --registry ./registry --key publisher.key
  linkedge publish --model aps-failure --version 3 --approve --by pipeline --config publisher.yaml
  linkedge publish --config publisher-sagemaker.yaml --group aps-failure --version 7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.publisherConfig(cmd)
			if err != nil {
				return err
			}
			oneShotTimeout(cmd, &cfg, timeout)
			if cfg.RegistryKind == publisher.RegistryKindSageMaker {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				if _, err := runPublishSageMaker(ctx, cmd.OutOrStdout(), cfg, &smf, version, cfg.Logger); err != nil {
					return explainPublishSageMaker(err, timeout)
				}
				return nil
			}
			if model == "" || version == 0 {
				return errors.New("--model and --version are required (or --model-package-arn, or --registry-kind sagemaker --group G --version N)")
			}
			if approve {
				if err := approveLocal(cfg.RegistryDir, model, version, by); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			r, err := publisher.PublishOnce(ctx, cfg, model, version)
			if err != nil {
				return explainPublish(err, model, version, timeout)
			}
			a := r.Stable.Artifact
			fmt.Fprintf(cmd.OutOrStdout(), "announced %s version %d: serial %d, sha256 %s, %d bytes, %s, valid until %s\n",
				r.Model, r.Stable.Version, r.Serial, a.SHA256, a.Size, a.URL, r.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&model, "model", "", "model name (local registry)")
	fl.Int64Var(&version, "version", 0, "model version (local registry, or with --group)")
	fl.BoolVar(&approve, "approve", false, "approve the version in the local registry first")
	fl.StringVar(&by, "by", registryApprover(), "approver recorded by --approve")
	fl.DurationVar(&timeout, "timeout", 30*time.Second, "give up on the whole publish after this (registry read, broker connection, acknowledgement); the error names the step that stalled")
	smf.register(cmd, true)
	_ = fl.MarkDeprecated("publish-timeout", "use --timeout, which bounds the whole publish, the broker's acknowledgement included")
	return cmd
}

// oneShotTimeout makes --timeout the one deadline of `linkedge publish`.
// Two timeouts confused (issue 12 #3): publish_timeout is the service's
// wait for each acknowledgement, and a one-shot that waited 10s for an
// acknowledgement inside a 60s --timeout failed early for no reason. A
// --publish-timeout given anyway (deprecated) still sets that wait.
func oneShotTimeout(cmd *cobra.Command, cfg *publisher.Config, timeout time.Duration) {
	if !cmd.Flags().Changed("publish-timeout") && timeout >= 10*time.Millisecond {
		cfg.PublishTimeout = timeout
	}
}

func approveLocal(dir, model string, version int64, by string) error {
	if dir == "" {
		return fmt.Errorf("--approve needs the local registry: pass --registry or set $%s", envRegistry)
	}
	reg, err := localreg.Open(dir)
	if err != nil {
		return err
	}
	e, err := reg.Approve(model, version, by)
	if err != nil {
		return err
	}
	slog.Info("approved", "model", model, "version", version, "by", e.ApprovedBy)
	return nil
}

// explainPublish adds what to do next to the errors a pipeline author
// will meet.
func explainPublish(err error, model string, version int64, timeout time.Duration) error {
	switch {
	case errors.Is(err, publisher.ErrNotApproved):
		return fmt.Errorf("%w\napprove it with `linkedge registry approve --model %s --version %d`, or pass --approve", err, model, version)
	case errors.Is(err, publisher.ErrUnknownVersion):
		return fmt.Errorf("%w\nadd the bundle with `linkedge registry add BUNDLE`; see `linkedge registry list`", err)
	case errors.Is(err, publisher.ErrBrokerRefused):
		return fmt.Errorf("not announced: %w\npass --username and --password (or $%s) of a broker user with the publisher role", err, envMQTTPassword)
	case errors.Is(err, publisher.ErrBrokerUnreachable):
		return fmt.Errorf("not announced: broker not reachable within %s (--timeout): %w", timeout, err)
	case errors.Is(err, publisher.ErrNoAck), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("not confirmed within %s (--timeout): %w; the broker may or may not have it, so run publish again", timeout, err)
	}
	return err
}
