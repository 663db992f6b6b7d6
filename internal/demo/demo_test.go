package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/container/containertest"
	"github.com/linkedge/linkedge/internal/fleetsim"
)

// TestDemo plays the README's first command and checks its story.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), Config{Dir: t.TempDir(), Probation: time.Second, Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"every truck serves v1", "truck-3 loses its connection", "online trucks serve v2",
		"still offline, serves v1", "truck-3 serves v2", "TRUCK", "OK: v2 reached the online trucks"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}

// TestDemoContainers plays `linkedge demo --containers` (issue 12 #12): with
// a Docker Engine, every truck swaps from v1 in process to v2 in a serving
// container built from this tree, without a failed request.
func TestDemoContainers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	containertest.Engine(ctx, t) // skipped without an engine, outside CI
	bin := filepath.Join(t.TempDir(), "linkedge")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/linkedge/linkedge").CombinedOutput(); err != nil {
		t.Fatalf("build linkedge: %v\n%s", err, out)
	}
	var out bytes.Buffer
	err := Run(ctx, Config{Dir: t.TempDir(), Trucks: 2, Probation: time.Second, Out: &out, Containers: true, Binary: bin})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"runs in the container image linkedge-demo-serve@sha256:", "truck-1 serves v2 from container",
		"truck-2 serves v2 from container", "OK: v2 reached the online trucks"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}

// syncBuffer is a bytes.Buffer for one writer and one reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoConsole plays `linkedge demo --console`: it prints the console's
// URL and a login that works, the console shows every truck on v2 at the
// end, and it stays up until the context ends.
func TestDemoConsole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out syncBuffer
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		// ConsoleWait: the test logs in and opens the live table before
		// the first approval, as an operator following the demo would.
		done <- Run(runCtx, Config{Dir: t.TempDir(), Probation: time.Second, Out: &out, Console: true, ConsoleListen: "127.0.0.1:0", ConsoleWait: 3 * time.Second})
	}()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("demo: %v\n%s", err, out.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("the demo did not stop with its context")
		}
	}()
	loginRE := regexp.MustCompile(`fleet console: (http://\S+) \(log in as demo, password (\S+)\)`)
	waitOut := func(what string, cond func() bool) {
		t.Helper()
		if err := fleetsim.WaitFor(ctx, what, cond); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
	}
	waitOut("the console's URL", func() bool { return loginRE.MatchString(out.String()) })
	m := loginRE.FindStringSubmatch(out.String())
	base, password := m[1], m[2]
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := hc.PostForm(base+"/login", url.Values{"username": {"demo"}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Fatalf("login: %s at %s", resp.Status, resp.Request.URL)
	}
	// The live table, as the page's script reads it: what each truck was
	// shown as, in order.
	type shown struct {
		online  bool
		version int64
	}
	var liveMu sync.Mutex
	seen := map[string][]shown{}
	liveReq, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/live", nil)
	stream, err := (&http.Client{Jar: jar}).Do(liveReq) // no timeout: it streams until ctx ends
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	go func() {
		sc := bufio.NewScanner(stream.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var msg struct {
				Rows map[string]struct {
					Online  bool  `json:"online"`
					Version int64 `json:"version"`
				} `json:"rows"`
			}
			if json.Unmarshal([]byte(data), &msg) != nil {
				continue
			}
			liveMu.Lock()
			for id, r := range msg.Rows {
				if h := seen[id]; len(h) == 0 || h[len(h)-1] != (shown{r.Online, r.Version}) {
					seen[id] = append(h, shown{r.Online, r.Version})
				}
			}
			liveMu.Unlock()
		}
	}()
	waitOut("the end of the story", func() bool { return strings.Contains(out.String(), "stays up on the fleet") })
	// Live, without a reload: every truck went from v1 to v2 on the open
	// page, and the last one was shown offline on v1 before it caught up.
	waitOut("the live table to show every truck online on v2", func() bool {
		liveMu.Lock()
		defer liveMu.Unlock()
		if len(seen) != 3 {
			return false
		}
		for _, h := range seen {
			if h[len(h)-1] != (shown{true, 2}) {
				return false
			}
		}
		return true
	})
	liveMu.Lock()
	ids := slices.Sorted(maps.Keys(seen))
	for _, id := range ids {
		h := seen[id]
		if !slices.Contains(h, shown{true, 1}) {
			t.Errorf("the live table never showed %s online on v1: %v", id, h)
		}
	}
	if last := seen[ids[len(ids)-1]]; !slices.Contains(last, shown{false, 1}) {
		t.Errorf("the live table never showed %s offline on v1 before it caught up: %v", ids[len(ids)-1], last)
	}
	liveMu.Unlock()
	resp, err = hc.Get(base + "/?version=2&online=yes")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `<span id="total">3</span>`) {
		t.Errorf("the console does not show three trucks online on v2:\n%s", page)
	}
}
