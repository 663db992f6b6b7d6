package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// maxFormBytes bounds every form body: the largest is an action, a few
// ids and a token.
const maxFormBytes = 4 << 10

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticOnly(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.authed(RoleViewer, s.logout))
	mux.HandleFunc("GET /{$}", s.authed(RoleViewer, s.fleetPage))
	mux.HandleFunc("GET /live", s.authed(RoleViewer, s.live))
	mux.HandleFunc("GET /trucks/{id}", s.authed(RoleViewer, s.truckPage))
	mux.HandleFunc("GET /live/trucks/{id}", s.authed(RoleViewer, s.liveTruck))
	mux.HandleFunc("GET /models/{name}", s.authed(RoleViewer, s.modelPage))
	mux.HandleFunc("GET /live/models/{name}", s.authed(RoleViewer, s.liveModel))
	mux.HandleFunc("GET /alerts", s.authed(RoleViewer, s.alertsPage))
	mux.HandleFunc("GET /live/alerts", s.authed(RoleViewer, s.liveAlerts))
	mux.HandleFunc("GET /models/{name}/progress", s.authed(RoleViewer, s.modelProgress))
	mux.HandleFunc("POST /actions", s.authed(RoleOperator, s.action))
	// The console's own counters only, no fleet data: served without a
	// login, for a scraper.
	if gatherer, ok := s.cfg.Metrics.(prometheus.Gatherer); ok {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	return securityHeaders(mux)
}

// staticOnly serves the style sheet and the script, not the templates.
func staticOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "console.js", "console.css":
			w.Header().Set("Cache-Control", "no-cache")
			h.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// securityHeaders: nothing but the console's own script and style runs on
// its pages, and no other site may frame them.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

type ctxKey struct{}

// authed lets a request through with a live session of at least role. A
// page request without one is sent to the login page; the live stream and
// the actions get 401 or 403.
func (s *Server) authed(role Role, h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ses := s.sessions.get(r)
		if ses == nil {
			if r.Method == http.MethodGet && r.URL.Path != "/live" && !strings.HasPrefix(r.URL.Path, "/live/") {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in: log in at /login", http.StatusUnauthorized)
			return
		}
		if role == RoleOperator && ses.role != RoleOperator {
			s.metrics.actions.WithLabelValues(r.FormValue("action"), "refused").Inc()
			s.errorPage(w, ses, http.StatusForbidden, fmt.Sprintf("%s has the %s role, which may look but not act; ask for the operator role", ses.user, ses.role))
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				s.errorPage(w, ses, http.StatusRequestEntityTooLarge, "the form could not be read: "+err.Error())
				return
			}
			if !sameOrigin(r) || !ses.validCSRF(r.PostForm.Get("csrf")) {
				s.errorPage(w, ses, http.StatusForbidden, "the form's CSRF token does not belong to this session (an old tab, or another site's form); reload the page and try again")
				return
			}
		}
		h(w, r, ses)
	}
}

// sameOrigin refuses a POST whose Origin header names another site; the
// CSRF token is the check, this is a second one browsers make cheap.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

type pageData struct {
	Title   string
	User    string
	Role    Role
	CSRF    string
	Stale   time.Time
	Message string
	Error   string
	Data    any
}

func (s *Server) render(w http.ResponseWriter, ses *session, code int, page string, pd pageData) {
	if ses != nil {
		pd.User, pd.Role, pd.CSRF = ses.user, ses.role, ses.csrf
	}
	if s.view != nil {
		pd.Stale = s.view.StaleSince()
	}
	var buf bytes.Buffer
	if err := s.pages[page].ExecuteTemplate(&buf, "layout", pd); err != nil {
		s.cfg.Logger.Error("console: render", "page", page, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) errorPage(w http.ResponseWriter, ses *session, code int, msg string) {
	s.render(w, ses, code, "error", pageData{Title: http.StatusText(code), Error: msg})
}

// safeNext keeps the post-login redirect on this site.
func safeNext(next string) string {
	if len(next) > 512 || next == "" || next[0] != '/' || (len(next) > 1 && (next[1] == '/' || next[1] == '\\')) {
		return "/"
	}
	return next
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, nil, http.StatusOK, "login", pageData{Title: "Log in", Data: safeNext(r.URL.Query().Get("next"))})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		s.render(w, nil, http.StatusRequestEntityTooLarge, "login", pageData{Title: "Log in", Error: "the form could not be read: " + err.Error(), Data: "/"})
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if !sameOrigin(r) {
		s.render(w, nil, http.StatusForbidden, "login", pageData{Title: "Log in", Error: "a login from another site's page is refused", Data: next})
		return
	}
	addr := remoteHost(r)
	if s.limiter.blocked(addr) {
		s.metrics.logins.WithLabelValues("limited").Inc()
		s.render(w, nil, http.StatusTooManyRequests, "login", pageData{Title: "Log in", Error: "too many failed logins from your address; wait a minute", Data: next})
		return
	}
	name, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	u, ok := checkPassword(s.users, name, pass)
	if !ok || len(pass) > 72 {
		s.limiter.failed(addr)
		s.metrics.logins.WithLabelValues("failed").Inc()
		s.cfg.Logger.Warn("console: failed login", "username", clip(name, 64), "remote", addr)
		s.render(w, nil, http.StatusUnauthorized, "login", pageData{Title: "Log in", Error: "wrong username or password", Data: next})
		return
	}
	token, _ := s.sessions.create(u)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: s.cfg.TLSCert != "", MaxAge: int(s.cfg.SessionTTL / time.Second)})
	s.metrics.logins.WithLabelValues("ok").Inc()
	s.cfg.Logger.Info("console: login", "username", u.Username, "role", u.Role, "remote", addr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, _ *session) {
	s.sessions.drop(r)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

type fleetData struct {
	Query    Query
	Page     Page
	Releases []ReleaseRow
	Models   []string
	Groups   []string
	Phases   []string
	Prev     string
	Next     string
}

// maxGroupsOffered bounds the groups the filter form suggests: any group
// can still be typed.
const maxGroupsOffered = 500

var phases = []string{"idle", "downloading", "verifying", "staging", "probation", "committed", "failed", "rolled_back", "offline"}

func (s *Server) fleetPage(w http.ResponseWriter, r *http.Request, ses *session) {
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		s.errorPage(w, ses, http.StatusBadRequest, err.Error())
		return
	}
	snap := s.view.Snapshot()
	rows := s.rows()
	d := fleetData{Query: q, Page: pageOf(rows, q, s.cfg.PageSize), Releases: releaseRows(snap.Releases), Phases: phases,
		Groups: groupsOf(rows, maxGroupsOffered)}
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Model != "" && !seen[r.Model] {
			seen[r.Model] = true
			d.Models = append(d.Models, r.Model)
		}
	}
	for _, rr := range d.Releases {
		if !seen[rr.Model] {
			seen[rr.Model] = true
			d.Models = append(d.Models, rr.Model)
		}
	}
	sort.Strings(d.Models)
	v := q.Values()
	if d.Page.Page > 1 {
		v.Set("page", fmt.Sprint(d.Page.Page-1))
		d.Prev = "?" + v.Encode()
	}
	if d.Page.Page < d.Page.Pages {
		v.Set("page", fmt.Sprint(d.Page.Page+1))
		d.Next = "?" + v.Encode()
	}
	s.render(w, ses, http.StatusOK, "fleet", pageData{Title: "Fleet", Data: d})
}

// liveMessage is one message of the live stream: the page's rows in
// order, the rows that changed since the last message (all of them in the
// first), the counts and the releases.
type liveMessage struct {
	Page
	Order    []string       `json:"order"`
	Rows     map[string]Row `json:"rows"`
	Releases []ReleaseRow   `json:"releases"`
	Stale    string         `json:"stale,omitempty"`
}

// live streams the table's page as server-sent events: at most one
// message per UpdateInterval, and only when something changed, carrying
// only the rows that changed. A fleet of thousands reporting at once thus
// costs each open page a few small messages a second.
func (s *Server) live(w http.ResponseWriter, r *http.Request, ses *session) {
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fl, rc, done, ok := s.openStream(w)
	if !ok {
		return
	}
	defer done()
	sent := map[string]Row{}
	var lastGen uint64
	var lastOrder, lastHead string
	first := true
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		ch := s.changedCh()
		g := s.gen.Load()
		if first || g != lastGen {
			lastGen = g
			rows := s.rows()
			p := pageOf(rows, q, s.cfg.PageSize)
			msg := liveMessage{Page: p, Order: make([]string, len(p.Rows)), Rows: map[string]Row{}, Releases: releaseRows(s.view.Snapshot().Releases)}
			keep := make(map[string]Row, len(p.Rows))
			for i, row := range p.Rows {
				msg.Order[i] = row.ID
				if old, ok := sent[row.ID]; !ok || old != row {
					msg.Rows[row.ID] = row
				}
				keep[row.ID] = row
			}
			sent = keep
			if st := s.view.StaleSince(); !st.IsZero() {
				msg.Stale = st.UTC().Format(time.RFC3339)
			}
			data, _ := json.Marshal(msg)
			// Skip a message that changes nothing on this page (a change
			// to a truck on another page).
			head, _ := json.Marshal(struct {
				Page
				Order    []string
				Releases []ReleaseRow
				Stale    string
			}{p, msg.Order, msg.Releases, msg.Stale})
			if first || len(msg.Rows) > 0 || string(head) != lastHead || fmt.Sprint(msg.Order) != lastOrder {
				rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := fmt.Fprintf(w, "event: page\ndata: %s\n\n", data); err != nil {
					return
				}
				fl.Flush()
			}
			lastHead, lastOrder, first = string(head), fmt.Sprint(msg.Order), false
		}
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-ch:
			// Coalesce: whatever else changes in the next moment goes
			// out in the same message.
			select {
			case <-r.Context().Done():
				return
			case <-time.After(s.cfg.UpdateInterval):
			}
		}
	}
}

type truckData struct {
	ID      string
	Status  status.Status
	Events  []status.Event
	Known   bool
	CanPin  bool
	Release *ReleaseRow
	// Alerts is the truck's alerts per minute.
	Alerts *alertPlot
}

// truckOf gathers what the truck page shows of id; false if no truck id
// has reported.
func (s *Server) truckOf(id string, now time.Time) (truckData, bool) {
	st, evs, ok := s.view.Truck(id)
	if !ok {
		return truckData{}, false
	}
	// Newest first: the last update is what one comes to see.
	slices.Reverse(evs)
	d := truckData{ID: id, Status: st, Events: evs, Known: ok, Alerts: s.alerts.plot(id, now)}
	if r, ok := s.view.Releases()[st.Model]; ok {
		rr := releaseRows(map[string]fleetview.Release{st.Model: r})[0]
		d.Release = &rr
	}
	return d, true
}

func (s *Server) truckPage(w http.ResponseWriter, r *http.Request, ses *session) {
	id := r.PathValue("id")
	if err := topics.ValidID(id); err != nil {
		s.errorPage(w, ses, http.StatusBadRequest, "truck id: "+err.Error())
		return
	}
	d, ok := s.truckOf(id, time.Now())
	if !ok {
		s.errorPage(w, ses, http.StatusNotFound, fmt.Sprintf("no truck %q has reported to the fleet broker", id))
		return
	}
	d.CanPin = s.available(ActionPin) && ses.role == RoleOperator
	s.render(w, ses, http.StatusOK, "truck", pageData{Title: id, Data: d})
}

// truckParts are the parts of the truck page its live stream replaces:
// everything but the pin forms, which would lose what is being typed.
var truckParts = []string{"truck-head", "truck-facts", "truck-alerts", "truck-events"}

// liveTruck streams the truck page's parts as they change.
func (s *Server) liveTruck(w http.ResponseWriter, r *http.Request, ses *session) {
	id := r.PathValue("id")
	if err := topics.ValidID(id); err != nil {
		http.Error(w, "truck id: "+err.Error(), http.StatusBadRequest)
		return
	}
	if _, _, ok := s.view.Truck(id); !ok {
		http.Error(w, fmt.Sprintf("no truck %q has reported to the fleet broker", id), http.StatusNotFound)
		return
	}
	s.liveParts(w, r, func(now time.Time) (any, bool) {
		d, ok := s.truckOf(id, now)
		return d, ok
	}, "truck", truckParts, s.alerts.changedCh)
}

type versionCount struct {
	Version int64
	Trucks  int
	Online  int
}

type modelData struct {
	Name        string
	Release     *ReleaseRow
	Versions    []versionCount
	Registry    []localreg.Entry
	RegistryOK  bool
	RegistryErr string
	CanDecide   bool
	// Chart is the trucks per version since the console started.
	Chart *chart
	// RolloutKnown: the console can read the publisher's state (it was
	// started with the publisher's registry or state file).
	RolloutKnown bool
	// Rollout is the state file's staged rollout; nil when none.
	Rollout *publisher.Rollout
	// Hold is the holds file's operator halt when it is not resumed, and
	// Pending says the publisher has not recorded it yet.
	Hold       *publisher.Hold
	Pending    bool
	RolloutErr string
	CanSteer   bool
}

// modelOf gathers the parts of the model page that follow the fleet: the
// release, the chart and the trucks per version.
func (s *Server) modelOf(name string, now time.Time) modelData {
	d := modelData{Name: name, Chart: chartOf(s.hist.samples(name), now)}
	if r, ok := s.view.Releases()[name]; ok {
		rr := releaseRows(map[string]fleetview.Release{name: r})[0]
		d.Release = &rr
	}
	counts := map[int64]*versionCount{}
	for _, row := range s.rows() {
		if row.Model != name {
			continue
		}
		c := counts[row.Version]
		if c == nil {
			c = &versionCount{Version: row.Version}
			counts[row.Version] = c
		}
		c.Trucks++
		if row.Online {
			c.Online++
		}
	}
	for _, c := range counts {
		d.Versions = append(d.Versions, *c)
	}
	sort.Slice(d.Versions, func(i, j int) bool { return d.Versions[i].Version > d.Versions[j].Version })
	return d
}

func (s *Server) modelPage(w http.ResponseWriter, r *http.Request, ses *session) {
	name := r.PathValue("name")
	if err := topics.ValidID(name); err != nil {
		s.errorPage(w, ses, http.StatusBadRequest, "model name: "+err.Error())
		return
	}
	d := s.modelOf(name, time.Now())
	d.CanDecide = s.available(ActionApprove) && ses.role == RoleOperator
	d.CanSteer = s.available(ActionHalt) && ses.role == RoleOperator
	if s.available(ActionHalt) {
		d.RolloutKnown = true
		s.rolloutOf(&d)
	}
	if s.cfg.Actions != nil && s.cfg.Actions.RegistryDir != "" {
		d.RegistryOK = true
		reg, err := localreg.Open(s.cfg.Actions.RegistryDir)
		var entries []localreg.Entry
		if err == nil {
			entries, err = reg.List()
		}
		if err != nil {
			d.RegistryErr = err.Error()
		}
		for _, e := range entries {
			if e.Model == name {
				d.Registry = append(d.Registry, e)
			}
		}
		sort.Slice(d.Registry, func(i, j int) bool { return d.Registry[i].Version > d.Registry[j].Version })
	}
	s.render(w, ses, http.StatusOK, "model", pageData{Title: name, Data: d})
}

// modelParts are the parts of the model page its live stream replaces:
// the ones read from the fleet. The rollout and the registry, with their
// forms, change by actions, and the page after an action shows them anew.
var modelParts = []string{"model-release", "model-progress", "model-versions"}

// liveModel streams the model page's parts as they change.
func (s *Server) liveModel(w http.ResponseWriter, r *http.Request, ses *session) {
	name := r.PathValue("name")
	if err := topics.ValidID(name); err != nil {
		http.Error(w, "model name: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.liveParts(w, r, func(now time.Time) (any, bool) { return s.modelOf(name, now), true }, "model", modelParts, s.hist.changedCh)
}

type alertsData struct {
	Plot *alertPlot
}

func (s *Server) alertsPage(w http.ResponseWriter, r *http.Request, ses *session) {
	s.render(w, ses, http.StatusOK, "alerts", pageData{Title: "Alerts", Data: alertsData{Plot: s.alerts.plot("", time.Now())}})
}

// liveAlerts streams the alerts page's plot as alerts come.
func (s *Server) liveAlerts(w http.ResponseWriter, r *http.Request, ses *session) {
	s.liveParts(w, r, func(now time.Time) (any, bool) { return alertsData{Plot: s.alerts.plot("", now)}, true }, "alerts", []string{"alerts-plot"}, s.alerts.changedCh)
}

// modelProgress serves the model page's chart alone, which the page's
// script fetches again every few seconds to keep it current.
func (s *Server) modelProgress(w http.ResponseWriter, r *http.Request, ses *session) {
	name := r.PathValue("name")
	if err := topics.ValidID(name); err != nil {
		http.Error(w, "model name: "+err.Error(), http.StatusBadRequest)
		return
	}
	var b bytes.Buffer
	if err := s.pages["model"].ExecuteTemplate(&b, "chart", chartOf(s.hist.samples(name), time.Now())); err != nil {
		s.cfg.Logger.Error("console: render the chart", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

// rolloutOf fills d's rollout from the publisher's state file and its
// operator halt from the holds file.
func (s *Server) rolloutOf(d *modelData) {
	cfg := *s.cfg.Actions
	ro, err := publisher.RolloutOf(cfg, d.Name)
	if err != nil {
		d.RolloutErr = err.Error()
		return
	}
	d.Rollout = ro
	holds, err := publisher.LoadHolds(cfg)
	if err != nil {
		d.RolloutErr = err.Error()
		return
	}
	if h := holds.Models[d.Name]; h.Active() && ro != nil && h.Version == ro.Version {
		d.Hold = h
		d.Pending = ro.Hold == nil
	}
}

type actionData struct {
	Action Action
	Back   string
}

// action asks for confirmation of an action (a form without confirm=yes),
// then runs it: written to the audit log before it runs (an action that
// cannot be recorded is not done) and after, with its result.
func (s *Server) action(w http.ResponseWriter, r *http.Request, ses *session) {
	a, err := ParseAction(r.PostForm)
	if err != nil {
		s.metrics.actions.WithLabelValues(clip(a.Kind, 16), "refused").Inc()
		s.errorPage(w, ses, http.StatusBadRequest, err.Error())
		return
	}
	back := "/models/" + a.Model
	if a.Truck != "" {
		back = "/trucks/" + a.Truck
	}
	d := actionData{Action: a, Back: back}
	if !s.available(a.Kind) {
		s.metrics.actions.WithLabelValues(a.Kind, "refused").Inc()
		s.errorPage(w, ses, http.StatusConflict, fmt.Sprintf("this console cannot %s: it was started without %s", a.Kind, needs(a.Kind)))
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		s.render(w, ses, http.StatusOK, "confirm", pageData{Title: "Confirm", Data: d})
		return
	}
	rec := AuditRecord{Time: time.Now().UTC(), User: ses.user, Role: ses.role, Remote: remoteHost(r), Action: a, Result: "requested"}
	if err := s.audit.write(rec); err != nil {
		s.metrics.actions.WithLabelValues(a.Kind, "failed").Inc()
		s.cfg.Logger.Error("console: audit log", "err", err)
		s.errorPage(w, ses, http.StatusInternalServerError, "not done: the audit log could not be written ("+err.Error()+"); fix the disk or the file's permissions")
		return
	}
	msg, err := s.do(r.Context(), ses.user, a)
	rec.Time, rec.Result, rec.Detail = time.Now().UTC(), "ok", msg
	if err != nil {
		rec.Result, rec.Detail = "failed", err.Error()
	}
	if aerr := s.audit.write(rec); aerr != nil {
		s.cfg.Logger.Error("console: audit log", "err", aerr, "action", a.String(), "result", rec.Result)
	}
	s.metrics.actions.WithLabelValues(a.Kind, rec.Result).Inc()
	s.cfg.Logger.Info("console: action", "user", ses.user, "action", a.String(), "result", rec.Result, "detail", rec.Detail)
	if err != nil {
		code := http.StatusBadGateway
		switch {
		case errors.Is(err, localreg.ErrNotFound) || errors.Is(err, localreg.ErrInvalidInput) || errors.Is(err, publisher.ErrInvalidConfig):
			code = http.StatusBadRequest
		case errors.Is(err, publisher.ErrNoRollout) || errors.Is(err, publisher.ErrAlreadyHeld) || errors.Is(err, publisher.ErrNotHeld):
			code = http.StatusConflict
		}
		s.render(w, ses, code, "result", pageData{Title: "Failed", Error: fmt.Sprintf("could not %s: %v", a, err), Data: d})
		return
	}
	s.render(w, ses, http.StatusOK, "result", pageData{Title: "Done", Message: msg, Data: d})
}
