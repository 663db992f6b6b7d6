package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/publisher"
)

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Halt or resume a staged rollout",
		Long: `Rollout halts and resumes the staged rollout of a model (see "linkedge publisher" and
docs/publisher.md). Halting writes an operator hold into the publisher's holds file
(holds_file, default REGISTRY/` + publisher.DefaultHoldsFileName + `); at its next poll the publisher keeps the
canary as it is (the trucks that took it keep it, no other truck gets it) and does not
promote it, records who halted it and why in its state file, and logs it. Canary
failures still halt the rollout for good. Resume lifts the hold and the publisher goes
on with the rollout.

Run it on the publisher's host, with the publisher's config file, --registry or --state:
the holds file is a local file, so only who may write there can halt or resume. It needs
neither the broker nor the key.`,
	}
	cmd.AddCommand(newRolloutHaltCmd(true), newRolloutHaltCmd(false))
	return cmd
}

func newRolloutHaltCmd(halt bool) *cobra.Command {
	var (
		config, registry, state, holds string
		model, reason, by              string
		timeout                        time.Duration
	)
	use, short := "resume --model M", "Let a halted rollout go on"
	if halt {
		use, short = "halt --model M [--reason TEXT]", "Halt a staged rollout: no promotion until it is resumed"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Example: `  linkedge rollout halt --model aps-failure --reason "brake alerts doubled on the canary" --registry ./registry
  linkedge rollout resume --model aps-failure --config publisher.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var cfg publisher.Config
			if config != "" {
				var err error
				if cfg, err = publisher.LoadConfig(config); err != nil {
					return err
				}
			}
			override(cmd, "registry", &cfg.RegistryDir, registry)
			override(cmd, "state", &cfg.StateFile, state)
			override(cmd, "holds", &cfg.HoldsFile, holds)
			if cfg.RegistryDir == "" && cfg.RegistryKind != publisher.RegistryKindSageMaker {
				cfg.RegistryDir = os.Getenv(envRegistry)
			}
			if cfg.RegistryDir == "" && cfg.StateFile == "" {
				return fmt.Errorf("%w: say where the publisher keeps its state: --config, --registry or --state", publisher.ErrInvalidConfig)
			}
			cfg.Logger = slog.Default()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return runRollout(ctx, cmd.OutOrStdout(), cfg, halt, model, by, reason)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&config, "config", "", "the publisher's YAML config file; the flags below override it")
	fl.StringVar(&registry, "registry", "", "local registry folder (default $"+envRegistry+")")
	fl.StringVar(&state, "state", "", "the publisher's state file (default REGISTRY/"+publisher.DefaultStateFileName+")")
	fl.StringVar(&holds, "holds", "", "the holds file (default REGISTRY/"+publisher.DefaultHoldsFileName+", or beside --state)")
	fl.StringVar(&model, "model", "", "model whose rollout to "+map[bool]string{true: "halt", false: "resume"}[halt]+" (required)")
	fl.StringVar(&by, "by", registryApprover(), "who "+map[bool]string{true: "halts", false: "resumes"}[halt]+", for the state file and the log")
	if halt {
		fl.StringVar(&reason, "reason", "", fmt.Sprintf("why, in one line of at most %d bytes (recorded in the state file and shown by the console)", publisher.MaxHoldReason))
	}
	fl.DurationVar(&timeout, "timeout", 30*time.Second, "give up waiting for the holds file's lock after this")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}

// runRollout halts or resumes model's rollout through publisher.HaltRollout and
// ResumeRollout, the calls behind the console's halt and resume actions.
func runRollout(ctx context.Context, out io.Writer, cfg publisher.Config, halt bool, model, by, reason string) error {
	if halt {
		h, err := publisher.HaltRollout(ctx, cfg, model, by, reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "halted the rollout of %s version %d (%s); the publisher stops promoting it at its next poll\n", model, h.Version, h.Reason)
		return nil
	}
	h, err := publisher.ResumeRollout(ctx, cfg, model, by)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "resumed the rollout of %s version %d (halted by %s at %s); the publisher goes on with it at its next poll\n",
		model, h.Version, h.HaltedBy, h.HaltedAt.Format(time.RFC3339))
	return nil
}
