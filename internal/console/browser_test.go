package console

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/linkedge/linkedge/internal/fleetsim"
)

// chromium returns the path of Debian's chromium, or skips the test when
// it is missing outside CI (in CI the browser test must run).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH, and CI is set: install it (deployments/scripts/setup.sh, apt-get install chromium)")
	}
	t.Skip("no chromium on PATH: install Debian's chromium (deployments/scripts/setup.sh) to run the browser test")
	return ""
}

// TestBrowser drives the console in headless Chromium against a real fleet
// (fleetsim): it logs in, sees three trucks, approves v2 in a second tab
// and watches the first tab's table move to v2 without a reload, pins a
// truck and watches it go back to v1, then unpins it and watches its page
// show v2 without a reload. Screenshots go to
// $LINKEDGE_CONSOLE_SCREENSHOTS (default: a temporary folder).
func TestBrowser(t *testing.T) {
	k := newBrowserKit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k.ctx = ctx
	f := startFleet(t, ctx)
	s, audit := startConsole(t, ctx, f.Fleet)
	base := s.URL()
	k.base = base
	browser, do, until, shot, login := k.open, k.do, k.until, k.shot, k.login
	shots := k.shots

	// Two browsers: one watches the fleet table while the other acts.
	// (Two tabs of one headless browser do not do: the one behind stops
	// being painted, and clicks and screenshots in it wait for ever.)
	tabA, tabB := browser(), browser()
	// versionsJS is the versions the table shows, by truck.
	const versionsJS = `Object.fromEntries([...document.querySelectorAll("#fleet tbody tr")].map(tr => [tr.dataset.id, tr.querySelector('[data-f="version"]').textContent + "/" + tr.querySelector('[data-f="phase"]').textContent]))`

	// Log in; the table shows three trucks on v1, live.
	login(tabA)
	login(tabB)
	until(tabA, "three trucks on v1, live", `document.querySelectorAll("#fleet tbody tr").length === 3 && document.getElementById("live").textContent === "live" && [...document.querySelectorAll('#fleet [data-f="version"]')].every(td => td.textContent === "v1")`)
	do(tabA, "mark the page", chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`)(ctx, tg)
		return chromedp.Void{}, err
	}))
	shot(tabA, "fleet-v1.png")

	// Approve v2 in the other browser, through the confirmation page.
	do(tabB, "approve v2",
		chromedp.Navigate(base+"/models/aps-failure"),
		chromedp.Click(chromedp.CSS(fmt.Sprintf("#approve-%d", f.v2.Version))),
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
	)
	shot(tabB, "confirm-approve.png")
	do(tabB, "confirm", chromedp.Click(chromedp.CSS(`#confirm`)), chromedp.WaitVisible(chromedp.CSS(`p.message`)))
	until(tabB, "the approval's result", `document.querySelector("p.message").textContent.includes("approved aps-failure version 2")`)

	// The first tab's table moves to v2 by itself.
	until(tabA, "every truck on v2 in the table, without a reload", `window.notReloaded === true && (() => { const v = `+versionsJS+`; return Object.keys(v).length === 3 && Object.values(v).every(x => x === "v2/committed"); })()`)
	shot(tabA, "fleet-v2.png")

	// Pin truck-2 to v1 from its page; the table shows it go back.
	do(tabB, "pin truck-2",
		chromedp.Navigate(base+"/trucks/truck-2"),
		chromedp.SetValue(chromedp.CSS(`input[name="version"]`), "1"),
		chromedp.Click(chromedp.CSS(`#pin`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`p.message`)),
	)
	until(tabB, "the pin's result", `document.querySelector("p.message").textContent.includes("pinned truck-2 to aps-failure version 1")`)
	until(tabA, "truck-2 back on v1 in the table", `window.notReloaded === true && (() => { const v = `+versionsJS+`; return v["truck-2"] === "v1/committed" && v["truck-1"] === "v2/committed"; })()`)
	shot(tabA, "fleet-pinned.png")

	// The truck's page shows its history, and follows the truck live:
	// cleared of its pin in the other browser, truck-2 goes to v2 on the
	// page without a reload.
	do(tabA, "truck page", chromedp.Navigate(base+"/trucks/truck-2"), chromedp.WaitVisible(chromedp.CSS(`table.events`)))
	until(tabA, "update events on the truck page, live", `document.querySelector("table.events").textContent.includes("update_committed") && document.body.dataset.live === "live"`)
	do(tabA, "mark the truck page", chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`)(ctx, tg)
		return chromedp.Void{}, err
	}))
	shot(tabA, "truck-2.png")
	do(tabB, "unpin truck-2",
		chromedp.Navigate(base+"/trucks/truck-2"),
		chromedp.Click(chromedp.CSS(`#unpin`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`p.message`)),
	)
	until(tabB, "the unpin's result", `document.querySelector("p.message").textContent.includes("cleared the pin of truck-2")`)
	until(tabA, "truck-2 on v2 on its page, without a reload", `window.notReloaded === true && document.getElementById("serving").textContent === "v2" && document.getElementById("phase").textContent.startsWith("committed")`)
	shot(tabA, "truck-2-live.png")
	do(tabA, "model page", chromedp.Navigate(base+"/models/aps-failure"), chromedp.WaitVisible(chromedp.CSS(`table.registry`)))
	shot(tabA, "model.png")
	do(tabA, "alerts page", chromedp.Navigate(base+"/alerts"), chromedp.WaitVisible(chromedp.CSS(`svg.alerts`)))
	shot(tabA, "alerts.png")

	// A phone-sized screen: the rows become cards.
	do(tabA, "phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#fleet`)))
	until(tabA, "cards on a phone", `getComputedStyle(document.querySelector("#fleet thead")).display === "none" && document.getElementById("live").textContent === "live"`)
	shot(tabA, "fleet-phone.png")

	if recs := readAudit(t, audit); len(recs) != 6 || recs[1].Kind != ActionApprove || recs[3].Kind != ActionPin || recs[3].Result != "ok" || recs[3].User != "olga" || recs[5].Kind != ActionUnpin || recs[5].Result != "ok" {
		t.Errorf("audit log: %+v", recs)
	}
	t.Logf("screenshots in %s", shots)
}

// browserKit drives headless Chromium for the browser tests: each open()
// is a browser of its own, stopped at the test's end.
type browserKit struct {
	t      *testing.T
	ctx    context.Context
	chrome string
	base   string // the console's URL
	shots  string // where screenshots go
}

// newBrowserKit finds chromium (or skips) and the screenshot folder:
// $LINKEDGE_CONSOLE_SCREENSHOTS, or a temporary one.
func newBrowserKit(t *testing.T) *browserKit {
	t.Helper()
	k := &browserKit{t: t, chrome: chromium(t), shots: os.Getenv("LINKEDGE_CONSOLE_SCREENSHOTS")}
	if k.shots == "" {
		k.shots = t.TempDir()
	} else if err := os.MkdirAll(k.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *browserKit) open() context.Context {
	t := k.t
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(k.chrome), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 800), chromedp.UserDataDir(t.TempDir()))
	alloc, cancelAlloc := chromedp.NewExecAllocator(k.ctx, opts...)
	t.Cleanup(cancelAlloc)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(cancelTab)
	// The first call starts the browser; it lives as long as tab.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return tab
}

func (k *browserKit) do(tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	k.t.Helper()
	sctx, scancel := context.WithTimeout(tab, 60*time.Second)
	defer scancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		k.t.Fatalf("%s: %v", what, err)
	}
}

// until waits, in the page, for a JavaScript condition.
func (k *browserKit) until(tab context.Context, what, cond string) {
	k.t.Helper()
	k.do(tab, what, chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(45*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))(ctx, tg)
		return chromedp.Void{}, err
	}))
}

func (k *browserKit) shot(tab context.Context, name string) {
	k.t.Helper()
	sctx, scancel := context.WithTimeout(tab, 30*time.Second)
	defer scancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		k.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(k.shots, name), png, 0o644); err != nil {
		k.t.Fatal(err)
	}
}

func (k *browserKit) login(tab context.Context) {
	k.t.Helper()
	k.do(tab, "log in",
		chromedp.Navigate(k.base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="username"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="username"]`), "olga"),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), "olga-secret"),
		chromedp.Submit(chromedp.CSS(`form.login`)),
		chromedp.WaitVisible(chromedp.CSS(`#fleet`)),
	)
}

// TestBrowserHalt halts a staged rollout from the model page in headless
// Chromium while its canary runs, sees who halted it and why on the page,
// then resumes it and sees the chart reach three trucks on v2.
func TestBrowserHalt(t *testing.T) {
	k := newBrowserKit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k.ctx = ctx
	f, s, audit := startRolloutFleet(t, ctx)
	k.base = s.URL()
	tab := k.open()
	k.login(tab)
	f.Registry.Approve("aps-failure", 2, "test")
	if err := fleetsim.WaitFor(ctx, "the v2 rollout started", func() bool { r := rolloutOf(t, f); return r != nil && r.Version == 2 }); err != nil {
		t.Fatal(err)
	}
	k.do(tab, "halt from the model page",
		chromedp.Navigate(k.base+"/models/aps-failure"),
		chromedp.WaitVisible(chromedp.CSS(`#halt`)),
		chromedp.SendKeys(chromedp.CSS(`#halt-reason`), "brake alerts doubled"),
		chromedp.Click(chromedp.CSS(`#halt`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
	)
	k.until(tab, "the confirmation names the reason", `document.querySelector("form.confirm").textContent.includes("halt the staged rollout of aps-failure (brake alerts doubled)")`)
	k.shot(tab, "confirm-halt.png")
	k.do(tab, "confirm the halt", chromedp.Click(chromedp.CSS(`#confirm`)), chromedp.WaitVisible(chromedp.CSS(`p.message`)))
	k.until(tab, "the halt's result", `document.querySelector("p.message").textContent.includes("halted the rollout of aps-failure version 2")`)
	if err := fleetsim.WaitFor(ctx, "the halt in the state file", func() bool { r := rolloutOf(t, f); return r != nil && r.Hold != nil }); err != nil {
		t.Fatal(err)
	}
	if err := fleetsim.WaitVersion(ctx, 2, f.Trucks[0]); err != nil {
		t.Fatal(err)
	}
	k.do(tab, "the model page, halted", chromedp.Navigate(k.base+"/models/aps-failure"), chromedp.WaitVisible(chromedp.CSS(`#resume`)))
	k.until(tab, "who halted it and why", `document.getElementById("rollout-state").textContent.includes("halted by olga") && document.getElementById("rollout-state").textContent.includes("brake alerts doubled") && document.querySelector("#chart polyline.v2") !== null`)
	k.shot(tab, "model-halted.png")
	k.do(tab, "resume", chromedp.Click(chromedp.CSS(`#resume`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm`)), chromedp.WaitVisible(chromedp.CSS(`p.message`)))
	k.until(tab, "the resumption's result", `document.querySelector("p.message").textContent.includes("resumed the rollout of aps-failure version 2")`)
	// The page's script keeps the chart current: open the page while v2
	// is still on one truck's way and watch the chart reach three.
	k.do(tab, "the model page", chromedp.Navigate(k.base+"/models/aps-failure"), chromedp.WaitVisible(chromedp.CSS(`#chart`)))
	k.do(tab, "mark the page", chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`)(ctx, tg)
		return chromedp.Void{}, err
	}))
	if err := fleetsim.WaitVersion(ctx, 2, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	k.until(tab, "the chart at three trucks on v2, without a reload", `window.notReloaded === true && document.querySelector("p.legend").textContent.includes("v2: 3 now")`)
	k.shot(tab, "model-chart.png")
	var kinds []string
	for _, r := range readAudit(t, audit) {
		kinds = append(kinds, r.Kind+"/"+r.Result)
	}
	if got := strings.Join(kinds, " "); got != "halt/requested halt/ok resume/requested resume/ok" {
		t.Errorf("audit log: %s", got)
	}
}
