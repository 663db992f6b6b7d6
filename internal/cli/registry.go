package cli

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/publisher/localreg"
)

func newRegistryCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Add, approve, reject and list model versions in the local registry",
		Long: `Registry edits the local model registry: a folder that "linkedge publisher" watches, as
it would watch the SageMaker Model Registry. Its layout is

  DIR/models/{model}/{version}/model.tar.gz   the bundle, byte for byte
  DIR/models/{model}/{version}/version.json   status, times, sha256, size, image

A version runs in process on the trucks, or, added (or approved) with --image, in that
serving container image, pinned by digest as "linkedge toolkit image --push" prints it.
A version is added as pending; once approved, the publisher announces the highest
approved version of each model to the fleet; rejecting the announced version makes
the publisher roll the fleet back to the previous approved one. Every change is an
atomic rename, so a running publisher never sees half of one. Run one writer at a time.`,
		Example: `  linkedge registry add inference/apsmodels/aps-failure-v1.tar.gz --registry ./registry
  linkedge registry approve --model aps-failure --version 1 --registry ./registry
  linkedge registry add aps-failure-v2.tar.gz --image 127.0.0.1:5000/linkedge-serve@sha256:… --registry ./registry
  linkedge registry reject --model aps-failure --version 2 --by alice --registry ./registry
  linkedge registry list --registry ./registry`,
	}
	cmd.PersistentFlags().StringVar(&dir, "registry", os.Getenv(envRegistry), "registry folder (default $"+envRegistry+")")
	open := func() (*localreg.Registry, error) {
		if dir == "" {
			return nil, fmt.Errorf("no registry folder: pass --registry DIR or set $%s", envRegistry)
		}
		return localreg.Open(dir)
	}
	cmd.AddCommand(newRegistryAddCmd(open), newRegistryDecideCmd(open, true), newRegistryDecideCmd(open, false), newRegistryListCmd(open))
	return cmd
}

type registryOpener func() (*localreg.Registry, error)

func newRegistryAddCmd(open registryOpener) *cobra.Command {
	var approve bool
	var by, image string
	cmd := &cobra.Command{
		Use:   "add BUNDLE...",
		Short: "Add model bundles (model.tar.gz) as pending versions",
		Long: `Add copies each bundle into the registry as a pending version. The model name and
version come from the bundle's metadata.json. A version that exists, or that is not
above the model's newest version, is refused: a version number always means the same bytes.

With --image each version runs on the trucks in that serving container image (the
bundle mounted at /opt/ml/model) instead of in process: trucks need containers.enabled.`,
		Example: `  linkedge registry add model.tar.gz --registry ./registry
  linkedge registry add aps-failure-v2.tar.gz --approve --by pipeline --registry ./registry
  linkedge registry add aps-failure-v2.tar.gz --image 127.0.0.1:5000/linkedge-serve@sha256:… --registry ./registry`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if image != "" {
				// Before anything is added: a mistyped image must not leave
				// an added version behind.
				if err := release.CheckImage(image); err != nil {
					return fmt.Errorf("--image: %w", err)
				}
			}
			reg, err := open()
			if err != nil {
				return err
			}
			for _, p := range args {
				e, err := reg.Add(cmd.Context(), p)
				if err != nil {
					return err
				}
				if image != "" {
					if e, err = reg.SetImage(e.Model, e.Version, image); err != nil {
						return err
					}
				}
				if approve {
					if e, err = reg.Approve(e.Model, e.Version, by); err != nil {
						return err
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added %s version %d (%s, sha256 %s, %d bytes, runs %s)\n", e.Model, e.Version, e.Status, e.SHA256, e.Size, runsIn(e))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&approve, "approve", false, "approve each version right away")
	cmd.Flags().StringVar(&by, "by", registryApprover(), "approver recorded with --approve")
	cmd.Flags().StringVar(&image, "image", "", "serving container image the versions run in, pinned by digest (name@sha256:…); default: in process")
	return cmd
}

// runsIn says where a version runs on the trucks.
func runsIn(e localreg.Entry) string {
	if e.Image != "" {
		return "in container " + e.Image
	}
	return "in process"
}

func newRegistryDecideCmd(open registryOpener, approve bool) *cobra.Command {
	var model, by, image string
	var version int64
	cmd := &cobra.Command{
		Use:     "approve",
		Short:   "Approve a version, so the publisher announces it if it is the model's highest approved",
		Long:    "Approve marks a version approved after checking that its artifact is unchanged since it\nwas added. A running publisher announces it within one poll if no higher version is approved.\n\nWith --image the version runs in that serving container image (pinned by digest) instead of\nin process; a version's image is set once, before or with its approval.",
		Example: "  linkedge registry approve --model aps-failure --version 2 --by alice --registry ./registry\n  linkedge registry approve --model aps-failure --version 2 --image 127.0.0.1:5000/linkedge-serve@sha256:… --registry ./registry",
	}
	if !approve {
		cmd.Use = "reject"
		cmd.Short = "Reject a version; if it was announced, the publisher rolls the fleet back"
		cmd.Long = "Reject marks a version rejected. If it was the announced version, a running publisher\nannounces the highest remaining approved version instead (with a newer serial); if none\nremains it announces nothing and trucks keep what they run."
		cmd.Example = "  linkedge registry reject --model aps-failure --version 2 --by alice --registry ./registry"
	}
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		reg, err := open()
		if err != nil {
			return err
		}
		decide, verb := reg.Reject, "rejected"
		if approve {
			decide, verb = reg.Approve, "approved"
			if image != "" {
				if _, err := reg.SetImage(model, version, image); err != nil {
					return err
				}
			}
		}
		e, err := decide(model, version, by)
		if err != nil {
			return err
		}
		if approve {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s version %d (runs %s)\n", verb, model, version, runsIn(e))
			return nil
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s version %d\n", verb, model, version)
		return nil
	}
	if approve {
		cmd.Flags().StringVar(&image, "image", "", "run the version in this serving container image, pinned by digest (name@sha256:…)")
	}
	cmd.Flags().StringVar(&model, "model", "", "model name (required)")
	cmd.Flags().Int64Var(&version, "version", 0, "version (required)")
	cmd.Flags().StringVar(&by, "by", registryApprover(), "who decides, recorded in the registry and the release")
	_ = cmd.MarkFlagRequired("model")
	_ = cmd.MarkFlagRequired("version")
	return cmd
}

func newRegistryListCmd(open registryOpener) *cobra.Command {
	var model string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List every version with its status",
		Example: "  linkedge registry list --registry ./registry\n  linkedge registry list --model aps-failure --registry ./registry",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := open()
			if err != nil {
				return err
			}
			entries, err := reg.List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "MODEL\tVERSION\tSTATUS\tSHA256\tSIZE\tAPPROVED AT\tBY\tIMAGE")
			for _, e := range entries {
				if model != "" && e.Model != model {
					continue
				}
				at, who := "-", "-"
				if e.Status == localreg.StatusApproved {
					at, who = e.ApprovedAt.Local().Format(time.DateTime), e.ApprovedBy
				} else if e.Status == localreg.StatusRejected {
					who = e.RejectedBy
				}
				img := e.Image
				if img == "" {
					img = "-" // in process
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Model, e.Version, e.Status, e.SHA256[:12], strconv.FormatInt(e.Size, 10), at, who, img)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "only this model")
	return cmd
}

// registryApprover is the default --by: the login name, which is what an
// audit wants when nobody says otherwise.
func registryApprover() string {
	for _, k := range []string{"USER", "LOGNAME"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}
