package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/tlsconfig"
)

func newFleetCmd() *cobra.Command {
	var broker, user, pass string
	var tc tlsconfig.Client
	var wait time.Duration
	var watch bool
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Show every truck's model version, update phase and last error, from the fleet broker",
		Long: `Fleet reads the retained release documents and the trucks' retained status documents
(linkedge/v1/trucks/+/status) from the fleet broker. It prints one line per model: the
stable version and, during a staged rollout, the canary and who runs it. Then one line
per truck: online or not, the version it serves and the one it was asked for, the update
phase and download progress, its alerts out of its predictions since the agent started,
the last error, and when it was last seen. An offline truck shows the version it last
reported.

With --watch it keeps the table current until interrupted, subscribing again after
every reconnect (a broker restart), and says on stderr, and above the table, while
the view is stale.`,
		Example: `  linkedge fleet --broker tcp://127.0.0.1:1883
  linkedge fleet --broker tcp://fleet:1883 --username ops --password … --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFleet(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), broker, user, pass, tc, wait, watch)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&broker, "broker", "tcp://127.0.0.1:1883", "fleet broker URL")
	fl.StringVar(&user, "username", "", "MQTT username (an operator account)")
	fl.StringVar(&pass, "password", "", "MQTT password")
	fl.StringVar(&tc.CAFile, "tls-ca", "", "PEM CA file to trust for an ssl:// broker besides the system roots")
	fl.StringVar(&tc.CertFile, "tls-cert", "", "PEM client certificate for a broker that requires mutual TLS")
	fl.StringVar(&tc.KeyFile, "tls-key", "", "PEM key of --tls-cert")
	fl.DurationVar(&wait, "wait", time.Second, "how long to collect retained statuses before printing")
	fl.BoolVar(&watch, "watch", false, "keep printing the table every --wait")
	return cmd
}

// runFleet prints the fleet table to out, and notes on the connection
// (stderr in the command) to notes.
func runFleet(ctx context.Context, out, notes io.Writer, broker, user, pass string, tc tlsconfig.Client, wait time.Duration, watch bool) error {
	v, err := fleetview.Open(ctx, fleetview.Config{
		Broker: broker, Username: user, Password: pass, TLS: tc,
		OnConnectionLost: func(err error) {
			fmt.Fprintf(notes, "fleet: lost the connection to %s (%v); the view is stale until it is back\n", broker, err)
		},
		OnCurrent: func(staleSince time.Time) {
			fmt.Fprintf(notes, "fleet: reconnected to %s; the view is current again (it was stale since %s)\n", broker, staleSince.Format(time.TimeOnly))
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer v.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		snap := v.Snapshot()
		if !snap.StaleSince.IsZero() {
			fmt.Fprintf(out, "STALE: no connection to %s since %s; showing what was known then\n", broker, snap.StaleSince.Format(time.TimeOnly))
		}
		printReleases(out, snap.Releases)
		printFleet(out, snap.Trucks)
		if !watch {
			return nil
		}
		fmt.Fprintln(out)
	}
}

// printReleases prints one line per model: what the fleet is told to run,
// and the canary of a staged rollout.
func printReleases(out io.Writer, releases map[string]fleetview.Release) {
	models := make([]string, 0, len(releases))
	for m := range releases {
		models = append(models, m)
	}
	sort.Strings(models)
	for _, m := range models {
		a := releases[m]
		line := fmt.Sprintf("release %s: stable v%d", m, a.Stable.Version)
		if c := a.Canary; c != nil {
			line += fmt.Sprintf(", canary v%d for", c.Version)
			if len(c.Groups) > 0 {
				line += " groups " + strings.Join(c.Groups, ",")
				if c.Percent > 0 {
					line += " and"
				}
			}
			if c.Percent > 0 {
				line += fmt.Sprintf(" %d%% of the other trucks", c.Percent)
			}
		}
		fmt.Fprintf(out, "%s (serial %d)\n", line, a.Serial)
	}
	if len(models) > 0 {
		fmt.Fprintln(out)
	}
}

func printFleet(out io.Writer, trucks map[string]status.Status) {
	ids := make([]string, 0, len(trucks))
	for id := range trucks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TRUCK\tONLINE\tMODEL\tVERSION\tDESIRED\tPHASE\tPROGRESS\tALERTS\tLAST SEEN\tLAST ERROR")
	for _, id := range ids {
		s := trucks[id]
		progress := ""
		if s.Total > 0 && s.Downloaded < s.Total {
			progress = fmt.Sprintf("%d%%", 100*s.Downloaded/s.Total)
		}
		seen := "-"
		if !s.LastSeen.IsZero() {
			seen = time.Since(s.LastSeen).Round(time.Second).String() + " ago"
		}
		errText := s.LastError
		if s.Hold != "" {
			// A hold is no error, but it is what the operator needs to see.
			errText = "hold: " + s.Hold
		}
		if len(errText) > 80 {
			errText = errText[:80] + "…"
		}
		alerts := fmt.Sprintf("%d/%d", s.Alerts, s.Predictions)
		fmt.Fprintf(tw, "%s\t%v\t%s\tv%d\tv%d\t%s\t%s\t%s\t%s\t%s\n", id, s.Online, s.Model, s.Version, s.Desired, s.Phase, progress, alerts, seen, errText)
	}
	if len(ids) == 0 {
		fmt.Fprintln(tw, "(no truck has reported yet)")
	}
	tw.Flush()
}
