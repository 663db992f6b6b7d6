package console

import (
	"math"
	"sort"
	"sync"
	"time"
)

// Alerts over time: the console counts the alerts the trucks forward
// (fleetview's OnForwarded) per minute, fleet-wide and per truck, in rings
// of buckets, so memory stays bounded however long the console runs. The
// fleet page /alerts and each truck's page draw them as an inline SVG
// rendered on the server, like the rollout chart.

// Bounds of the alert counts.
const (
	// alertBucket is the width of one bucket.
	alertBucket = time.Minute
	// fleetAlertBuckets is how far back the fleet-wide plot reaches: a day.
	fleetAlertBuckets = 24 * 60
	// truckAlertBuckets is how far back a truck's plot reaches: three
	// hours, which at 4 bytes a bucket costs 720 bytes a truck.
	truckAlertBuckets = 3 * 60
	// maxAlertTrucks bounds the trucks counted one by one (about 14 MB
	// at most); alerts of trucks past it still count fleet-wide.
	maxAlertTrucks = 20_000
)

// ring counts per bucket over the last len(counts) buckets. Bucket b
// (minutes since the Unix epoch) lives in counts[b % len]; newest is the
// latest bucket written, and moving it forward clears the buckets skipped.
// A count saturates rather than wrap: the counts come from trucks, which
// are outside input.
type ring struct {
	counts []uint32
	newest int64
}

func newRing(n int) *ring { return &ring{counts: make([]uint32, n), newest: math.MinInt64} }

// add counts n in bucket b, unless b is older than the ring reaches;
// false then.
func (r *ring) add(b int64, n uint32) bool {
	size := int64(len(r.counts))
	if r.newest == math.MinInt64 {
		r.newest = b
	}
	if b > r.newest {
		for x := max(r.newest+1, b-size+1); x <= b; x++ {
			r.counts[r.slot(x)] = 0
		}
		r.newest = b
	}
	if b <= r.newest-size {
		return false
	}
	i := r.slot(b)
	r.counts[i] = uint32(min(uint64(r.counts[i])+uint64(n), math.MaxUint32))
	return true
}

// slot is bucket b's index in counts (never negative, whatever b).
func (r *ring) slot(b int64) int64 {
	size := int64(len(r.counts))
	return (b%size + size) % size
}

// at is the count of bucket b: 0 outside the ring or not written.
func (r *ring) at(b int64) uint32 {
	size := int64(len(r.counts))
	if r.newest == math.MinInt64 || b > r.newest || b <= r.newest-size {
		return 0
	}
	return r.counts[r.slot(b)]
}

// oldest is the oldest bucket in r with a count, or false.
func (r *ring) oldest() (int64, bool) {
	if r.newest == math.MinInt64 {
		return 0, false
	}
	for b := r.newest - int64(len(r.counts)) + 1; b <= r.newest; b++ {
		if r.at(b) > 0 {
			return b, true
		}
	}
	return 0, false
}

func bucketOf(t time.Time) int64 { return t.Unix() / int64(alertBucket/time.Second) }

func bucketTime(b int64) time.Time { return time.Unix(b*int64(alertBucket/time.Second), 0).UTC() }

// alertLog is the alerts the console heard since it started.
type alertLog struct {
	mu      sync.Mutex
	started time.Time
	fleet   *ring
	trucks  map[string]*ring
	// changed is closed and replaced whenever a count changes: the live
	// pages that show a plot wait on it.
	changed chan struct{}
}

func newAlertLog(started time.Time) *alertLog {
	return &alertLog{started: started, fleet: newRing(fleetAlertBuckets), trucks: map[string]*ring{}, changed: make(chan struct{})}
}

// add counts a forwarded batch of truck's alerts, each in the minute the
// truck says it was made. A time that is missing or ahead of now (the
// truck's clock is wrong) counts now; one older than a ring reaches is
// left out of that ring.
func (l *alertLog) add(now time.Time, truck string, made []time.Time) {
	if len(made) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tr := l.trucks[truck]
	if tr == nil && len(l.trucks) < maxAlertTrucks {
		tr = newRing(truckAlertBuckets)
		l.trucks[truck] = tr
	}
	// The newest bucket first, so that an old time in the batch does not
	// move a fresh ring's start.
	nowB := bucketOf(now)
	bs := make([]int64, 0, len(made))
	for _, t := range made {
		b := nowB
		if !t.IsZero() && !t.After(now) {
			b = bucketOf(t)
		}
		if b > nowB-fleetAlertBuckets { // older ones no ring would keep
			bs = append(bs, b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i] > bs[j] })
	changed := false
	for _, b := range bs {
		changed = l.fleet.add(b, 1) || changed
		if tr != nil {
			tr.add(b, 1)
		}
	}
	if changed {
		close(l.changed)
		l.changed = make(chan struct{})
	}
}

func (l *alertLog) changedCh() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// plot draws the fleet's counts (truck "") or one truck's, up to now's
// minute.
func (l *alertLog) plot(truck string, now time.Time) *alertPlot {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, size := l.fleet, int64(fleetAlertBuckets)
	if truck != "" {
		r, size = l.trucks[truck], truckAlertBuckets
	}
	// Up to now, or to the newest alert if it is newer: a live page
	// that compares the plot at the time of its last message then sees
	// an alert of a minute that began since.
	to := bucketOf(now)
	if r != nil && r.newest != math.MinInt64 {
		to = max(to, r.newest)
	}
	// From the console's start, or the oldest alert heard if a truck
	// forwarded older ones (made while it was offline), as far back as
	// the ring reaches.
	from := min(bucketOf(l.started), to)
	if r != nil {
		if o, ok := r.oldest(); ok {
			from = min(from, o)
		}
	}
	from = max(from, to-size+1)
	counts := make([]uint32, to-from+1)
	if r != nil {
		for i := range counts {
			counts[i] = r.at(from + int64(i))
		}
	}
	return plotOf(from, counts)
}

// alertPlot is what the "alerts" template draws: a bar per minute with
// alerts.
type alertPlot struct {
	Width, Height            int
	Left, Right, Top, Bottom int // the plot area's edges
	LabelY                   int // where the time labels sit
	MaxY                     uint32
	Total                    uint64
	Minutes                  int
	From, To                 string
	Bars                     []alertBar
}

type alertBar struct {
	X, Y, W, H int
	// Minute is the bucket's start, RFC 3339, and Count its alerts: in
	// the SVG as data- attributes, for people and tests to read back.
	Minute string
	Label  string // the bucket's start, HH:MM
	Count  uint32
}

// plotOf draws counts, one per minute from bucket from.
func plotOf(from int64, counts []uint32) *alertPlot {
	p := &alertPlot{Width: 640, Height: 200, Left: 40, Right: 630, Top: 10, Bottom: 170, LabelY: 190, Minutes: len(counts)}
	for _, n := range counts {
		p.MaxY = max(p.MaxY, n)
		p.Total += uint64(n)
	}
	span := p.Right - p.Left
	w := max(1, span/len(counts))
	for i, n := range counts {
		if n == 0 {
			continue
		}
		h := max(1, int(uint64(p.Bottom-p.Top)*uint64(n)/uint64(p.MaxY)))
		t := bucketTime(from + int64(i))
		p.Bars = append(p.Bars, alertBar{X: p.Left + span*i/len(counts), Y: p.Bottom - h, W: w, H: h,
			Minute: t.Format(time.RFC3339), Label: t.Format("15:04"), Count: n})
	}
	p.From = bucketTime(from).Format("15:04")
	p.To = bucketTime(from + int64(len(counts)) - 1).Format("15:04 UTC")
	return p
}
