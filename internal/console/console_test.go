package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/fleetsim"
	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// testFleet is a real fleet (fleetsim: broker, registry, publisher, three
// trucks) serving v1, with v2 added to the registry and pending.
type testFleet struct {
	*fleetsim.Fleet
	v2 localreg.Entry
}

func startFleet(t *testing.T, ctx context.Context) *testFleet {
	t.Helper()
	f, err := fleetsim.Start(ctx, fleetsim.Options{Dir: t.TempDir(), Trucks: 3, Probation: 500 * time.Millisecond, HTTPClients: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	v1, err := f.Register(ctx, apsmodels.V1())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.Approve(v1.Model, v1.Version, "setup"); err != nil {
		t.Fatal(err)
	}
	v2, err := f.Register(ctx, apsmodels.V2())
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := fleetsim.WaitVersion(wctx, v1.Version, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	return &testFleet{Fleet: f, v2: v2}
}

// Test users; the hashes use bcrypt's lowest cost to keep tests fast.
var testUsers = map[string]Role{"olga": RoleOperator, "vic": RoleViewer}

func writeUsers(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for name, role := range testUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(name+"-secret"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  - username: %s\n    password_hash: %q\n    role: %s\n", name, h, role)
	}
	p := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startConsole(t *testing.T, ctx context.Context, f *fleetsim.Fleet) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.jsonl")
	s, err := New(Config{
		Listen: "127.0.0.1:0", UsersFile: writeUsers(t, dir), AuditLog: audit,
		Fleet: fleetview.Config{Broker: f.BrokerURL},
		Actions: &publisher.Config{Broker: f.BrokerURL, RegistryDir: f.Registry.Dir(), KeyFile: f.KeyFile(),
			ArtifactBaseURL: "http://" + f.Publisher.ArtifactAddr()},
		UpdateInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if err := s.Close(); err != nil { // idempotent
			t.Error(err)
		}
	})
	return s, audit
}

// client is a browser stand-in: a cookie jar, no redirects followed.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func newClient(t *testing.T, base string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: base, hc: &http.Client{Jar: jar, Timeout: 40 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) do(method, path string, form url.Values) (int, string) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if m := csrfRE.FindSubmatch(data); m != nil {
		c.csrf = string(m[1])
	}
	return resp.StatusCode, string(data)
}

func (c *client) login(user, pass string) int {
	c.t.Helper()
	code, _ := c.do("POST", "/login", url.Values{"username": {user}, "password": {pass}})
	if code == http.StatusSeeOther {
		c.do("GET", "/", nil) // picks up the session's CSRF token
	}
	return code
}

// live follows /live and sends each message.
func (c *client) live(ctx context.Context, query string) <-chan liveMessage {
	c.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/live"+query, nil)
	hc := *c.hc
	hc.Timeout = 0 // the stream lasts; ctx ends it
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("/live: %s", resp.Status)
	}
	ch := make(chan liveMessage, 64)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 4<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m liveMessage
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				c.t.Errorf("live message: %v", err)
				return
			}
			select {
			case ch <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// waitLive reads messages, keeping the last state of each row, until cond
// holds for the rows seen or ctx ends.
func waitLive(t *testing.T, ctx context.Context, ch <-chan liveMessage, rows map[string]Row, what string, cond func(map[string]Row) bool) {
	t.Helper()
	for !cond(rows) {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("the live stream ended waiting for %s", what)
			}
			for id, r := range m.Rows {
				rows[id] = r
			}
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; rows %+v", what, ctx.Err(), rows)
		}
	}
}

func readAudit(t *testing.T, path string) []AuditRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []AuditRecord
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var r AuditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// TestConsole runs the console against a real fleet: logins and roles,
// CSRF, bad input, the live stream, and the actions through the CLI's code.
func TestConsole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := startFleet(t, ctx)
	s, audit := startConsole(t, ctx, f.Fleet)
	base := s.URL()

	t.Run("login required", func(t *testing.T) {
		c := newClient(t, base)
		for _, p := range []string{"/", "/trucks/truck-1", "/models/aps-failure"} {
			if code, _ := c.do("GET", p, nil); code != http.StatusSeeOther {
				t.Errorf("GET %s without a login: %d, want 303 to /login", p, code)
			}
		}
		if code, _ := c.do("GET", "/live", nil); code != http.StatusUnauthorized {
			t.Errorf("/live without a login: %d, want 401", code)
		}
		if code, _ := c.do("POST", "/actions", url.Values{"action": {"approve"}, "model": {"aps-failure"}, "version": {"2"}, "confirm": {"yes"}}); code != http.StatusUnauthorized {
			t.Errorf("an action without a login: %d, want 401", code)
		}
		for _, bad := range [][2]string{{"olga", "wrong"}, {"nobody", "olga-secret"}, {"olga", strings.Repeat("x", 100)}} {
			if code := c.login(bad[0], bad[1]); code != http.StatusUnauthorized {
				t.Errorf("login %s/%s: %d, want 401", bad[0], bad[1], code)
			}
		}
	})

	t.Run("cookie", func(t *testing.T) {
		c := newClient(t, base)
		resp, err := c.hc.PostForm(base+"/login", url.Values{"username": {"vic"}, "password": {"vic-secret"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == cookieName {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
			t.Fatalf("session cookie %+v: want HttpOnly and SameSite=Strict", ck)
		}
	})

	viewer := newClient(t, base)
	if code := viewer.login("vic", "vic-secret"); code != http.StatusSeeOther {
		t.Fatalf("viewer login: %d", code)
	}
	op := newClient(t, base)
	if code := op.login("olga", "olga-secret"); code != http.StatusSeeOther {
		t.Fatalf("operator login: %d", code)
	}
	approveV2 := url.Values{"action": {"approve"}, "model": {"aps-failure"}, "version": {fmt.Sprint(f.v2.Version)}, "confirm": {"yes"}}

	t.Run("viewer sees the fleet and cannot act", func(t *testing.T) {
		_, page := viewer.do("GET", "/", nil)
		for _, want := range []string{"truck-1", "truck-2", "truck-3", "aps-failure", "stable <b>v1</b>"} {
			if !strings.Contains(page, want) {
				t.Errorf("the fleet page lacks %q", want)
			}
		}
		form := url.Values{"csrf": {viewer.csrf}}
		for k, v := range approveV2 {
			form[k] = v
		}
		if code, _ := viewer.do("POST", "/actions", form); code != http.StatusForbidden {
			t.Errorf("a viewer's approve: %d, want 403", code)
		}
		if e, _ := f.Registry.Get("aps-failure", f.v2.Version); e.Status != localreg.StatusPending {
			t.Errorf("v2 is %s after a viewer's approve", e.Status)
		}
	})

	t.Run("CSRF", func(t *testing.T) {
		for name, token := range map[string]string{"none": "", "another session's": viewer.csrf, "made up": strings.Repeat("A", 43)} {
			form := url.Values{"csrf": {token}}
			for k, v := range approveV2 {
				form[k] = v
			}
			if code, _ := op.do("POST", "/actions", form); code != http.StatusForbidden {
				t.Errorf("%s token: %d, want 403", name, code)
			}
		}
		// A right token from another site's page (the Origin says so).
		form := url.Values{"csrf": {op.csrf}}
		for k, v := range approveV2 {
			form[k] = v
		}
		req, _ := http.NewRequest("POST", base+"/actions", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		resp, err := op.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("another origin: %d, want 403", resp.StatusCode)
		}
		if e, _ := f.Registry.Get("aps-failure", f.v2.Version); e.Status != localreg.StatusPending {
			t.Errorf("v2 is %s after refused requests", e.Status)
		}
		if recs := readAudit(t, audit); len(recs) != 0 {
			t.Errorf("refused requests reached the audit log: %+v", recs)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			name, path string
			form       url.Values
			want       int
		}{
			{"page not a number", "/?page=x", nil, 400},
			{"unknown parameter", "/?colour=red", nil, 400},
			{"long search", "/?q=" + strings.Repeat("a", 65), nil, 400},
			{"version not a number", "/live?version=two", nil, 400},
			{"truck id", "/trucks/a%20b", nil, 400},
			{"unknown truck", "/trucks/truck-99", nil, 404},
			{"unknown action", "/actions", url.Values{"action": {"delete"}, "model": {"aps-failure"}}, 400},
			{"model with a slash", "/actions", url.Values{"action": {"approve"}, "model": {"../x"}, "version": {"2"}}, 400},
			{"version not a number", "/actions", url.Values{"action": {"approve"}, "model": {"aps-failure"}, "version": {"two"}}, 400},
			{"pin without a truck", "/actions", url.Values{"action": {"pin"}, "model": {"aps-failure"}, "version": {"1"}}, 400},
			{"unpin with a version", "/actions", url.Values{"action": {"unpin"}, "model": {"aps-failure"}, "truck": {"truck-1"}, "version": {"1"}}, 400},
			{"unknown version", "/actions", url.Values{"action": {"approve"}, "model": {"aps-failure"}, "version": {"99"}, "confirm": {"yes"}}, 400},
			{"form too large", "/actions", url.Values{"action": {"approve"}, "pad": {strings.Repeat("x", maxFormBytes)}}, 413},
		} {
			t.Run(tc.name, func(t *testing.T) {
				method := "GET"
				if tc.form != nil {
					method = "POST"
					tc.form.Set("csrf", op.csrf)
				}
				code, body := op.do(method, tc.path, tc.form)
				if code != tc.want {
					t.Errorf("%s %s: %d, want %d: %s", method, tc.path, code, tc.want, body)
				}
			})
		}
		if e, _ := f.Registry.Get("aps-failure", f.v2.Version); e.Status != localreg.StatusPending {
			t.Errorf("v2 is %s after bad requests", e.Status)
		}
	})

	t.Run("approve, seen live", func(t *testing.T) {
		lctx, lcancel := context.WithTimeout(ctx, 90*time.Second)
		defer lcancel()
		ch := op.live(lctx, "")
		rows := map[string]Row{}
		waitLive(t, lctx, ch, rows, "three trucks on v1", func(rs map[string]Row) bool {
			return len(rs) == 3 && rs["truck-1"].Version == 1 && rs["truck-3"].Version == 1
		})
		form := url.Values{"csrf": {op.csrf}, "action": {"approve"}, "model": {"aps-failure"}, "version": {fmt.Sprint(f.v2.Version)}}
		code, page := op.do("POST", "/actions", form)
		if code != 200 || !strings.Contains(page, "Do you want to") {
			t.Fatalf("approve without confirm: %d, want the confirmation page:\n%s", code, page)
		}
		if e, _ := f.Registry.Get("aps-failure", f.v2.Version); e.Status != localreg.StatusPending {
			t.Fatalf("v2 is %s before the confirmation", e.Status)
		}
		form.Set("confirm", "yes")
		if code, page := op.do("POST", "/actions", form); code != 200 || !strings.Contains(page, "approved aps-failure version 2") {
			t.Fatalf("approve: %d\n%s", code, page)
		}
		if e, _ := f.Registry.Get("aps-failure", f.v2.Version); e.Status != localreg.StatusApproved || e.ApprovedBy != "olga" {
			t.Fatalf("v2 after the approval: %s by %q", e.Status, e.ApprovedBy)
		}
		waitLive(t, lctx, ch, rows, "every truck on v2, live", func(rs map[string]Row) bool {
			for _, id := range []string{"truck-1", "truck-2", "truck-3"} {
				if rs[id].Version != 2 || rs[id].Phase != "committed" {
					return false
				}
			}
			return true
		})
		recs := readAudit(t, audit)
		if len(recs) != 4 || recs[1].Result != "failed" || recs[1].Version != 99 {
			t.Errorf("audit log: want the failed approval of v99 first: %+v", recs)
		}
		if recs = recs[len(recs)-2:]; len(recs) != 2 || recs[0].Result != "requested" || recs[1].Result != "ok" || recs[1].User != "olga" || recs[1].Kind != "approve" || recs[1].Version != 2 {
			t.Fatalf("audit log: %+v", recs)
		}
	})

	t.Run("pin and unpin", func(t *testing.T) {
		t2 := f.Trucks[1]
		form := url.Values{"csrf": {op.csrf}, "action": {"pin"}, "model": {"aps-failure"}, "version": {"1"}, "truck": {"truck-2"}, "confirm": {"yes"}}
		if code, page := op.do("POST", "/actions", form); code != 200 || !strings.Contains(page, "pinned truck-2 to aps-failure version 1") {
			t.Fatalf("pin: %d\n%s", code, page)
		}
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		defer wcancel()
		if err := fleetsim.WaitVersion(wctx, 1, t2); err != nil {
			t.Fatal(err)
		}
		form = url.Values{"csrf": {op.csrf}, "action": {"unpin"}, "model": {"aps-failure"}, "truck": {"truck-2"}, "confirm": {"yes"}}
		if code, page := op.do("POST", "/actions", form); code != 200 || !strings.Contains(page, "cleared the pin of truck-2") {
			t.Fatalf("unpin: %d\n%s", code, page)
		}
		if err := fleetsim.WaitVersion(wctx, 2, t2); err != nil {
			t.Fatal(err)
		}
		_, page := op.do("GET", "/trucks/truck-2", nil)
		for _, want := range []string{"update_committed", "Pin…"} {
			if !strings.Contains(page, want) {
				t.Errorf("the truck page lacks %q", want)
			}
		}
		if _, page := viewer.do("GET", "/trucks/truck-2", nil); strings.Contains(page, "Pin…") {
			t.Error("the truck page offers a viewer the pin")
		}
	})

	t.Run("offline truck keeps its last state", func(t *testing.T) {
		lctx, lcancel := context.WithTimeout(ctx, 60*time.Second)
		defer lcancel()
		ch := op.live(lctx, "?online=no")
		t3 := f.Trucks[2]
		t3.Link.Cut()
		defer t3.Link.Restore()
		rows := map[string]Row{}
		waitLive(t, lctx, ch, rows, "truck-3 offline on v2", func(rs map[string]Row) bool {
			r := rs["truck-3"]
			return !r.Online && r.Version == 2 && r.LastSeen != ""
		})
		if _, ok := rows["truck-1"]; ok {
			t.Error("online=no listed an online truck")
		}
	})
}
