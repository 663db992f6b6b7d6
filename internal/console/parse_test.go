package console

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/publisher"
)

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Query
		err  string
	}{
		{"", Query{Page: 1}, ""},
		{"model=aps-failure&version=v2&phase=committed&online=no&q=7&page=3", Query{Model: "aps-failure", Version: 2, Phase: "committed", Online: "no", Search: "7", Page: 3}, ""},
		{"version=&page=", Query{Page: 1}, ""},
		{"version=0", Query{}, "version"},
		{"page=0", Query{}, "page"},
		{"page=1000001", Query{}, "page"},
		{"online=maybe", Query{}, "online"},
		{"q=" + strings.Repeat("a", 65), Query{}, "at most 64"},
		{"q=a&q=b", Query{}, "given 2 times"},
		{"group=early&online=yes", Query{Group: "early", Online: "yes", Page: 1}, ""},
		{"group=a,b", Query{}, "group"},
		{"group=a%2Fb", Query{}, "group"},
		{"colour=red", Query{}, "unknown parameter"},
	} {
		v, _ := url.ParseQuery(tc.in)
		got, err := ParseQuery(v)
		if tc.err != "" {
			if !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one about %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add("model=m&version=2&page=3&online=yes&q=x")
	f.Add("page=-1&version=v")
	f.Add("group=early&model=m")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseQuery(v)
		if err != nil {
			return
		}
		if q.Page < 1 || q.Page > maxPage || q.Version < 0 || len(q.Search) > maxQueryValue || len(q.Model) > maxQueryValue ||
			strings.Contains(q.Group, groupSep) {
			t.Fatalf("accepted out of range: %+v", q)
		}
		// What it writes back, it reads again the same.
		back, err := ParseQuery(q.Values())
		if err != nil || back.Model != q.Model || back.Version != q.Version || back.Search != q.Search || back.Online != q.Online || back.Phase != q.Phase || back.Group != q.Group {
			t.Fatalf("round trip %+v -> %+v, %v", q, back, err)
		}
	})
}

func TestParseAction(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Action
		err  string
	}{
		{"action=approve&model=m&version=2", Action{Kind: "approve", Model: "m", Version: 2}, ""},
		{"action=reject&model=m&version=2", Action{Kind: "reject", Model: "m", Version: 2}, ""},
		{"action=pin&model=m&version=1&truck=t-1", Action{Kind: "pin", Model: "m", Version: 1, Truck: "t-1"}, ""},
		{"action=unpin&model=m&truck=t-1", Action{Kind: "unpin", Model: "m", Truck: "t-1"}, ""},
		{"action=approve&model=m", Action{}, "needs a version"},
		{"action=approve&model=m&version=2&truck=t", Action{}, "takes no truck"},
		{"action=unpin&model=m&truck=t&version=3", Action{}, "takes no version"},
		{"action=pin&model=m&version=1&truck=a/b", Action{}, "truck"},
		{"action=approve&model=%2B&version=1", Action{}, "model"},
		{"action=approve&model=m&version=-1", Action{}, "version"},
		{"action=halt&model=m", Action{Kind: "halt", Model: "m"}, ""},
		{"action=halt&model=m&reason=+brakes+", Action{Kind: "halt", Model: "m", Reason: "brakes"}, ""},
		{"action=resume&model=m", Action{Kind: "resume", Model: "m"}, ""},
		{"action=halt&model=m&truck=t", Action{}, "takes no truck"},
		{"action=resume&model=m&reason=x", Action{}, "takes no reason"},
		{"action=halt&model=m&reason=a%0Ab", Action{}, "one line"},
		{"action=halt&model=m&reason=" + strings.Repeat("x", 257), Action{}, "limit 256"},
		{"action=stop&model=m", Action{}, "want approve"},
	} {
		v, _ := url.ParseQuery(tc.in)
		got, err := ParseAction(v)
		if tc.err != "" {
			if !errors.Is(err, ErrBadAction) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one about %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseAction(f *testing.F) {
	f.Add("action=pin&model=m&version=1&truck=t")
	f.Add("action=approve&model=m&version=99999999999999999999")
	f.Add("action=halt&model=m&reason=brake+alerts")
	f.Add("action=resume&model=m")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		a, err := ParseAction(v)
		if err != nil {
			return
		}
		if len(a.Model) > maxQueryValue || len(a.Truck) > maxQueryValue || strings.ContainsAny(a.Model+a.Truck, "/+#") || a.Version < 0 ||
			len(a.Reason) > publisher.MaxHoldReason || (a.Reason != "" && a.Kind != ActionHalt) || strings.ContainsAny(a.Reason, "\n\r\x00") {
			t.Fatalf("accepted %+v", a)
		}
	})
}

func TestParseUsers(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	user := func(name, role string) string {
		return fmt.Sprintf("  - username: %s\n    password_hash: %q\n    role: %s\n", name, h, role)
	}
	for _, tc := range []struct {
		name, in, err string
	}{
		{"ok", "users:\n" + user("ann", "viewer") + user("bob", "operator"), ""},
		{"empty", "", "empty"},
		{"no users", "users: []\n", "no users"},
		{"broker role", "users:\n" + user("ann", "publisher"), "unknown role"},
		{"plaintext", "users:\n  - username: ann\n    password_hash: secret\n    role: viewer\n", "not a bcrypt hash"},
		{"duplicate", "users:\n" + user("ann", "viewer") + user("ann", "operator"), "duplicate"},
		{"bad name", "users:\n" + user("'a b'", "viewer"), "must match"},
		{"unknown key", "users:\n" + user("ann", "viewer") + "    email: x\n", "not found"},
		{"two documents", "users:\n" + user("ann", "viewer") + "---\nusers: []\n", "more than one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseUsers([]byte(tc.in))
			if tc.err == "" {
				if err != nil || len(u) != 2 || u["bob"].Role != RoleOperator {
					t.Fatalf("%v, %+v", err, u)
				}
				return
			}
			if !errors.Is(err, ErrInvalidUsersFile) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one about %q", err, tc.err)
			}
		})
	}
}

func FuzzParseUsers(f *testing.F) {
	f.Add([]byte("users:\n  - username: a\n    password_hash: \"$2a$04$abcdefghijklmnopqrstuuJ6dXhKz4y8sBfQ8BiyS3I1T1y1a3z6G\"\n    role: viewer\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := ParseUsers(data)
		if err != nil {
			return
		}
		for name, u := range users {
			if name != u.Username || (u.Role != RoleViewer && u.Role != RoleOperator) || !usernameRE.MatchString(name) {
				t.Fatalf("accepted %+v", u)
			}
		}
	})
}

func TestPageOf(t *testing.T) {
	var rows []Row
	for i := range 120 {
		rows = append(rows, Row{ID: fmt.Sprintf("truck-%03d", i), Online: i%2 == 0, Model: "m", Version: int64(1 + i%3)})
	}
	// Every tenth truck is in "early", every fifth in "north"; "ear" is
	// a prefix of a group, not a group.
	for i := range rows {
		var gs []string
		if i%10 == 0 {
			gs = append(gs, "early")
		}
		if i%5 == 0 {
			gs = append(gs, "north")
		}
		rows[i].Groups = strings.Join(gs, groupSep)
	}
	for _, tc := range []struct {
		q                   Query
		total, pages, first int
		firstID             string
	}{
		{Query{Page: 1}, 120, 3, 50, "truck-000"},
		{Query{Page: 3}, 120, 3, 20, "truck-100"},
		{Query{Page: 9}, 120, 3, 20, "truck-100"}, // past the end: the last page
		{Query{Page: 1, Online: "no"}, 60, 2, 50, "truck-001"},
		{Query{Page: 1, Version: 3}, 40, 1, 40, "truck-002"},
		{Query{Page: 1, Search: "TRUCK-11"}, 10, 1, 10, "truck-110"},
		{Query{Page: 1, Model: "other"}, 0, 1, 0, ""},
		{Query{Page: 1, Group: "early"}, 12, 1, 12, "truck-000"},
		{Query{Page: 1, Group: "north", Online: "no"}, 12, 1, 12, "truck-005"},
		{Query{Page: 1, Group: "ear"}, 0, 1, 0, ""},
	} {
		p := pageOf(rows, tc.q, 50)
		if p.Total != tc.total || p.Pages != tc.pages || len(p.Rows) != tc.first || p.All != 120 || (len(p.Rows) > 0 && p.Rows[0].ID != tc.firstID) {
			t.Errorf("%+v: total %d pages %d rows %d; want %d %d %d from %s", tc.q, p.Total, p.Pages, len(p.Rows), tc.total, tc.pages, tc.first, tc.firstID)
		}
	}
}

func TestRowGroups(t *testing.T) {
	r := rowOf("t", status.Status{Groups: []string{"early", "north"}})
	if r.Groups != "early, north" {
		t.Errorf("row groups %q", r.Groups)
	}
	rows := []Row{{Groups: "north, early"}, {Groups: "early"}, {}}
	if got := groupsOf(rows, 10); !slices.Equal(got, []string{"early", "north"}) {
		t.Errorf("groupsOf: %q", got)
	}
	if got := groupsOf(rows, 1); len(got) != 1 {
		t.Errorf("groupsOf bounded to 1: %q", got)
	}
}

func TestExposed(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:9890": false, "[::1]:1": false, "localhost:80": false, ":9890": true, "0.0.0.0:1": true, "10.0.0.5:1": true, "console.example:1": true} {
		if got := exposed(addr); got != want {
			t.Errorf("exposed(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestSessionsExpireAndAreBounded(t *testing.T) {
	s := newSessions(time.Hour)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	first, _ := s.create(User{Username: "a", Role: RoleViewer})
	for range maxSessions {
		now = now.Add(time.Millisecond)
		s.create(User{Username: "b", Role: RoleViewer})
	}
	if len(s.m) != maxSessions {
		t.Fatalf("%d sessions kept, want at most %d", len(s.m), maxSessions)
	}
	if _, ok := s.m[first]; ok {
		t.Error("the oldest session was not the one dropped")
	}
	now = now.Add(2 * time.Hour)
	tok, _ := s.create(User{Username: "c", Role: RoleViewer})
	if len(s.m) != 1 || s.m[tok] == nil {
		t.Errorf("expired sessions kept: %d", len(s.m))
	}
}

func TestLoginLimiter(t *testing.T) {
	l := newLoginLimiter()
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for range maxLoginFails {
		if l.blocked("10.0.0.1") {
			t.Fatal("blocked too early")
		}
		l.failed("10.0.0.1")
	}
	if !l.blocked("10.0.0.1") || l.blocked("10.0.0.2") {
		t.Fatal("the limit is per address")
	}
	now = now.Add(loginFailWindow + time.Second)
	if l.blocked("10.0.0.1") {
		t.Fatal("still blocked after the window")
	}
}

// BenchmarkLivePage10k is what one change costs the console at 10,000
// trucks: the rows rebuilt once, then one filtered page cut per open page.
func BenchmarkLivePage10k(b *testing.B) {
	trucks := map[string]status.Status{}
	for i := range 10_000 {
		trucks[fmt.Sprintf("truck-%05d", i)] = status.Status{Online: i%7 != 0, Model: "aps-failure", Version: int64(1 + i%2), Phase: "committed", LastSeen: time.Now()}
	}
	b.Run("rows", func(b *testing.B) {
		for b.Loop() {
			rowsOf(trucks)
		}
	})
	rows := rowsOf(trucks)
	b.Run("page", func(b *testing.B) {
		q := Query{Page: 40, Online: "yes", Search: "truck-0"}
		for b.Loop() {
			pageOf(rows, q, DefaultPageSize)
		}
	})
}
