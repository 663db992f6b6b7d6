package console

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// Query is the fleet table's filter and page, from the URL's query string.
type Query struct {
	Model   string
	Version int64 // 0: any
	Phase   string
	Online  string // "", "yes" or "no"
	Group   string // a group the truck is in (its status's groups)
	Search  string // a substring of the truck id
	Page    int    // from 1
}

// Limits of the query string.
const (
	maxQueryValue = 64
	maxPage       = 1_000_000
)

// ErrBadQuery wraps every problem of a query string.
var ErrBadQuery = errors.New("console: bad query")

// ParseQuery reads a Query strictly: unknown parameters, repeated ones,
// values over 64 bytes and malformed numbers are errors wrapping
// ErrBadQuery, saying what to send instead.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Page: 1}
	for k, vals := range v {
		if len(vals) != 1 {
			return q, fmt.Errorf("%w: %q given %d times; give it once", ErrBadQuery, k, len(vals))
		}
		val := strings.TrimSpace(vals[0])
		if len(val) > maxQueryValue {
			return q, fmt.Errorf("%w: %s is %d bytes; at most %d", ErrBadQuery, k, len(val), maxQueryValue)
		}
		switch k {
		case "model":
			q.Model = val
		case "phase":
			q.Phase = val
		case "q":
			q.Search = val
		case "group":
			// A group is an id (topics.ValidID), which also keeps the
			// comma match of Query.match exact.
			if val != "" {
				if err := topics.ValidID(val); err != nil {
					return q, fmt.Errorf("%w: group: %w", ErrBadQuery, err)
				}
			}
			q.Group = val
		case "online":
			if val != "" && val != "yes" && val != "no" {
				return q, fmt.Errorf("%w: online=%q; want yes, no or nothing", ErrBadQuery, val)
			}
			q.Online = val
		case "version":
			if val == "" {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimPrefix(val, "v"), 10, 64)
			if err != nil || n < 1 {
				return q, fmt.Errorf("%w: version=%q; want a version number such as 2", ErrBadQuery, val)
			}
			q.Version = n
		case "page":
			if val == "" {
				continue
			}
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > maxPage {
				return q, fmt.Errorf("%w: page=%q; want a number from 1 to %d", ErrBadQuery, val, maxPage)
			}
			q.Page = n
		default:
			return q, fmt.Errorf("%w: unknown parameter %q (known: model, version, phase, online, group, q, page)", ErrBadQuery, k)
		}
	}
	return q, nil
}

// Values is q as a query string, without the page.
func (q Query) Values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"model": q.Model, "phase": q.Phase, "online": q.Online, "group": q.Group, "q": q.Search} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Version > 0 {
		v.Set("version", strconv.FormatInt(q.Version, 10))
	}
	return v
}

// Row is one truck as the table shows it. It is what the live stream sends,
// so it is comparable: a row that did not change is not sent again.
type Row struct {
	ID     string `json:"id"`
	Online bool   `json:"online"`
	Model  string `json:"model"`
	// Groups are the truck's groups, joined by ", " (a string keeps the
	// row comparable).
	Groups   string `json:"groups"`
	Version  int64  `json:"version"`
	Desired  int64  `json:"desired"`
	Phase    string `json:"phase"`
	Progress string `json:"progress"`
	Alerts   string `json:"alerts"`
	// LastSeen is RFC 3339, so the page counts "how long ago" itself
	// without a message per second.
	LastSeen string `json:"last_seen"`
	Error    string `json:"error"`
}

// maxErrorShown clips a truck's last error in the table (the truck page
// shows it whole).
const maxErrorShown = 120

func rowOf(id string, s status.Status) Row {
	r := Row{ID: id, Online: s.Online, Model: s.Model, Groups: strings.Join(s.Groups, groupSep), Version: s.Version, Desired: s.Desired, Phase: s.Phase,
		Alerts: fmt.Sprintf("%d/%d", s.Alerts, s.Predictions), Error: s.LastError}
	if s.Total > 0 && s.Downloaded < s.Total {
		r.Progress = fmt.Sprintf("%d%%", 100*s.Downloaded/s.Total)
	}
	if !s.LastSeen.IsZero() {
		r.LastSeen = s.LastSeen.UTC().Format(time.RFC3339)
	}
	if s.Hold != "" {
		// A hold is no error, but it is what the operator needs to see.
		r.Error = "hold: " + s.Hold
	}
	if len(r.Error) > maxErrorShown {
		r.Error = r.Error[:maxErrorShown] + "…"
	}
	return r
}

// rowsOf returns every truck's row, sorted by truck id.
func rowsOf(trucks map[string]status.Status) []Row {
	rows := make([]Row, 0, len(trucks))
	for id, s := range trucks {
		rows = append(rows, rowOf(id, s))
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	return rows
}

// match reports whether r passes the filter; search is q.Search lowered
// once by the caller, not once per row.
func (q Query) match(r *Row, search string) bool {
	return (q.Model == "" || r.Model == q.Model) &&
		(q.Version == 0 || r.Version == q.Version) &&
		(q.Phase == "" || r.Phase == q.Phase) &&
		(q.Online == "" || r.Online == (q.Online == "yes")) &&
		(q.Group == "" || inGroup(r.Groups, q.Group)) &&
		(search == "" || containsFold(r.ID, search))
}

// groupSep joins a row's groups.
const groupSep = ", "

// inGroup reports whether groups, joined by groupSep, has g. Group names
// cannot hold the separator (topics.ValidID), so this is an exact match of
// one name, without allocating.
func inGroup(groups, g string) bool {
	for groups != "" {
		var one string
		one, groups, _ = strings.Cut(groups, groupSep)
		if one == g {
			return true
		}
	}
	return false
}

// groupsOf lists the groups of rows, sorted, at most max of them.
func groupsOf(rows []Row, max int) []string {
	seen := map[string]bool{}
	for i := range rows {
		for g := range strings.SplitSeq(rows[i].Groups, groupSep) {
			if g != "" && !seen[g] && len(seen) < max {
				seen[g] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// containsFold is strings.Contains ignoring ASCII case (truck ids are
// ASCII: topics.ValidID), without allocating.
func containsFold(s, lowSub string) bool {
	for i := 0; i+len(lowSub) <= len(s); i++ {
		j := 0
		for j < len(lowSub) {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lowSub[j] {
				break
			}
			j++
		}
		if j == len(lowSub) {
			return true
		}
	}
	return false
}

// Page is one page of the filtered table.
type Page struct {
	Rows  []Row `json:"-"`
	Total int   `json:"total"` // trucks matching the filter
	All   int   `json:"all"`   // trucks known
	Page  int   `json:"page"`
	Pages int   `json:"pages"`
}

// pageOf filters the sorted rows and cuts out q's page; a page past the
// end gives the last one.
func pageOf(rows []Row, q Query, size int) Page {
	search := strings.ToLower(q.Search)
	var match []int32 // indexes, not copies of the rows
	for i := range rows {
		if q.match(&rows[i], search) {
			match = append(match, int32(i))
		}
	}
	p := Page{Total: len(match), All: len(rows), Page: q.Page}
	p.Pages = max(1, (len(match)+size-1)/size)
	if p.Page > p.Pages {
		p.Page = p.Pages
	}
	from := (p.Page - 1) * size
	for _, i := range match[from:min(from+size, len(match))] {
		p.Rows = append(p.Rows, rows[i])
	}
	return p
}

// ReleaseRow is a model's announced release, for the page.
type ReleaseRow struct {
	Model   string   `json:"model"`
	Serial  int64    `json:"serial"`
	Stable  int64    `json:"stable"`
	Canary  int64    `json:"canary,omitempty"`
	Percent int      `json:"percent,omitempty"`
	Groups  []string `json:"groups,omitempty"`
}

func releaseRows(rs map[string]fleetview.Release) []ReleaseRow {
	out := make([]ReleaseRow, 0, len(rs))
	for _, r := range rs {
		rr := ReleaseRow{Model: r.Model, Serial: r.Serial, Stable: r.Stable.Version}
		if c := r.Canary; c != nil {
			rr.Canary, rr.Percent, rr.Groups = c.Version, c.Percent, c.Groups
		}
		out = append(out, rr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Model < out[j].Model })
	return out
}
