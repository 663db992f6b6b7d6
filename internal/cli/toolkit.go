package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/container"
)

func newToolkitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "toolkit",
		Short: "Package, check and train models: bundles, golden samples, the APS demo models",
		Long: `The toolkit turns a trained model into a LinkEdge bundle (the SageMaker-style
model.tar.gz holding model.onnx and metadata.json) and checks bundles the way a truck
will before it switches to them.`,
	}
	cmd.AddCommand(newToolkitBundleCmd(), newToolkitValidateCmd(), newToolkitInspectCmd(), newToolkitImageCmd())
	addToolkitTrainCommands(cmd)
	return cmd
}

func newToolkitBundleCmd() *cobra.Command {
	var onnxPath, metaPath, out string
	var record bool
	cmd := &cobra.Command{
		Use:   "bundle --onnx model.onnx --metadata metadata.json --out model.tar.gz",
		Short: "Build a model.tar.gz from an ONNX model and its metadata",
		Long: `Bundle checks the ONNX graph against the metadata (input and output names, types,
feature count), runs the golden samples in ONNX Runtime and writes a reproducible
model.tar.gz (same inputs, same bytes, same sha256).

With --record-golden the scores and labels of the golden samples are taken from the
model itself: list the golden inputs in metadata.json and let the toolkit fill in what
this model answers, so every truck can check that it gets the same.`,
		Example: `  linkedge toolkit bundle --onnx model.onnx --metadata metadata.json --record-golden --out model.tar.gz`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			model, err := os.ReadFile(onnxPath)
			if err != nil {
				return err
			}
			raw, err := os.ReadFile(metaPath)
			if err != nil {
				return err
			}
			meta, err := bundle.DecodeMetadata(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", metaPath, err)
			}
			if err := inference.Init(cmd.Context(), ""); err != nil {
				return err
			}
			m, err := inference.Load(cmd.Context(), &bundle.Bundle{Meta: meta, ONNX: model, Source: onnxPath}, inference.Options{SkipGolden: record})
			if err != nil {
				return err
			}
			defer m.Close()
			if record {
				res, err := m.RunGolden(cmd.Context())
				if err != nil {
					return err
				}
				for i, r := range res {
					meta.Golden[i].Score, meta.Golden[i].Label = r.GotScore, r.GotLabel
				}
			}
			sha, size, err := bundle.WriteFile(out, meta, model)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s %s, %d features, %d golden samples, %d bytes, sha256 %s\n",
				out, meta.Name, bundleVersion(meta.Version), len(meta.Features), len(meta.Golden), size, sha)
			return nil
		},
	}
	cmd.Flags().StringVar(&onnxPath, "onnx", "", "the ONNX model (required)")
	cmd.Flags().StringVar(&metaPath, "metadata", "", "metadata.json (required)")
	cmd.Flags().StringVar(&out, "out", "model.tar.gz", "where to write the bundle")
	cmd.Flags().BoolVar(&record, "record-golden", false, "fill the golden samples' scores and labels from this model")
	cmd.MarkFlagRequired("onnx")
	cmd.MarkFlagRequired("metadata")
	return cmd
}

// bundleVersion names a bundle's own version for people: "v3", or, for a
// bundle that leaves it to the registry, says so.
func bundleVersion(v int64) string {
	if v == 0 {
		return "(no version: the registry assigns it)"
	}
	return fmt.Sprintf("v%d", v)
}

func newToolkitValidateCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate BUNDLE",
		Short: "Load a bundle in ONNX Runtime and run its golden samples, as a truck does",
		Long: `Validate loads the bundle exactly as the truck agent and "linkedge serve" do, runs every
golden sample and prints each result. It exits non-zero when the bundle is malformed,
the graph does not match the metadata, or any golden sample differs.`,
		Example: `  linkedge toolkit validate inference/apsmodels/aps-failure-v2.tar.gz`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			if err := inference.Init(cmd.Context(), ""); err != nil {
				return err
			}
			m, err := inference.Load(cmd.Context(), b, inference.Options{SkipGolden: true})
			if err != nil {
				return err
			}
			defer m.Close()
			res, err := m.RunGolden(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				enc.Encode(res)
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "SAMPLE\tWANT\tGOT\tRESULT\n")
				for _, r := range res {
					verdict := "ok"
					if !r.OK {
						verdict = "FAIL"
					}
					fmt.Fprintf(tw, "%s\t%s %.6f\t%s %.6f\t%s\n", r.ID, r.WantLabel, r.WantScore, r.GotLabel, r.GotScore, verdict)
				}
				tw.Flush()
			}
			if err := m.CheckGolden(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %d golden samples pass\n", m.Name(), bundleVersion(m.Version()), len(res))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print results as JSON")
	return cmd
}

func newToolkitInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect BUNDLE",
		Short: "Print a bundle's metadata",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			if b.Meta == nil {
				return fmt.Errorf("%s has no %s", args[0], bundle.MetadataFile)
			}
			out, err := bundle.EncodeMetadata(b.Meta)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
}

func newToolkitImageCmd() *cobra.Command {
	var opts container.ImageOptions
	var push bool
	cmd := &cobra.Command{
		Use:   "image --tag NAME[:TAG] [--bundle model.tar.gz]",
		Short: "Package linkedge serve (and optionally a model) into a SageMaker-compatible container image",
		Long: `Image builds a container image on the local Docker Engine, FROM scratch: the linkedge binary,
the ONNX Runtime library and the shared libraries both need, and, with --bundle, the model
unpacked at /opt/ml/model. Nothing is pulled from a registry.

The image follows the SageMaker hosting contract: "docker run IMAGE serve" serves
/opt/ml/model on port 8080 (GET /ping, POST /invocations, plus the Open Inference Protocol v2
and /metrics) and stops cleanly on SIGTERM. Without --bundle, mount the model there: that is
how the truck agent runs it, with the version's bundle.

It prints the image pinned by digest, the reference a container release must name
("linkedge registry add BUNDLE --image REF"). With --push it pushes the image to the
registry its tag names (anonymously) and prints the registry's digest, which any truck can
pull. Without --push the reference is the image id (NAME@sha256:<id>): only an engine that
holds the image, built there or loaded with "docker load", can run it.`,
		Example: `  linkedge toolkit image --tag aps-failure:2 --bundle inference/apsmodels/aps-failure-v2.tar.gz
  docker run --rm --network host aps-failure:2 serve --http 127.0.0.1:8080
  linkedge toolkit image --tag registry.example.com:5000/linkedge-serve:1 --push`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := inference.Init(cmd.Context(), ""); err != nil {
				return err
			}
			cli, err := container.Connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			opts.Progress = cmd.ErrOrStderr()
			tag, err := container.BuildImage(cmd.Context(), cli, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "built %s\n", tag)
			var ref string
			if push {
				if ref, err = container.Push(cmd.Context(), cli, tag, cmd.ErrOrStderr()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "pushed %s\n", ref)
			} else {
				if ref, _, err = container.Pin(cmd.Context(), cli, tag); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "pinned %s (by image id: for trucks whose engine holds the image; --push for a registry digest)\n", ref)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run a version in it: linkedge registry add BUNDLE --image %s\n", ref)
			return nil
		},
	}
	cmd.Flags().BoolVar(&push, "push", false, "push the image to the registry its tag names and print its registry digest")
	cmd.Flags().StringVar(&opts.Tag, "tag", "", "image name and tag (required)")
	cmd.Flags().StringVar(&opts.Bundle, "bundle", "", "model bundle to bake in at /opt/ml/model")
	cmd.Flags().StringVar(&opts.Binary, "binary", "", "linkedge binary to package (default: this one)")
	cmd.MarkFlagRequired("tag")
	return cmd
}
