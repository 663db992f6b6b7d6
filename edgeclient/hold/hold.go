// Package hold is the truck's safety hold: the truck's own applications
// can hold the switch to a new model version while the vehicle is moving or
// busy, and truck.yaml can name maintenance windows outside which no switch
// happens. Downloads, verification and the candidate's health check go on
// during a hold; only the switch waits.
//
// An application holds under its own name, so two applications never
// release each other's hold, and every hold expires (at most Config.MaxHold
// after it was set): an application that dies holding cannot keep a truck on
// an old model for ever. The agent takes holds from a retained message on
// the truck's local bus (linkedge/v1/local/hold/{app}) and from its local
// HTTP endpoint (PUT and DELETE /v1/hold/{app}).
package hold

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config is the hold section of truck.yaml.
type Config struct {
	// Windows are the maintenance windows, in the truck's local time (or
	// TimeZone): "Mon-Fri 22:00-05:30", "Sat,Sun 00:00-24:00",
	// "daily 01:00-04:00". A window that ends before it starts runs past
	// midnight. Empty: the switch may happen at any time.
	Windows []string `yaml:"windows"`
	// TimeZone names the zone the windows are in, e.g. Europe/Stockholm.
	// Default: the truck's local zone.
	TimeZone string `yaml:"time_zone"`
	// MaxHold bounds one application hold; a longer or open-ended one is
	// cut to it. Default 12h.
	MaxHold time.Duration `yaml:"max_hold"`
}

// ErrInvalid wraps configuration and request errors.
var ErrInvalid = errors.New("invalid hold")

// MaxApps bounds how many applications can hold at once, so a misbehaving
// client on the local bus cannot grow the agent's memory.
const MaxApps = 64

// Hold is one application's hold.
type Hold struct {
	App    string    `json:"app"`
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"`
}

// State says whether the switch must wait now.
type State struct {
	Held bool `json:"held"`
	// Reason is why, for the status and the log: the holding
	// applications, or the next maintenance window.
	Reason string `json:"reason,omitempty"`
	// Holds are the application holds in force.
	Holds []Hold `json:"holds,omitempty"`
	// Next is when the state may change by itself (a hold expires, a
	// window opens or closes); zero if never.
	Next time.Time `json:"next,omitzero"`
}

// Controller keeps the holds. It is safe for concurrent use.
type Controller struct {
	windows []window
	loc     *time.Location
	maxHold time.Duration
	now     func() time.Time

	mu      sync.Mutex
	holds   map[string]Hold
	changed chan struct{}
}

// New checks cfg and returns a controller with no hold.
func New(cfg Config) (*Controller, error) {
	loc := time.Local
	if cfg.TimeZone != "" {
		l, err := time.LoadLocation(cfg.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("%w: time_zone %q: %w", ErrInvalid, cfg.TimeZone, err)
		}
		loc = l
	}
	c := &Controller{loc: loc, maxHold: cfg.MaxHold, now: time.Now, holds: map[string]Hold{}, changed: make(chan struct{}, 1)}
	if c.maxHold <= 0 {
		c.maxHold = 12 * time.Hour
	}
	for _, s := range cfg.Windows {
		w, err := parseWindow(s)
		if err != nil {
			return nil, err
		}
		c.windows = append(c.windows, w)
	}
	return c, nil
}

// Changed receives a value after every change of the holds. One receiver.
func (c *Controller) Changed() <-chan struct{} { return c.changed }

func (c *Controller) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Set holds the switch for app, for ttl (cut to MaxHold; 0 means MaxHold).
func (c *Controller) Set(app, reason string, ttl time.Duration) (Hold, error) {
	if err := checkApp(app); err != nil {
		return Hold{}, err
	}
	if len(reason) > 256 {
		return Hold{}, fmt.Errorf("%w: reason of %d bytes; at most 256", ErrInvalid, len(reason))
	}
	if ttl < 0 {
		return Hold{}, fmt.Errorf("%w: negative ttl %s", ErrInvalid, ttl)
	}
	if ttl == 0 || ttl > c.maxHold {
		ttl = c.maxHold
	}
	h := Hold{App: app, Reason: reason, Until: c.now().Add(ttl).UTC().Truncate(time.Second)}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire()
	if _, ok := c.holds[app]; !ok && len(c.holds) >= MaxApps {
		return Hold{}, fmt.Errorf("%w: %d applications already hold; clear one first", ErrInvalid, MaxApps)
	}
	c.holds[app] = h
	c.notify()
	return h, nil
}

// Clear releases app's hold; clearing a hold that is not there is not an error.
func (c *Controller) Clear(app string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.holds[app]; ok {
		delete(c.holds, app)
		c.notify()
	}
}

// expire drops the holds past their time. c.mu is held.
func (c *Controller) expire() {
	now := c.now()
	for app, h := range c.holds {
		if !now.Before(h.Until) {
			delete(c.holds, app)
		}
	}
}

// State returns whether the switch must wait now, and why.
func (c *Controller) State() State {
	c.mu.Lock()
	c.expire()
	holds := make([]Hold, 0, len(c.holds))
	for _, h := range c.holds {
		holds = append(holds, h)
	}
	c.mu.Unlock()
	sort.Slice(holds, func(i, j int) bool { return holds[i].App < holds[j].App })
	now := c.now().In(c.loc)
	st := State{Holds: holds}
	for _, h := range holds {
		if st.Next.IsZero() || h.Until.Before(st.Next) {
			st.Next = h.Until
		}
	}
	var names []string
	for _, h := range holds {
		if h.Reason != "" {
			names = append(names, h.App+" ("+h.Reason+")")
		} else {
			names = append(names, h.App)
		}
	}
	if len(holds) > 0 {
		st.Held = true
		st.Reason = "held by " + strings.Join(names, ", ")
	}
	if len(c.windows) > 0 {
		open, edge := c.windowAt(now)
		if !edge.IsZero() && (st.Next.IsZero() || edge.Before(st.Next)) {
			st.Next = edge
		}
		if !open {
			msg := "outside the maintenance windows; the next opens at " + edge.Format("Mon 15:04 MST")
			if st.Held {
				st.Reason += "; " + msg
			} else {
				st.Held, st.Reason = true, msg
			}
		}
	}
	return st
}

// Holds lists the holds in force.
func (c *Controller) Holds() []Hold { return c.State().Holds }

func checkApp(app string) error {
	if app == "" || len(app) > 64 {
		return fmt.Errorf("%w: application name %q: 1 to 64 characters of [A-Za-z0-9._-]", ErrInvalid, app)
	}
	for _, r := range app {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: application name %q: 1 to 64 characters of [A-Za-z0-9._-]", ErrInvalid, app)
		}
	}
	return nil
}

// window is one maintenance window: on the given weekdays, from start to
// end minutes after midnight (end may be past 24h for windows that run
// over midnight).
type window struct {
	days       [7]bool
	start, end int // minutes
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

func parseWindow(s string) (window, error) {
	bad := func(why string) (window, error) {
		return window{}, fmt.Errorf("%w: maintenance window %q: %s; write it like \"Mon-Fri 22:00-05:30\" or \"daily 01:00-04:00\"", ErrInvalid, s, why)
	}
	fields := strings.Fields(s)
	if len(fields) != 2 {
		return bad("want days and a time range")
	}
	var w window
	switch strings.ToLower(fields[0]) {
	case "daily", "*":
		for i := range w.days {
			w.days[i] = true
		}
	default:
		for _, part := range strings.Split(strings.ToLower(fields[0]), ",") {
			from, to, isRange := strings.Cut(part, "-")
			a := slices.Index(dayNames, from)
			b := a
			if isRange {
				b = slices.Index(dayNames, to)
			}
			if a < 0 || b < 0 {
				return bad("unknown day in " + part)
			}
			for d := a; ; d = (d + 1) % 7 {
				w.days[d] = true
				if d == b {
					break
				}
			}
		}
	}
	from, to, ok := strings.Cut(fields[1], "-")
	if !ok {
		return bad("want a time range HH:MM-HH:MM")
	}
	var err error
	if w.start, err = parseClock(from); err != nil || w.start >= 24*60 {
		return bad("bad start time")
	}
	if w.end, err = parseClock(to); err != nil {
		return bad("bad end time")
	}
	if w.end == w.start {
		return bad("empty window")
	}
	if w.end < w.start {
		w.end += 24 * 60
	}
	return w, nil
}

func parseClock(s string) (int, error) {
	var h, m int
	if n, err := fmt.Sscanf(s, "%d:%d", &h, &m); err != nil || n != 2 || len(s) != 5 || h < 0 || h > 24 || m < 0 || m > 59 || h == 24 && m != 0 {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	return h*60 + m, nil
}

// windowAt reports whether a window is open at now, and the next time that
// changes (a window closes, or the next one opens), searched over a week.
func (c *Controller) windowAt(now time.Time) (open bool, edge time.Time) {
	inside := func(t time.Time) bool {
		for _, w := range c.windows {
			// A window started today, or yesterday and running past midnight.
			for back := 0; back <= 1; back++ {
				day := t.AddDate(0, 0, -back)
				if !w.days[int(day.Weekday())] {
					continue
				}
				midnight := time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, c.loc)
				if s, e := midnight.Add(time.Duration(w.start)*time.Minute), midnight.Add(time.Duration(w.end)*time.Minute); !t.Before(s) && t.Before(e) {
					return true
				}
			}
		}
		return false
	}
	open = inside(now)
	// Edges fall on whole minutes: step minute by minute from the next one.
	t := now.Truncate(time.Minute).Add(time.Minute)
	for range 8 * 24 * 60 {
		if inside(t) != open {
			return open, t
		}
		t = t.Add(time.Minute)
	}
	return open, time.Time{}
}
