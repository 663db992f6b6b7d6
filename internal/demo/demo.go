// Package demo is `linkedge demo`: the whole mission on one machine, from
// real parts (see package fleetsim), told as it happens.
//
//  1. Start the fleet broker, the local registry and its publisher, and
//     three trucks with their local buses, sensors and an HTTP application.
//  2. Approve v1 of the APS model: every truck downloads, checks and serves it.
//  3. Take truck 3 offline and approve v2: trucks 1 and 2 switch while
//     serving, without a failed request; truck 3 keeps predicting on v1.
//  4. Bring truck 3 back: it catches up.
//  5. Print a summary and exit 0 if every step held.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/fleetsim"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// Config is the demo's settings.
type Config struct {
	// Dir keeps all state; empty means a temporary folder, removed at the end.
	Dir string
	// Trucks in the fleet, at least 2. Default 3; the last one goes offline.
	Trucks int
	// Broker is an external fleet broker URL; empty runs the embedded one.
	Broker string
	// LinkRate limits each truck's link, bytes/s, to show downloads
	// progressing; 0 means unlimited.
	LinkRate int
	// Probation of each truck after a switch. Default 2s.
	Probation time.Duration
	// CloudOnly starts the broker, the registry (v1 approved, v2 pending)
	// and the publisher, prints how to attach real agents, and runs until
	// ctx ends.
	CloudOnly bool
	// Containers runs v2 in a serving container on the local Docker
	// Engine: the trucks start with the container runtime, and v2 is added
	// to the registry with the image it runs in, so the update swaps an
	// in-process v1 for a container. Without an engine Run fails with
	// ErrNoEngine.
	Containers bool
	// Binary is the linkedge executable packaged into the serving image
	// with Containers; default the running one.
	Binary string
	// Console serves the fleet console (internal/console) on the demo
	// fleet, prints its URL and a login, waits ConsoleWait before the first
	// approval so that a browser can be opened, and goes on serving after
	// the story until ctx ends.
	Console bool
	// ConsoleListen is the console's address. Default 127.0.0.1:9890.
	ConsoleListen string
	// ConsoleWait is the pause before the first approval with Console.
	ConsoleWait time.Duration
	// Out receives the story; Log the parts' logs (default: discarded).
	Out io.Writer
	Log *slog.Logger
}

type story struct {
	out   io.Writer
	start time.Time
	mu    sync.Mutex
}

func (s *story) say(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.out, "[%5.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

// Run plays the demo. It returns an error if any promise of the story was
// broken (a truck not updated, a failed request during a switch...).
func Run(ctx context.Context, cfg Config) error {
	if cfg.Trucks < 2 {
		cfg.Trucks = 3
	}
	if cfg.Probation <= 0 {
		cfg.Probation = 2 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "linkedge-demo-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	st := &story{out: cfg.Out, start: time.Now()}
	if cfg.CloudOnly {
		return cloudOnly(ctx, cfg, st)
	}
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute+cfg.ConsoleWait)
	defer cancel()

	st.say("starting the fleet: broker, local registry + publisher, %d trucks (state in %s)", cfg.Trucks, cfg.Dir)
	f, err := fleetsim.Start(ctx, fleetsim.Options{Dir: cfg.Dir, Trucks: cfg.Trucks, FleetBroker: cfg.Broker,
		Probation: cfg.Probation, LinkRate: cfg.LinkRate, Logger: cfg.Log})
	if err != nil {
		return err
	}
	var box *containers // with cfg.Containers
	defer func() {
		f.Close()   // the agents remove their containers...
		box.close() // ...before the image goes
	}()
	st.say("fleet broker %s, artifacts at %s", f.BrokerURL, f.Publisher.ArtifactBaseURL())
	for _, t := range f.Trucks {
		st.say("%s: HTTP http://%s/invocations, local bus tcp://%s", t.ID, t.Agent.HTTPAddr(), t.Agent.LocalBrokerAddr())
	}
	if cfg.Containers {
		if box, err = startContainers(ctx, cfg, f, st); err != nil {
			return err
		}
	}
	stopWatch, cloud, err := watch(f.BrokerURL, st)
	if err != nil {
		return err
	}
	defer stopWatch()
	if cfg.Console {
		cs, err := startConsole(ctx, cfg, f, st)
		if err != nil {
			return err
		}
		defer cs.Close()
		if cfg.ConsoleWait > 0 {
			st.say("waiting %s for the console to be opened", cfg.ConsoleWait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(cfg.ConsoleWait):
			}
		}
		defer func() {
			st.say("the console stays up on the fleet until interrupted (Ctrl-C)")
			<-outer.Done()
		}()
	}

	wait := func(what string, cond func() bool) error {
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		defer wcancel()
		return fleetsim.WaitFor(wctx, what, cond)
	}
	approve := func(data []byte, image string) (int64, error) {
		e, err := f.Register(ctx, data)
		if err != nil {
			return 0, err
		}
		st.say("registry: %s v%d registered (sha256 %s…)", e.Model, e.Version, e.SHA256[:12])
		if image != "" {
			if _, err := f.Registry.SetImage(e.Model, e.Version, image); err != nil {
				return 0, err
			}
			st.say("registry: %s v%d runs in the container image %s", e.Model, e.Version, image)
		}
		if _, err := f.Registry.Approve(e.Model, e.Version, "demo"); err != nil {
			return 0, err
		}
		st.say("registry: %s v%d APPROVED", e.Model, e.Version)
		return e.Version, nil
	}

	// Step 1: v1 everywhere.
	v1, err := approve(apsmodels.V1(), "")
	if err != nil {
		return err
	}
	if err := wait("v1 on every truck", func() bool { return onVersion(f.Trucks, v1) }); err != nil {
		return err
	}
	st.say("every truck serves v%d", v1)
	time.Sleep(time.Second) // let predictions flow on v1 for the summary

	// Step 2: truck N offline, v2 approved.
	last := f.Trucks[len(f.Trucks)-1]
	online := f.Trucks[:len(f.Trucks)-1]
	last.Link.Cut()
	cloudAtCut := cloud.get(last.ID)
	st.say("%s loses its connection (link cut)", last.ID)
	if err := wait(last.ID+" offline", func() bool { return !last.Agent.Status().Online }); err != nil {
		return err
	}
	failedBefore := failures(f.Trucks)
	approved := time.Now()
	v2Image := ""
	if box != nil {
		v2Image = box.Ref
	}
	v2, err := approve(apsmodels.V2(), v2Image)
	if err != nil {
		return err
	}
	if err := wait("v2 on online trucks", func() bool { return onVersion(online, v2) }); err != nil {
		return err
	}
	switchTime := time.Since(approved)
	st.say("online trucks serve v%d, %s after approval", v2, switchTime.Round(10*time.Millisecond))
	offlinePred := last.Load.Predictions.Load()
	time.Sleep(2 * time.Second)
	offlineServed := last.Load.Predictions.Load() - offlinePred
	st.say("%s, still offline, serves v%d: %d predictions in the last 2s", last.ID, last.Version(), offlineServed)

	// Step 3: truck N back.
	last.Link.Restore()
	st.say("%s reconnects", last.ID)
	if err := wait(last.ID+" catches up", func() bool { return onVersion([]*fleetsim.Truck{last}, v2) }); err != nil {
		return err
	}
	caughtUp := time.Since(approved)
	st.say("%s serves v%d", last.ID, v2)
	time.Sleep(time.Second)
	st.say("%s forwarded %d alerts it raised while offline (kept on disk until the link came back)", last.ID, cloud.get(last.ID)-cloudAtCut)
	failed := failures(f.Trucks) - failedBefore
	var problems []string
	if box != nil {
		for _, t := range f.Trucks {
			id, err := box.serving(ctx, t.ID)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("%s: list its containers: %v", t.ID, err))
			case id == "":
				problems = append(problems, t.ID+" serves v2 without a container")
			default:
				st.say("%s serves v%d from container %.12s, swapped from v%d in process", t.ID, v2, id, v1)
			}
		}
	}

	summary(cfg.Out, f, approved, cloud)
	if failed != 0 {
		problems = append(problems, fmt.Sprintf("%d HTTP requests failed during the update", failed))
	}
	if offlineServed == 0 {
		problems = append(problems, last.ID+" served no predictions while offline")
	}
	if len(problems) > 0 {
		return fmt.Errorf("demo failed: %s", strings.Join(problems, "; "))
	}
	fmt.Fprintf(cfg.Out, "\nOK: v%d reached the online trucks %s after approval with 0 failed requests; %s caught up %s after approval, once back online.\n",
		v2, switchTime.Round(10*time.Millisecond), last.ID, caughtUp.Round(10*time.Millisecond))
	return nil
}

func onVersion(trucks []*fleetsim.Truck, v int64) bool {
	for _, t := range trucks {
		s := t.Agent.Status()
		if s.Version != v || s.Phase != "committed" {
			return false
		}
	}
	return true
}

func failures(trucks []*fleetsim.Truck) int64 {
	var n int64
	for _, t := range trucks {
		n += t.Load.HTTPFailed.Load()
	}
	return n
}

func summary(w io.Writer, f *fleetsim.Fleet, approved time.Time, cloud *cloudAlerts) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TRUCK\tVERSION\tPREDICTIONS (MQTT)\tALERTS\tALERTS IN THE CLOUD\tHTTP OK\tHTTP FAILED\tANSWERS BY VERSION\tUPDATE TIME")
	for _, t := range f.Trucks {
		s := t.Agent.Status()
		upd := "-"
		if u := t.Agent.LastUpdate(); !u.IsZero() && u.After(approved) {
			upd = u.Sub(approved).Round(10 * time.Millisecond).String()
		}
		by := t.Load.ByVersion()
		var parts []string
		for v := int64(1); v <= s.Version; v++ {
			if n := by[fmt.Sprint(v)]; n > 0 {
				parts = append(parts, fmt.Sprintf("v%d %d", v, n))
			}
		}
		fmt.Fprintf(tw, "%s\tv%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", t.ID, s.Version, s.Predictions, s.Alerts, cloud.get(t.ID),
			t.Load.HTTPOK.Load(), t.Load.HTTPFailed.Load(), strings.Join(parts, ", "), upd)
	}
	tw.Flush()
}

// cloudAlerts counts the alerts each truck forwarded, as received from the
// fleet broker.
type cloudAlerts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *cloudAlerts) get(truck string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[truck]
}

// watch follows the fleet as an operator would: from the broker, through
// the trucks' retained status, their events and the alerts they forward.
func watch(brokerURL string, st *story) (stop func(), cloud *cloudAlerts, err error) {
	cloud = &cloudAlerts{n: map[string]int{}}
	type seen struct {
		version int64
		phase   string
		online  bool
		pct     int
	}
	var mu sync.Mutex
	last := map[string]seen{}
	onStatus := func(_ paho.Client, m paho.Message) {
		s, err := status.Parse(m.Payload())
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		prev, ok := last[s.Truck]
		cur := seen{version: s.Version, phase: s.Phase, online: s.Online}
		if s.Total > 0 && s.Phase == "downloading" {
			cur.pct = int(100 * s.Downloaded / s.Total)
		}
		if !s.Online {
			cur.version = prev.version // an older agent's last will carries no version
		}
		if ok && cur == prev {
			return
		}
		last[s.Truck] = cur
		switch {
		case !s.Online:
			st.say("  %s is offline (last will)", s.Truck)
		case s.Phase == "downloading" && s.Total > 0:
			st.say("  %s: v%d, downloading v%d: %d/%d bytes", s.Truck, s.Version, s.Desired, s.Downloaded, s.Total)
		case s.Phase == "idle" && !ok:
			st.say("  %s: online, v%d", s.Truck, s.Version)
		case s.Phase != prev.phase || s.Version != prev.version:
			st.say("  %s: v%d, %s", s.Truck, s.Version, phaseText(s))
		}
	}
	// The last will is on the presence topic; the status stays as the
	// truck last reported it.
	present := map[string]bool{}
	onPresence := func(_ paho.Client, m paho.Message) {
		truck, ok := topics.ParseTruckPresence(m.Topic())
		online, err := status.ParsePresence(m.Payload())
		if !ok || err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		was, known := present[truck]
		present[truck] = online
		switch {
		case !online && (!known || was):
			st.say("  %s is offline", truck)
		case online && known && !was:
			st.say("  %s is back online", truck)
		}
	}
	onEvent := func(_ paho.Client, m paho.Message) {
		e, err := status.ParseEvent(m.Payload())
		if err != nil || e.Kind == status.EventUpdateStarted {
			return
		}
		detail := ""
		if e.Detail != "" {
			detail = ": " + e.Detail
		}
		st.say("  %s event %s v%d%s", e.Truck, e.Kind, e.Version, detail)
	}
	onAlert := func(_ paho.Client, m paho.Message) {
		if truck, _, ok := topics.ParseTruckPredictions(m.Topic()); ok {
			batch, err := server.DecodeForwarded(m.Payload())
			if err != nil {
				return
			}
			cloud.mu.Lock()
			cloud.n[truck] += len(batch)
			cloud.mu.Unlock()
		}
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("linkedge-demo-watch").
		SetAutoReconnect(true).SetOrderMatters(true).
		SetOnConnectHandler(func(c paho.Client) {
			c.SubscribeMultiple(map[string]byte{
				topics.AllTruckStatus():                                   1,
				topics.AllTruckPresence():                                 1,
				topics.TruckEvents(topics.Wildcard):                       1,
				topics.TruckPredictions(topics.Wildcard, topics.Wildcard): 1,
			}, func(c paho.Client, m paho.Message) {
				switch {
				case strings.HasSuffix(m.Topic(), "/status"):
					onStatus(c, m)
				case strings.HasSuffix(m.Topic(), "/presence"):
					onPresence(c, m)
				case strings.HasSuffix(m.Topic(), "/events"):
					onEvent(c, m)
				default:
					onAlert(c, m)
				}
			})
		}))
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, nil, fmt.Errorf("watch fleet: connect to %s: %v", brokerURL, t.Error())
	}
	return func() { c.Disconnect(100) }, cloud, nil
}

func phaseText(s *status.Status) string {
	switch s.Phase {
	case "committed":
		return "committed"
	case "probation":
		return fmt.Sprintf("switched to v%d, on probation", s.Desired)
	default:
		if s.Desired != 0 && s.Desired != s.Version {
			return fmt.Sprintf("%s v%d", strings.ReplaceAll(s.Phase, "_", " "), s.Desired)
		}
		return strings.ReplaceAll(s.Phase, "_", " ")
	}
}

// cloudOnly runs the fleet's cloud side alone, for real agents to attach to.
func cloudOnly(ctx context.Context, cfg Config, st *story) error {
	f, err := fleetsim.Start(ctx, fleetsim.Options{Dir: cfg.Dir, Trucks: -1, FleetBroker: cfg.Broker, Logger: cfg.Log})
	if err != nil {
		return err
	}
	defer f.Close()
	for i, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		e, err := f.Register(ctx, data)
		if err != nil {
			return err
		}
		if i == 0 {
			if _, err := f.Registry.Approve(e.Model, e.Version, "demo"); err != nil {
				return err
			}
		}
	}
	pub := strings.TrimSuffix(f.KeyFile(), ".key") + ".pub"
	if err := release.WritePublicKeyFile(pub, f.PubKey); err != nil {
		return err
	}
	stop, _, err := watch(f.BrokerURL, st)
	if err != nil {
		return err
	}
	defer stop()
	if cfg.Console {
		cs, err := startConsole(ctx, cfg, f, st)
		if err != nil {
			return err
		}
		defer cs.Close()
	}
	st.say("cloud side up: fleet broker %s, registry %s (v1 approved, v2 pending), artifacts %s", f.BrokerURL, f.Registry.Dir(), f.Publisher.ArtifactBaseURL())
	st.say("attach a truck:   linkedge agent --truck truck-9 --model aps-failure --fleet %s --trusted-key %s --data /tmp/truck-9 --http 127.0.0.1:18080 --local-broker 127.0.0.1:11883", f.BrokerURL, pub)
	st.say("roll out v2:      linkedge registry approve --registry %s --model aps-failure --version 2", f.Registry.Dir())
	st.say("Ctrl-C stops it")
	<-ctx.Done()
	return nil
}
