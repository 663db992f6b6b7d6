//go:build linux

package chaos

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHTTPFaultProxy(t *testing.T) {
	file := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "model.tar.gz", time.Unix(0, 0), bytes.NewReader(file))
	}))
	defer origin.Close()
	p, err := NewHTTPFaultProxy(strings.TrimPrefix(origin.URL, "http://"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}

	tests := []struct {
		fault      Fault
		rng        string // Range header
		wantStatus int
		check      func(t *testing.T, body []byte, readErr error)
	}{
		{Pass, "", 200, func(t *testing.T, b []byte, err error) {
			if err != nil || !bytes.Equal(b, file) {
				t.Errorf("pass: %d bytes, err %v", len(b), err)
			}
		}},
		{Pass, "bytes=100-", 206, func(t *testing.T, b []byte, err error) {
			if err != nil || !bytes.Equal(b, file[100:]) {
				t.Errorf("range: %d bytes, err %v", len(b), err)
			}
		}},
		{CutMidBody, "", 200, func(t *testing.T, b []byte, err error) {
			if err == nil || len(b) >= len(file) || !bytes.Equal(b, file[:len(b)]) {
				t.Errorf("cut: %d bytes, err %v; want a clean prefix and an error", len(b), err)
			}
		}},
		{FlipByte, "", 200, func(t *testing.T, b []byte, err error) {
			if err != nil || len(b) != len(file) {
				t.Fatalf("flip: %d bytes, err %v", len(b), err)
			}
			diff := 0
			for i := range b {
				x := b[i] ^ file[i]
				for ; x != 0; x &= x - 1 {
					diff++
				}
			}
			if diff != 1 {
				t.Errorf("flip: %d bits differ, want 1", diff)
			}
		}},
		{NotFound, "", 404, nil},
		{Unavailable, "", 503, nil},
		{CaptivePortal, "bytes=100-", 200, func(t *testing.T, b []byte, err error) {
			if !bytes.Contains(b, []byte("<html>")) {
				t.Errorf("captive: %q", b)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(string(tc.fault), func(t *testing.T) {
			p.Force(tc.fault)
			req, _ := http.NewRequest("GET", "http://"+p.Addr()+"/artifacts/m/1/model.tar.gz", nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			b, rerr := io.ReadAll(resp.Body)
			if tc.check != nil {
				tc.check(t, b, rerr)
			}
		})
	}

	// A stall holds the body until the link heals.
	t.Run("stall", func(t *testing.T) {
		p.SetFaultRate(1) // not healed, so the stall lasts its drawn time or until healed
		p.Force(Stall)
		resp, err := client.Get("http://" + p.Addr() + "/artifacts/m/1/model.tar.gz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		time.AfterFunc(200*time.Millisecond, func() { p.SetFaultRate(0) })
		b, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(b, file) {
			t.Errorf("stall: %d bytes, err %v", len(b), err)
		}
	})

	tr := p.TrafficFor("/artifacts/", 0)
	if tr.Requests != len(tests)+1 || tr.Flips != 1 {
		t.Errorf("traffic %+v", tr)
	}
}

// TestScheduleDeterministic: the same seed gives the same plan, which is
// what makes a failing seed replayable.
func TestScheduleDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		a, b := makeSchedule(seed), makeSchedule(seed)
		if a.window != b.window || a.httpRate != b.httpRate || a.linkRate != b.linkRate || len(a.steps) != len(b.steps) {
			t.Fatalf("seed %d: two different plans", seed)
		}
		for i := range a.steps {
			if a.steps[i].kind != b.steps[i].kind || a.steps[i].at != b.steps[i].at || a.steps[i].down != b.steps[i].down {
				t.Fatalf("seed %d: step %d differs", seed, i)
			}
			if a.steps[i].at >= a.window {
				t.Fatalf("seed %d: step %d at %s, after the window", seed, i, a.steps[i].at)
			}
		}
	}
}
