package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/internal/fleetsim"
	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// TestAlertRing: a ring keeps the last buckets it reaches, clears the ones
// it skips, saturates, and takes any bucket number without panicking.
func TestAlertRing(t *testing.T) {
	r := newRing(3)
	if r.at(5) != 0 {
		t.Fatal("an empty ring has counts")
	}
	r.add(10, 2)
	r.add(10, 1)
	r.add(11, 4)
	if r.at(10) != 3 || r.at(11) != 4 || r.at(12) != 0 || r.at(9) != 0 {
		t.Fatalf("ring %+v", r)
	}
	if r.add(8, 1) {
		t.Error("a bucket older than the ring reaches was kept")
	}
	r.add(13, 1) // 10 falls out, 12 is cleared
	if r.at(10) != 0 || r.at(11) != 4 || r.at(12) != 0 || r.at(13) != 1 {
		t.Fatalf("after moving on: %d %d %d %d", r.at(10), r.at(11), r.at(12), r.at(13))
	}
	r.add(100, 1) // far ahead: all cleared
	if r.at(13) != 0 || r.at(100) != 1 {
		t.Fatal("a jump ahead kept old counts")
	}
	if o, ok := r.oldest(); !ok || o != 100 {
		t.Errorf("oldest %d %v", o, ok)
	}
	r.add(100, math.MaxUint32)
	if r.at(100) != math.MaxUint32 {
		t.Errorf("no saturation: %d", r.at(100))
	}
	n := newRing(3)
	n.add(-7, 1) // before 1970: a truck's clock can say anything
	if n.at(-7) != 1 {
		t.Error("a negative bucket was lost")
	}

	t0 := time.Date(2030, 1, 1, 12, 0, 30, 0, time.UTC)
	l := newAlertLog(t0)
	l.add(t0.Add(2*time.Minute), "a", []time.Time{t0, t0.Add(time.Minute), {}, t0.Add(time.Hour), t0.Add(-48 * time.Hour)})
	p := l.plot("a", t0.Add(2*time.Minute))
	if got := barsOf(p); p.Total != 4 || p.Minutes != 3 || fmt.Sprint(got) != "map[2030-01-01T12:00:00Z:1 2030-01-01T12:01:00Z:1 2030-01-01T12:02:00Z:2]" {
		t.Errorf("plot of a: total %d over %d minutes, bars %v", p.Total, p.Minutes, got)
	}
	if p := l.plot("nobody", t0); p.Total != 0 || len(p.Bars) != 0 || p.Minutes != 1 {
		t.Errorf("plot of an unknown truck: %+v", p)
	}
	// The plot reaches back as far as the ring at most.
	p = l.plot("a", t0.Add(10*time.Hour))
	if p.Minutes != truckAlertBuckets || p.Total != 0 {
		t.Errorf("ten hours on: %d minutes, %d alerts", p.Minutes, p.Total)
	}
}

func barsOf(p *alertPlot) map[string]uint32 {
	out := map[string]uint32{}
	for _, b := range p.Bars {
		out[b.Minute] = b.Count
	}
	return out
}

var barRE = regexp.MustCompile(`data-minute="([^"]+)" data-alerts="(\d+)"`)

// plotBars reads the alert plot's bars back from a page: minute, count.
func plotBars(html string) map[string]int {
	out := map[string]int{}
	for _, m := range barRE.FindAllStringSubmatch(html, -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] += n
	}
	return out
}

// parts follows a page's live stream (/live/...) and sends each message.
func (c *client) parts(ctx context.Context, path string) <-chan map[string]string {
	c.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		c.t.Fatalf("%s: %s", path, resp.Status)
	}
	ch := make(chan map[string]string, 64)
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
			var m map[string]string
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				c.t.Errorf("%s message: %v", path, err)
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

// nextParts waits, bounded by ctx, for the stream's next message.
func nextParts(t *testing.T, ctx context.Context, ch <-chan map[string]string, what string) map[string]string {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatalf("the stream ended waiting for %s", what)
		}
		return m
	case <-ctx.Done():
		t.Fatalf("waiting for %s: %v", what, ctx.Err())
	}
	return nil
}

// waitParts reads messages until cond holds for the parts seen (the
// latest of each), or fails when ctx ends.
func waitParts(t *testing.T, ctx context.Context, ch <-chan map[string]string, seen map[string]string, what string, cond func(map[string]string) bool) {
	t.Helper()
	for !cond(seen) {
		for id, html := range nextParts(t, ctx, ch, what) {
			seen[id] = html
		}
	}
}

// TestLivePagesAlertsAndGroups runs a console on a broker where the test
// plays two trucks: it publishes their statuses (truck-a in group early)
// and the alerts they forward. It checks the group filter (page, stream,
// bad input), the alerts plots (fleet-wide on /alerts and truck-a's on its
// page: counts per minute, alerts from a wrong clock counted now, too old
// ones left out), and that the truck, model and alerts pages' streams
// bring a change without a reload, and nothing for another truck's.
func TestLivePagesAlertsAndGroups(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	url := "tcp://" + b.Addr()
	dir := t.TempDir()
	s, err := New(Config{Listen: "127.0.0.1:0", UsersFile: writeUsers(t, dir), Fleet: fleetview.Config{Broker: url},
		UpdateInterval: 100 * time.Millisecond, ChartInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	mq := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-trucks"))
	if tok := mq.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { mq.Disconnect(100) })
	pub := func(topic string, retain bool, payload []byte) {
		t.Helper()
		if tok := mq.Publish(topic, 1, retain, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	var seenAt time.Time
	report := func(truck string, version int64, groups ...string) {
		t.Helper()
		seenAt = seenAt.Add(time.Second) // each status a new one
		if seenAt.IsZero() || seenAt.Before(time.Now().Add(-time.Hour)) {
			seenAt = time.Now().UTC().Truncate(time.Second)
		}
		data, _ := json.Marshal(status.Status{Schema: status.Schema, Online: true, Model: "m", Version: version, Desired: version,
			Phase: "committed", Groups: groups, LastSeen: seenAt})
		pub(topics.TruckStatus(truck), true, data)
		want := seenAt
		if err := fleetsim.WaitFor(ctx, truck+"'s status in the view", func() bool {
			st, _, ok := s.view.Truck(truck)
			return ok && st.LastSeen.Equal(want)
		}); err != nil {
			t.Fatal(err)
		}
	}
	forward := func(truck string, times ...string) {
		t.Helper()
		var b strings.Builder
		b.WriteString("[")
		for i, tm := range times {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"id":"p%d","model":"m","model_version":1,"label":"pos","score":0.9,"time":%q}`, i, tm)
		}
		b.WriteString("]")
		pub(topics.TruckPredictions(truck, "m"), false, []byte(b.String()))
	}
	report("truck-a", 1, "early", "north")
	report("truck-b", 1)

	c := newClient(t, s.URL())
	if code := c.login("vic", "vic-secret"); code != http.StatusSeeOther {
		t.Fatalf("login: %d", code)
	}

	t.Run("group filter", func(t *testing.T) {
		code, page := c.do("GET", "/?group=early", nil)
		if code != http.StatusOK || !strings.Contains(page, `id="truck-truck-a"`) || strings.Contains(page, `id="truck-truck-b"`) {
			t.Errorf("/?group=early: %d, want truck-a alone:\n%s", code, page)
		}
		for _, want := range []string{`<option value="early">`, `<option value="north">`, `data-f="groups">early, north</td>`} {
			if !strings.Contains(page, want) {
				t.Errorf("the fleet page lacks %q", want)
			}
		}
		for _, bad := range []string{"/?group=a,b", "/?group=a%20b", "/live?group=" + strings.Repeat("g", 65)} {
			if code, _ := c.do("GET", bad, nil); code != http.StatusBadRequest {
				t.Errorf("GET %s: %d, want 400", bad, code)
			}
		}
		lctx, lcancel := context.WithTimeout(ctx, 30*time.Second)
		defer lcancel()
		rows := map[string]Row{}
		waitLive(t, lctx, c.live(lctx, "?group=north"), rows, "truck-a in group north", func(rs map[string]Row) bool {
			return rs["truck-a"].Groups == "early, north"
		})
		if _, ok := rows["truck-b"]; ok {
			t.Error("the stream of group north has truck-b")
		}
		if _, page := c.do("GET", "/trucks/truck-a", nil); !strings.Contains(page, `<a href="/?group=north">north</a>`) {
			t.Error("the truck page does not link its groups to the filter")
		}
	})

	t.Run("alerts plot", func(t *testing.T) {
		t0 := time.Now().UTC()
		m3, m1 := t0.Add(-3*time.Minute), t0.Add(-time.Minute)
		minute := func(tm time.Time) string { return tm.Truncate(time.Minute).Format(time.RFC3339) }
		rfc := func(tm time.Time) string { return tm.Format(time.RFC3339Nano) }
		forward("truck-a", rfc(m3), rfc(m3), rfc(m1))
		// truck-b: four a minute ago; one from a clock ahead and one
		// without a time, both counted now; one too old to plot.
		forward("truck-b", rfc(m1), rfc(m1), rfc(m1), rfc(m1), rfc(t0.Add(time.Hour)), "soon", rfc(t0.Add(-72*time.Hour)))
		var page string
		if err := fleetsim.WaitFor(ctx, "nine alerts on /alerts", func() bool {
			_, page = c.do("GET", "/alerts", nil)
			return strings.Contains(page, `data-total="9"`)
		}); err != nil {
			t.Fatalf("%v:\n%s", err, page)
		}
		bars := plotBars(page)
		later := 0
		for m, n := range bars {
			if m >= minute(t0) {
				later += n
			}
		}
		if bars[minute(m3)] != 2 || bars[minute(m1)] != 5 || later != 2 || len(bars) > 4 {
			t.Errorf("fleet plot bars %v: want 2 at %s, 5 at %s and 2 from %s on", bars, minute(m3), minute(m1), minute(t0))
		}
		if !strings.Contains(page, `href="/alerts"`) {
			t.Error("no link to /alerts in the nav")
		}
		_, page = c.do("GET", "/trucks/truck-a", nil)
		if bars := plotBars(page); len(bars) != 2 || bars[minute(m3)] != 2 || bars[minute(m1)] != 1 {
			t.Errorf("truck-a's plot bars %v: want 2 at %s and 1 at %s", bars, minute(m3), minute(m1))
		}
		if code, _ := c.do("GET", "/live/trucks/truck-99", nil); code != http.StatusNotFound {
			t.Errorf("the stream of an unknown truck: %d, want 404", code)
		}
		if code, _ := c.do("GET", "/live/models/a+b", nil); code != http.StatusBadRequest {
			t.Errorf("the stream of a bad model name: %d, want 400", code)
		}
		if code, _ := newClient(t, s.URL()).do("GET", "/live/alerts", nil); code != http.StatusUnauthorized {
			t.Errorf("a page stream without a login: %d, want 401", code)
		}
	})

	t.Run("live pages", func(t *testing.T) {
		lctx, lcancel := context.WithTimeout(ctx, 60*time.Second)
		defer lcancel()
		truckCh := c.parts(lctx, "/live/trucks/truck-a")
		first := nextParts(t, lctx, truckCh, "the truck page's parts")
		for _, id := range truckParts {
			if first[id] == "" {
				t.Errorf("the first message lacks %s: %v", id, first)
			}
		}
		if !strings.Contains(first["truck-facts"], `id="serving">v1<`) {
			t.Errorf("truck-facts: %s", first["truck-facts"])
		}
		modelCh := c.parts(lctx, "/live/models/m")
		model := nextParts(t, lctx, modelCh, "the model page's parts")
		if !strings.Contains(model["model-versions"], "v1</td>") || strings.Contains(model["model-versions"], "v2</td>") {
			t.Errorf("model-versions: %s", model["model-versions"])
		}
		alertsCh := c.parts(lctx, "/live/alerts")
		alerts := nextParts(t, lctx, alertsCh, "the alerts page's parts")

		// Another truck's change: nothing for truck-a's page. The pause
		// lets a wrong message go out before truck-a's change comes.
		report("truck-b", 1, "late")
		forward("truck-b", time.Now().UTC().Format(time.RFC3339Nano))
		time.Sleep(3 * s.cfg.UpdateInterval)
		// truck-a's: the page's next message has it.
		report("truck-a", 2, "early", "north")
		msg := nextParts(t, lctx, truckCh, "truck-a on v2")
		if !strings.Contains(msg["truck-facts"], `id="serving">v2<`) {
			t.Errorf("the truck page's next message after truck-b's and truck-a's changes: %v", msg)
		}
		if _, ok := msg["truck-events"]; ok {
			t.Error("the events part was sent again, unchanged")
		}
		waitParts(t, lctx, modelCh, model, "v2 in the model page's table and chart", func(p map[string]string) bool {
			return strings.Contains(p["model-versions"], "v2</td>") && strings.Contains(p["model-progress"], `class="v2"`)
		})

		// An alert of truck-a's: its page's plot and the fleet's.
		now := time.Now().UTC()
		forward("truck-a", now.Format(time.RFC3339Nano))
		seen := map[string]string{}
		waitParts(t, lctx, truckCh, seen, "the new alert on the truck page", func(p map[string]string) bool {
			return strings.Contains(p["truck-alerts"], `data-total="4"`)
		})
		if bars := plotBars(seen["truck-alerts"]); bars[now.Truncate(time.Minute).Format(time.RFC3339)] < 1 {
			t.Errorf("truck-a's live plot %v has no alert at %s", bars, now.Truncate(time.Minute).Format(time.RFC3339))
		}
		waitParts(t, lctx, alertsCh, alerts, "the new alert on the alerts page", func(p map[string]string) bool {
			return strings.Contains(p["alerts-plot"], `data-total="11"`)
		})
	})
}
