package console

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Rollout progress: the console samples how many trucks report each
// version of each model, and the model page draws it as an inline SVG
// chart rendered on the server (no script, no chart library). Only changes
// are kept, so a quiet fleet costs one sample per model.

// Bounds of the history.
const (
	// maxSamples is how many changes the history keeps per model; older
	// ones are dropped.
	maxSamples = 720
	// maxChartModels bounds the models the history follows.
	maxChartModels = 1000
	// maxChartVersions is how many versions a chart draws (the highest).
	maxChartVersions = 8
)

type sample struct {
	at     time.Time
	counts map[int64]int // trucks per version
}

// history is the trucks-per-version record of every model since the
// console started.
type history struct {
	mu      sync.Mutex
	models  map[string][]sample
	lastGen uint64
	started bool
	// changed is closed and replaced whenever a sample is added: the live
	// model pages wait on it.
	changed chan struct{}
}

func newHistory() *history {
	return &history{models: map[string][]sample{}, changed: make(chan struct{})}
}

func (h *history) changedCh() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// record appends, per model, the counts in rows when they differ from the
// model's last sample.
func (h *history) record(now time.Time, rows []Row) {
	counts := map[string]map[int64]int{}
	for _, r := range rows {
		if r.Model == "" || r.Version < 1 {
			continue // no version yet (a truck's will, before its first status)
		}
		c := counts[r.Model]
		if c == nil {
			if len(counts) >= maxChartModels {
				continue
			}
			c = map[int64]int{}
			counts[r.Model] = c
		}
		c[r.Version]++
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for m := range h.models {
		if _, ok := counts[m]; !ok {
			counts[m] = map[int64]int{} // no truck reports it any more
		}
	}
	added := false
	defer func() {
		if added {
			close(h.changed)
			h.changed = make(chan struct{})
		}
	}()
	for m, c := range counts {
		ss := h.models[m]
		if len(ss) > 0 && maps.Equal(ss[len(ss)-1].counts, c) {
			continue
		}
		if len(ss) == 0 && len(h.models) >= maxChartModels {
			continue
		}
		if len(ss) >= maxSamples {
			ss = slices.Delete(ss, 0, len(ss)-maxSamples+1)
		}
		h.models[m] = append(ss, sample{at: now, counts: c})
		added = true
	}
}

func (h *history) samples(model string) []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.models[model])
}

// sampleLoop records the fleet when it changed, until ctx is done: a
// change UpdateInterval after it came (so that the live model pages show
// it within a second), but at most once per interval, so that a fleet
// changing all the time costs a sample per interval.
func (s *Server) sampleLoop(ctx context.Context, interval time.Duration) {
	var last time.Time
	for {
		ch := s.changedCh()
		if g := s.gen.Load(); !s.hist.started || g != s.hist.lastGen {
			s.hist.started, s.hist.lastGen = true, g
			last = time.Now()
			s.hist.record(last, s.rows())
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		wait := max(s.cfg.UpdateInterval, interval-time.Since(last))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// chart is what page-model.html draws.
type chart struct {
	Width, Height            int
	Left, Right, Top, Bottom int // the plot area's edges
	LabelY                   int // where the time labels sit
	MaxY                     int
	From, To                 string
	Lines                    []chartLine
}

type chartLine struct {
	Version int64
	Color   string
	Points  string // SVG polyline points
	Now     int    // trucks on it now
}

// Colours of the lines, highest version first.
var chartColors = []string{"#0b57d0", "#137333", "#b42318", "#8a5a00", "#6f42c1", "#0a7b83", "#d63384", "#57606a"}

// chartOf draws ss, the samples of one model, up to now: for each version,
// a step line of how many trucks ran it. Nil with nothing to draw.
func chartOf(ss []sample, now time.Time) *chart {
	if len(ss) == 0 {
		return nil
	}
	c := &chart{Width: 640, Height: 220, Left: 40, Right: 630, Top: 10, Bottom: 190, LabelY: 210}
	top, right := c.Top, c.Right
	versions := map[int64]bool{}
	for _, s := range ss {
		for v, n := range s.counts {
			versions[v] = true
			c.MaxY = max(c.MaxY, n)
		}
	}
	if c.MaxY == 0 {
		return nil
	}
	vs := slices.Sorted(maps.Keys(versions))
	slices.Reverse(vs)
	if len(vs) > maxChartVersions {
		vs = vs[:maxChartVersions]
	}
	t0 := ss[0].at
	span := now.Sub(t0)
	if span <= 0 {
		span = time.Second
	}
	x := func(t time.Time) int { return c.Left + int(float64(right-c.Left)*float64(t.Sub(t0))/float64(span)) }
	y := func(n int) int { return c.Bottom - (c.Bottom-top)*n/c.MaxY }
	for i, v := range vs {
		var b strings.Builder
		prev := -1
		for _, s := range ss {
			n := s.counts[v]
			if prev >= 0 && n != prev {
				fmt.Fprintf(&b, "%d,%d ", x(s.at), y(prev)) // the step
			}
			fmt.Fprintf(&b, "%d,%d ", x(s.at), y(n))
			prev = n
		}
		fmt.Fprintf(&b, "%d,%d", x(now), y(prev))
		c.Lines = append(c.Lines, chartLine{Version: v, Color: chartColors[i%len(chartColors)], Points: b.String(), Now: prev})
	}
	c.From, c.To = t0.UTC().Format("15:04:05"), now.UTC().Format("15:04:05 UTC")
	return c
}
