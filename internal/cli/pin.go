package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/publisher"
)

func newPinCmd() *cobra.Command {
	var (
		f       publisherFlags
		truck   string
		model   string
		version int64
		clear   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pin --truck T --model M (--version N | --clear)",
		Short: "Pin one truck to an approved model version, or clear its pin",
		Long: `Pin publishes a signed per-truck pin, retained on linkedge/v1/trucks/{truck}/desired. While
it is set, that truck runs the pinned version whatever the model's release says: hold a
truck back on a known version, or try an approved version on a test truck first. --clear
replaces the pin with a signed clearing document, and the truck follows the model's
release again. Both documents name their truck: no other truck accepts them, and no
other signed document (a model release) is accepted as a pin.

The pin is signed with the publisher's key and names the artifact like a release does
(same registry, key and artifact URL flags as "linkedge publish"). It is valid for --ttl
(default 720h) and the publisher service does not re-sign it: pin again to extend it.
Exits 0 once the broker acknowledged.`,
		Example: `  linkedge pin --truck truck-7 --model aps-failure --version 1 --broker tcp://127.0.0.1:1883 \
      --registry ./registry --key publisher.key
  linkedge pin --truck truck-7 --model aps-failure --clear --broker tcp://127.0.0.1:1883 --key publisher.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.publisherConfig(cmd)
			if err != nil {
				return err
			}
			oneShotTimeout(cmd, &cfg, timeout)
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if clear {
				if model == "" {
					return errors.New("--model is required with --clear (the clearing document is signed for one truck and model)")
				}
				r, err := publisher.Unpin(ctx, cfg, truck, model)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cleared the pin of %s: serial %d\n", truck, r.Serial)
				return nil
			}
			if model == "" || version == 0 {
				return errors.New("--model and --version are required (or --clear)")
			}
			r, err := publisher.Pin(ctx, cfg, truck, model, version)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pinned %s to %s version %d: serial %d, valid until %s\n",
				truck, model, version, r.Serial, r.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&truck, "truck", "", "truck id (required)")
	fl.StringVar(&model, "model", "", "model name")
	fl.Int64Var(&version, "version", 0, "approved model version to pin")
	fl.BoolVar(&clear, "clear", false, "remove the truck's pin")
	fl.DurationVar(&timeout, "timeout", 30*time.Second, "give up on the whole pin after this (registry read, broker connection, acknowledgement)")
	_ = fl.MarkDeprecated("publish-timeout", "use --timeout, which bounds the whole pin, the broker's acknowledgement included")
	_ = cmd.MarkFlagRequired("truck")
	return cmd
}
