package hold

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newAt(t *testing.T, cfg Config, now time.Time) *Controller {
	t.Helper()
	if cfg.TimeZone == "" {
		cfg.TimeZone = "UTC"
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return now }
	return c
}

// 2026-12-07 is a Monday.
var monday = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

func TestWindows(t *testing.T) {
	tests := []struct {
		window   string
		at       time.Duration // after Monday 00:00
		open     bool
		nextEdge time.Duration
	}{
		{"Mon-Fri 22:00-05:30", 23 * time.Hour, true, 29*time.Hour + 30*time.Minute},
		{"Mon-Fri 22:00-05:30", 3 * time.Hour, false, 22 * time.Hour}, // Sunday night is not in Mon-Fri
		{"Mon-Fri 22:00-05:30", 12 * time.Hour, false, 22 * time.Hour},
		{"Fri-Mon 22:00-05:30", 3 * time.Hour, true, 5*time.Hour + 30*time.Minute}, // from Sunday 22:00
		{"daily 01:00-04:00", 90 * time.Minute, true, 4 * time.Hour},
		{"Sat,Sun 00:00-24:00", 12 * time.Hour, false, 5 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.window, func(t *testing.T) {
			c := newAt(t, Config{Windows: []string{tt.window}}, monday.Add(tt.at))
			st := c.State()
			if st.Held == tt.open {
				t.Fatalf("held %v at +%s, want open %v", st.Held, tt.at, tt.open)
			}
			if want := monday.Add(tt.nextEdge); !st.Next.Equal(want) {
				t.Fatalf("next edge %s, want %s", st.Next, want)
			}
		})
	}
}

func TestBadWindows(t *testing.T) {
	for _, w := range []string{"", "Mon", "Mon 22:00", "Xyz 01:00-02:00", "Mon 25:00-26:00", "Mon 01:00-01:00", "Mon 1:00-2:00", "Mon 01:60-02:00"} {
		if _, err := New(Config{Windows: []string{w}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("window %q: %v, want ErrInvalid", w, err)
		}
	}
	if _, err := New(Config{TimeZone: "Mars/Olympus"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad zone: %v", err)
	}
}

func TestHoldsExpireAndAreBounded(t *testing.T) {
	now := monday
	c := newAt(t, Config{MaxHold: time.Hour}, now)
	c.now = func() time.Time { return now }
	if _, err := c.Set("nav", "vehicle moving", 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Set("crane", "", 0); err != nil { // open-ended: cut to MaxHold
		t.Fatal(err)
	}
	st := c.State()
	if !st.Held || !strings.Contains(st.Reason, "nav (vehicle moving)") || len(st.Holds) != 2 || !st.Next.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("state %+v", st)
	}
	now = now.Add(11 * time.Minute)
	if st := c.State(); len(st.Holds) != 1 || st.Holds[0].App != "crane" {
		t.Fatalf("after nav's ttl: %+v", st)
	}
	now = now.Add(time.Hour)
	if st := c.State(); st.Held {
		t.Fatalf("a hold outlived MaxHold: %+v", st)
	}
	// Each application releases only its own hold.
	c.Set("a", "", 0)
	c.Set("b", "", 0)
	c.Clear("a")
	if st := c.State(); !st.Held || st.Holds[0].App != "b" {
		t.Fatalf("clearing a released b: %+v", st)
	}
	for i := range MaxApps {
		c.Set("app"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('a'+i/26)), "", 0)
	}
	if _, err := c.Set("one-too-many", "", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("hold %d: %v, want ErrInvalid", MaxApps+1, err)
	}
	for _, bad := range []string{"", "a/b", "#", strings.Repeat("a", 65)} {
		if _, err := c.Set(bad, "", 0); !errors.Is(err, ErrInvalid) {
			t.Errorf("app %q: %v", bad, err)
		}
	}
}

func TestChangedAndMessage(t *testing.T) {
	c := newAt(t, Config{}, monday)
	if _, err := c.Message("nav", []byte(`{"reason":"moving","ttl":"5m"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Changed():
	default:
		t.Fatal("no change signalled")
	}
	if !c.State().Held {
		t.Fatal("not held")
	}
	if _, err := c.Message("nav", nil); err != nil || c.State().Held {
		t.Fatalf("empty payload did not clear: %v", err)
	}
	for _, bad := range []string{`{"reason":1}`, `{"ttl":"-5m"}`, `{"ttl":"soon"}`, `{"x":1}`, `{"ttl":"5m","until":"2026-12-07T01:00:00Z"}`, `{"until":"2020-01-01T00:00:00Z"}`, `{} {}`, strings.Repeat(" ", MaxRequest+1)} {
		if _, err := c.Message("nav", []byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("payload %q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestHTTP(t *testing.T) {
	c := newAt(t, Config{}, monday)
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	do := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("PUT", "/v1/hold/nav", `{"reason":"moving","ttl":"10m"}`); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	if !c.State().Held {
		t.Fatal("PUT did not hold")
	}
	if code := do("PUT", "/v1/hold/nav", `{"ttl":"forever"}`); code != 400 {
		t.Fatalf("bad PUT: %d", code)
	}
	if code := do("GET", "/v1/hold", ""); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	if code := do("DELETE", "/v1/hold/nav", ""); code != 204 || c.State().Held {
		t.Fatalf("DELETE: %d, held %v", code, c.State().Held)
	}
}

func FuzzMessage(f *testing.F) {
	f.Add([]byte(`{"reason":"moving","ttl":"5m"}`))
	f.Add([]byte(`{"until":"2026-12-07T01:00:00Z"}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _ := New(Config{MaxHold: time.Hour})
		h, err := c.Message("app", data)
		if err != nil {
			return
		}
		if len(data) > 0 && (h.Until.After(time.Now().Add(time.Hour+time.Second)) || h.App != "app") {
			t.Fatalf("hold %+v beyond MaxHold", h)
		}
	})
}
