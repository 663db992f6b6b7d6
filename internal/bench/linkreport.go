package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/linkedge/linkedge/internal/netsim"
)

var transportNames = map[string]string{TransportTCP: "plain TCP", TransportMTLS: "mutual TLS"}

// Markdown renders the report: the headline table, the agent settings it
// ran with, and the breakdown of every phase.
func (rep *LinkReport) Markdown() string {
	var b strings.Builder
	captured := rep.Config.Tcpdump

	// The headline table.
	b.WriteString("| per truck |")
	for _, r := range rep.Results {
		if captured {
			fmt.Fprintf(&b, " %s, estimated | %s, tcpdump |", transportNames[r.Transport], transportNames[r.Transport])
		} else {
			fmt.Fprintf(&b, " %s |", transportNames[r.Transport])
		}
	}
	b.WriteString("\n|---|")
	for range rep.Results {
		b.WriteString("---:|")
		if captured {
			b.WriteString("---:|")
		}
	}
	b.WriteString("\n")
	row := func(label string, cell func(Figures, LinkResult) string) {
		fmt.Fprintf(&b, "| %s |", label)
		for _, r := range rep.Results {
			fmt.Fprintf(&b, " %s |", cell(r.Estimated(), r))
			if captured {
				c, ok := r.CapturedFigures()
				if ok {
					fmt.Fprintf(&b, " %s |", cell(c, r))
				} else {
					b.WriteString(" – |")
				}
			}
		}
		b.WriteString("\n")
	}
	idleFrom := "the idle window"
	if len(rep.Results) > 0 {
		idleFrom = fmtWindow(rep.Results[0].span())
	}
	row(fmt.Sprintf("idle, per 30-day month (from %s)", idleFrom), func(f Figures, _ LinkResult) string { return fmtMB(f.IdleMonth) })
	artifact := int64(0)
	if len(rep.Results) > 0 {
		artifact = rep.Results[0].Artifact
	}
	row(fmt.Sprintf("one update, beyond the artifact (%s B)", fmtInt(float64(artifact))), func(f Figures, _ LinkResult) string { return fmtInt(f.UpdateBeyond) + " B" })
	row(fmt.Sprintf("of which control traffic (less the artifact's own TCP/IP framing, %s B)", fmtInt(float64(ArtifactFraming(artifact)))),
		func(f Figures, _ LinkResult) string { return fmtInt(f.UpdateControl) + " B" })
	row(fmt.Sprintf("one reconnect (median of %d)", rep.Config.Reconnects), func(f Figures, _ LinkResult) string {
		return fmt.Sprintf("%s B", fmtInt(f.Reconnect))
	})
	row(fmt.Sprintf("1,000 forwarded alerts, one at a time (from %d)", rep.Config.Alerts), func(f Figures, _ LinkResult) string { return fmtInt(f.Per1000Alerts) + " B" })
	if rep.Config.Burst > 0 {
		row(fmt.Sprintf("1,000 forwarded alerts, in one burst (from %d)", rep.Config.Burst), func(f Figures, _ LinkResult) string { return fmtInt(f.Per1000Burst) + " B" })
	}
	b.WriteString("\nMB = 10⁶ bytes. Every figure is IP bytes (payload and IPv4/TCP headers, both ways) on the truck's side of the link; " +
		"the update, reconnect and alert figures have the idle traffic of their own window subtracted.\n\n")

	// What ran.
	for _, r := range rep.Results {
		est := r.Estimated()
		hb, renew := r.MonthlyDocuments()
		fmt.Fprintf(&b, "- %s: agent link.profile %s, status_interval %s, fleet.keep_alive %s, probation %s; publisher release_ttl %s. The intervals predict %s/month idle "+
			"(status document %d B, release %d B); measured %s. Reconnects ranged %s–%s B. The update took %.1f s from approval to commit.",
			transportNames[r.Transport], r.Profile, r.StatusInterval, r.KeepAlive, r.Probation, r.ReleaseTTL, fmtMB(r.Expected*Month.Seconds()+renew), r.StatusBytes, r.ReleaseBytes,
			fmtMB(est.IdleMonth), fmtInt(est.ReconnectRange[0]), fmtInt(est.ReconnectRange[1]), r.UpdateTime.Seconds())
		if r.Pings > 0 {
			fmt.Fprintf(&b, " The idle window ran from just after a keepalive ping to just after the %d that followed (%s)", r.Pings, fmtWindow(r.span()))
		} else {
			fmt.Fprintf(&b, " The idle window was %s", fmtWindow(r.span()))
		}
		fmt.Fprintf(&b, "; the monthly figure adds, computed from the documents' sizes, %s of heartbeats", fmtMB(hb))
		if r.HeartbeatInWindow {
			b.WriteString(" (none: the window holds them)")
		} else {
			fmt.Fprintf(&b, " (one every %s)", r.StatusInterval)
		}
		fmt.Fprintf(&b, " and %s of releases signed again (one every %s, each followed by a status report).", fmtMB(renew), r.ReleaseTTL*2/3)
		if n := float64(r.Idle.Duration()) / float64(r.StatusInterval); r.HeartbeatInWindow && (math.Abs(n-math.Round(n)) > 0.02 || n < 0.98) {
			fmt.Fprintf(&b, " **The idle window (%.1f status intervals) is not a whole number of status intervals: the monthly figure may be off by a report or a probe.**", n)
		}
		if r.Transport == TransportMTLS {
			fmt.Fprintf(&b, " TLS handshakes over the run: %d full, %d resumed from a session ticket.", r.FullHandshakes, r.Resumed)
		}
		if c, ok := r.CapturedFigures(); ok {
			fmt.Fprintf(&b, " Captured reconnects ranged %s–%s B.", fmtInt(c.ReconnectRange[0]), fmtInt(c.ReconnectRange[1]))
			if r.Dropped > 0 {
				fmt.Fprintf(&b, " **The kernel dropped %d packets of the capture.**", r.Dropped)
			}
		}
		b.WriteString("\n")
	}

	// The breakdown.
	b.WriteString("\n| transport | phase | window | payload ↑ | payload ↓ | data headers | pure ACKs | SYN/FIN/RST | TCP keepalive | estimated ↑ | estimated ↓ | estimated |")
	if captured {
		b.WriteString(" tcpdump ↑ | tcpdump ↓ | tcpdump | of it keepalive |")
	}
	b.WriteString("\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	if captured {
		b.WriteString("---:|---:|---:|---:|")
	}
	b.WriteString("\n")
	for _, r := range rep.Results {
		phases := []struct {
			name string
			p    LinkPhase
		}{{"idle", r.Idle}, {"update", r.Update}}
		for i, p := range r.Reconnects {
			phases = append(phases, struct {
				name string
				p    LinkPhase
			}{fmt.Sprintf("reconnect %d", i+1), p})
		}
		phases = append(phases, struct {
			name string
			p    LinkPhase
		}{fmt.Sprintf("%d alerts", r.AlertCount), r.Alerts})
		if r.BurstCount > 0 {
			phases = append(phases, struct {
				name string
				p    LinkPhase
			}{fmt.Sprintf("burst of %d alerts", r.BurstCount), r.Burst})
		}
		for _, ph := range phases {
			w := ph.p.Wire
			name := ph.name
			if w.Tail {
				name += " (tail estimated)"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", transportNames[r.Transport], name,
				fmtWindow(ph.p.Duration()), fmtInt(float64(w.Payload[netsim.Up])), fmtInt(float64(w.Payload[netsim.Down])),
				fmtInt(float64(w.Headers[0]+w.Headers[1])), fmtInt(float64(w.Acks[0]+w.Acks[1])), fmtInt(float64(w.Control[0]+w.Control[1])),
				fmtInt(float64(w.Keepalive[0]+w.Keepalive[1])), fmtInt(float64(w.Bytes(netsim.Up))), fmtInt(float64(w.Bytes(netsim.Down))),
				fmtInt(float64(w.Total())))
			if captured {
				if c := ph.p.Captured; c != nil {
					open := ""
					if c.Open {
						open = " (open at end)"
					}
					fmt.Fprintf(&b, " %s | %s | %s%s | %s |", fmtInt(float64(c.Bytes[0])), fmtInt(float64(c.Bytes[1])), fmtInt(float64(c.Total())), open, fmtInt(float64(c.Keepalive)))
				} else {
					b.WriteString(" – | – | – | – |")
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func fmtWindow(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
}

// fmtMB is bytes in MB (10⁶), with two decimals below 10 MB.
func fmtMB(v float64) string {
	if math.Abs(v) < 10e6 {
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + " MB"
	}
	return strconv.FormatFloat(v/1e6, 'f', 1, 64) + " MB"
}

// fmtInt rounds v and groups its digits by thousands.
func fmtInt(v float64) string {
	n := int64(math.Round(v))
	neg := n < 0
	if neg {
		n = -n
	}
	s := strconv.FormatInt(n, 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "−" + string(out)
	}
	return string(out)
}
