package bench

import (
	"fmt"
	"strings"
	"time"
)

// Markdown renders the fleet bench's outcome: one row per scenario, with
// the processes' CPU and memory side by side.
func (rep *FleetReport) Markdown() string {
	var b strings.Builder
	c := rep.Config
	rate := "unlimited"
	if c.LinkRate > 0 {
		rate = fmt.Sprintf("%s B/s per truck", fmtInt(float64(c.LinkRate)))
	}
	fmt.Fprintf(&b, "%s simulated trucks (the real agent's fleet side, a no-op model runtime, probation %s), started %d a second; "+
		"the largest artifact %s B, downloads %s. The broker, the publisher and the trucks (\"load\": processes of up to %d trucks each) ran as child processes; trucks.log in the run's folder has the trucks' log.\n\n",
		fmtInt(float64(c.Trucks)), c.Probation, c.ConnectRate, fmtInt(float64(rep.Artifact)), rate, trucksPerProcess)
	b.WriteString("| scenario | done | p50 | p99 | max | broker CPU | broker peak RSS | publisher CPU | publisher peak RSS | load CPU | load RSS | dropped by the broker | release documents | artifact bytes sent |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range rep.Phases {
		fmt.Fprintf(&b, "| %s | %s/%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |\n",
			p.Name, fmtInt(float64(p.Done)), fmtInt(float64(p.Trucks)), fmtSpan(p.Percentile(50)), fmtSpan(p.Percentile(99)), fmtSpan(p.Percentile(100)),
			fmtSpan(p.Broker.CPU), fmtMB6(p.Broker.RSS), fmtSpan(p.Publisher.CPU), fmtMB6(p.Publisher.RSS), fmtSpan(p.Load.CPU), fmtMB6(p.Load.RSS),
			fmtInt(float64(p.Dropped)), p.Releases, fmtInt(float64(p.ArtifactBytes)))
	}
	b.WriteString("\nTimes run from the scenario's start (the approval; the broker's restart) to the moment the bench's own MQTT client, " +
		"subscribed to every truck's status like an operator's tool, saw the truck reach the goal.\n\n")
	for _, p := range rep.Phases {
		fmt.Fprintf(&b, "- **%s**: each truck had to %s.", p.Name, p.Goal)
		if p.ArtifactBytes > 0 && p.Elapsed > 0 {
			fmt.Fprintf(&b, " The artifact server sent %.1f MB/s over the scenario's %s.", float64(p.ArtifactBytes)/1e6/p.Elapsed.Seconds(), fmtSpan(p.Elapsed))
		}
		if p.Name == "connect" && p.Elapsed > 0 {
			fmt.Fprintf(&b, " %.0f trucks a second connected and reported.", float64(p.Done)/p.Elapsed.Seconds())
		}
		if p.Note != "" {
			fmt.Fprintf(&b, " **%s.**", p.Note)
		}
		b.WriteString("\n")
	}
	if rep.Limits != "" {
		fmt.Fprintf(&b, "\n**Limit of this machine:** %s.\n", rep.Limits)
	}
	if c.Trucks > 0 && rep.ConnectedRSS > 0 {
		perTruck := func(n int64) string { return fmtInt(float64(n) / float64(c.Trucks) / 1e3) }
		line := func(when string, rss, heap, stacks int64) {
			fmt.Fprintf(&b, "\nThe broker with every truck connected and idle, %s: %s RSS, %s KB per truck", when, fmtMB6(rss), perTruck(rss))
			if heap > 0 {
				fmt.Fprintf(&b, " (Go heap in use %s KB, goroutine stacks %s KB)", perTruck(heap), perTruck(stacks))
			}
			b.WriteString(".\n")
		}
		line("3 s after the last connected", rep.ConnectedRSS, rep.ConnectedHeap, rep.ConnectedStacks)
		if rep.SettledRSS > 0 {
			line(fmt.Sprintf("after %s more", c.Settle), rep.SettledRSS, rep.SettledHeap, rep.SettledStacks)
		}
	}
	return b.String()
}

func fmtSpan(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func fmtMB6(n int64) string {
	if n <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MB", float64(n)/1e6)
}
