package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// FleetConfig configures `linkedge bench fleet`. Zero values take the
// defaults.
type FleetConfig struct {
	// Trucks is how many simulated trucks run. Default 1,000.
	Trucks int
	// ConnectRate is how many trucks start per second. Default 500.
	ConnectRate int
	// LinkRate limits each truck's download, bytes per second, through a
	// proxy in the bench process (0: unlimited), so downloads overlap as on
	// a real fleet.
	LinkRate int64
	// CanaryPercent is the staged rollout's canary. Default 5; negative
	// skips the staged-rollout and publisher-restart scenarios.
	CanaryPercent int
	// CanarySoak is how long the canary runs before promotion. Default 5 s.
	CanarySoak time.Duration
	// NoRestarts skips the broker restart (and the publisher restart).
	NoRestarts bool
	// Settle, when positive, is how long the connected fleet stays idle
	// before the broker's memory is sampled a second time: 3 s after the
	// connect storm the RSS still holds its garbage and grown goroutine
	// stacks, which the Go runtime frees and returns to the system over
	// the next minutes (a forced collection at least every 2 min, then the
	// scavenger). A fleet broker spends its life in that settled state.
	Settle time.Duration
	// BrokerMemoryLimit, when positive, is the broker's GOMEMLIMIT (bytes):
	// the Go runtime's soft limit, which makes it collect harder as the
	// heap nears it (docs/broker.md, Memory). Zero leaves the runtime's
	// default, no limit.
	BrokerMemoryLimit int64
	// Probation is the agents' probation. Default 1 s: the bench measures
	// the fleet side, and a truck's probation only adds its own length.
	Probation time.Duration
	// TruckLogLevel is the level of the trucks' log (trucks.log in Dir);
	// the zero value is info. `linkedge bench fleet` defaults to warn: at
	// info, 10,000 agents write a few lines each per scenario.
	TruckLogLevel slog.Level
	// Exe is the linkedge binary the broker and the publisher run as;
	// default this process's executable.
	Exe string
	// Dir holds every part's state and logs; default a temporary folder,
	// removed afterwards.
	Dir string
	// TruckDir holds the simulated trucks' data directories. Default a
	// temporary folder in /dev/shm (tmpfs) when there is one, else in Dir:
	// every real truck has a disk of its own, and thousands of trucks'
	// fsyncs queued on one shared disk would measure that disk instead of
	// the fleet. The agents' code path (atomic writes, fsyncs) is the same.
	TruckDir string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (c *FleetConfig) setDefaults() {
	if c.Trucks <= 0 {
		c.Trucks = 1000
	}
	if c.ConnectRate <= 0 {
		c.ConnectRate = 500
	}
	if c.CanaryPercent == 0 {
		c.CanaryPercent = 5
	}
	if c.CanarySoak <= 0 {
		c.CanarySoak = 5 * time.Second
	}
	if c.Probation <= 0 {
		c.Probation = time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// FleetPhase is one scenario's outcome.
type FleetPhase struct {
	Name string
	// Goal says what each truck had to do.
	Goal string
	// Trucks is how many had to; Done how many did within the limit.
	Trucks, Done int
	// Latencies from the phase's start to each truck's goal, sorted.
	Latencies []time.Duration
	Elapsed   time.Duration
	// CPU used and peak RSS sampled during the phase, per process.
	Broker, Publisher, Load procUsage
	// Dropped is what the broker dropped during the phase: QoS 1 messages
	// over a client's in-flight quota and messages over a full write
	// buffer.
	Dropped int64
	// Releases counts release documents (distinct serials) the fleet saw
	// during the phase.
	Releases int
	// ArtifactBytes is what the publisher's artifact server sent.
	ArtifactBytes int64
	Note          string
}

// Percentile returns the p-th percentile (0–100) of the latencies.
func (p FleetPhase) Percentile(q float64) time.Duration {
	if len(p.Latencies) == 0 {
		return 0
	}
	i := int(float64(len(p.Latencies)-1) * q / 100)
	return p.Latencies[i]
}

// FleetReport is the outcome of `linkedge bench fleet`.
type FleetReport struct {
	Config   FleetConfig
	Artifact int64 // bytes of one bundle
	Phases   []FleetPhase
	// ConnectedRSS is the broker's RSS with every truck connected and idle;
	// ConnectedHeap and ConnectedStacks the Go heap and goroutine stacks in
	// use then (from its /metrics), which say how much of the RSS is live.
	ConnectedRSS, ConnectedHeap, ConnectedStacks int64
	// SettledRSS, SettledHeap and SettledStacks are the same after
	// FleetConfig.Settle more of idleness; zero without it.
	SettledRSS, SettledHeap, SettledStacks int64
	Elapsed                                time.Duration
	// Limits says what of this machine held the run back, if anything.
	Limits string
}

// fleetRun is one run of the fleet bench.
type fleetRun struct {
	cfg      FleetConfig
	dir      string
	broker   *child
	pub      *child
	pubArgs  []string
	brokerAd string // MQTT address
	brokerHT string // health and metrics address
	artAddr  string
	reg      *localreg.Registry
	verifier *release.Verifier
	loads    []*child // the load processes, each running trucksPerProcess trucks
	keyFile  string   // the publisher's public key, for the trucks
	mon      *fleetMonitor
	rate     *rateProxy
	artifact int64
	truckTmp string // a TruckDir of the run's own
	// artBase is what publishers that were stopped had sent: the counter
	// starts over with every publisher process.
	artBase int64
}

// RunFleet runs the fleet bench: a broker and a publisher as child
// processes, and cfg.Trucks simulated trucks in this process, each the real
// agent (its MQTT session, release verification, resumable download, digest
// check and reports) with a no-op model runtime; then the scenarios.
func RunFleet(ctx context.Context, cfg FleetConfig) (rep *FleetReport, err error) {
	cfg.setDefaults()
	start := time.Now()
	// The broker holds a socket per truck, the publisher one per download
	// in flight, a load process two per truck at most.
	fileLimitNote := raiseFileLimit(uint64(max(cfg.Trucks, 2*trucksPerProcess) + 1024))
	r := &fleetRun{cfg: cfg, dir: cfg.Dir}
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "linkedge-bench-fleet-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(r.dir)
	}
	if cfg.Exe == "" {
		if cfg.Exe, err = os.Executable(); err != nil {
			return nil, err
		}
		r.cfg.Exe = cfg.Exe
	}
	defer func() {
		if cerr := r.close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if r.cfg.TruckDir == "" {
		base := r.dir
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			base = "/dev/shm"
		}
		if r.cfg.TruckDir, err = os.MkdirTemp(base, "linkedge-bench-trucks-"); err != nil {
			return nil, err
		}
		r.truckTmp = r.cfg.TruckDir // removed by close, after the trucks
	}
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	rep = &FleetReport{Config: r.cfg, Artifact: r.artifact, Limits: fileLimitNote}
	add := func(p FleetPhase, err error) error {
		if err != nil {
			return err
		}
		rep.Phases = append(rep.Phases, p)
		r.logf("%s: %d/%d trucks, p50 %s, p99 %s, max %s", p.Name, p.Done, p.Trucks,
			p.Percentile(50).Round(time.Millisecond), p.Percentile(99).Round(time.Millisecond), p.Percentile(100).Round(time.Millisecond))
		return nil
	}
	if err := add(r.connect(ctx)); err != nil {
		return nil, err
	}
	// Idle, connected: the broker's memory per truck.
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return nil, err
	}
	r.broker.peakRSS()
	rep.ConnectedRSS, rep.ConnectedHeap, rep.ConnectedStacks = r.brokerMemory()
	if cfg.Settle > 0 {
		r.logf("idle: %s for the broker's memory to settle", cfg.Settle)
		if err := sleepCtx(ctx, cfg.Settle); err != nil {
			return nil, err
		}
		rep.SettledRSS, rep.SettledHeap, rep.SettledStacks = r.brokerMemory()
	}
	if os.Getenv("LINKEDGE_HEAP_PROFILE_DIR") != "" {
		// The broker inherited the variable: it writes a heap profile of
		// the connected fleet (internal/cli, startHeapProfiles).
		if err := r.broker.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			r.logf("heap profile of the broker: %v", err)
		}
	}
	if err := add(r.update(ctx, "update", 1, false)); err != nil {
		return nil, err
	}
	if cfg.CanaryPercent > 0 {
		if err := r.restartPublisher(ctx, syscall.SIGTERM, true); err != nil {
			return nil, err
		}
		if err := add(r.update(ctx, fmt.Sprintf("staged rollout (%d %% canary, %s soak)", cfg.CanaryPercent, cfg.CanarySoak), 2, false)); err != nil {
			return nil, err
		}
	}
	if !cfg.NoRestarts {
		if err := add(r.brokerRestart(ctx)); err != nil {
			return nil, err
		}
		if cfg.CanaryPercent > 0 {
			if err := add(r.update(ctx, "staged rollout, publisher killed during the canary", 3, true)); err != nil {
				return nil, err
			}
		}
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

func (r *fleetRun) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

const fleetModel = "aps-failure"

func fleetTruck(i int) string { return fmt.Sprintf("sim-%05d", i) }

// setup writes the key and the registry, starts the broker, the publisher
// and the monitor.
func (r *fleetRun) setup(ctx context.Context) error {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return err
	}
	pubKey, privKey := release.GenerateKey()
	keyFile := filepath.Join(r.dir, "publisher.key")
	if err := release.WritePrivateKeyFile(keyFile, privKey); err != nil {
		return err
	}
	r.verifier = &release.Verifier{Keys: []ed25519.PublicKey{pubKey}}
	r.keyFile = filepath.Join(r.dir, "publisher.pub")
	if err := release.WritePublicKeyFile(r.keyFile, pubKey); err != nil {
		return err
	}
	var err error
	if r.reg, err = localreg.Open(filepath.Join(r.dir, "registry")); err != nil {
		return err
	}
	// Versions 1–3, each a real bundle of the demo model.
	for v := int64(1); v <= 3; v++ {
		data := apsmodels.V1()
		if v > 1 {
			b, err := bundle.Read(bytes.NewReader(apsmodels.V2()), bundle.Limits{})
			if err != nil {
				return err
			}
			b.Meta.Version = v
			var out bytes.Buffer
			if err := bundle.Write(&out, b.Meta, b.ONNX); err != nil {
				return err
			}
			data = out.Bytes()
		}
		r.artifact = max(r.artifact, int64(len(data)))
		f := filepath.Join(r.dir, fmt.Sprintf("v%d.tar.gz", v))
		if err := os.WriteFile(f, data, 0o600); err != nil {
			return err
		}
		if _, err := r.reg.Add(ctx, f); err != nil {
			return err
		}
	}

	addrs := make([]string, 3)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	r.brokerAd, r.brokerHT, r.artAddr = addrs[0], addrs[1], addrs[2]
	// Closing 10,000 connections on a busy machine takes longer than the
	// broker's default 5 s, after which it gives up and exits 1.
	brokerCfg := filepath.Join(r.dir, "broker.yaml")
	if err := os.WriteFile(brokerCfg, []byte("close_timeout: 1m\n"), 0o600); err != nil {
		return err
	}
	r.broker = &child{name: "broker", exe: r.cfg.Exe, log: filepath.Join(r.dir, "broker.log"),
		args: []string{"broker", "--config", brokerCfg, "--listen", r.brokerAd, "--http", r.brokerHT, "--data", filepath.Join(r.dir, "broker")}}
	if r.cfg.BrokerMemoryLimit > 0 {
		r.broker.env = []string{fmt.Sprintf("GOMEMLIMIT=%d", r.cfg.BrokerMemoryLimit)}
	}
	if err := r.broker.start(); err != nil {
		return err
	}
	if err := waitListening(ctx, r.broker, r.brokerAd, 30*time.Second); err != nil {
		return err
	}
	artURL := "http://" + r.artAddr
	if r.cfg.LinkRate > 0 {
		if r.rate, err = newRateProxy(r.artAddr, r.cfg.LinkRate); err != nil {
			return err
		}
		artURL = "http://" + r.rate.Addr()
	}
	r.pubArgs = []string{"publisher", "--broker", "tcp://" + r.brokerAd, "--registry", r.reg.Dir(), "--key", keyFile,
		"--artifacts-listen", r.artAddr, "--artifacts-url", artURL, "--poll", "250ms"}
	r.pub = &child{name: "publisher", exe: r.cfg.Exe, log: filepath.Join(r.dir, "publisher.log"), args: r.pubArgs}
	if err := r.pub.start(); err != nil {
		return err
	}
	if err := waitListening(ctx, r.pub, r.artAddr, 30*time.Second); err != nil {
		return err
	}
	if r.mon, err = newFleetMonitor(ctx, r.cfg.Exe, "tcp://"+r.brokerAd, r.dir, r.verifier); err != nil {
		return err
	}
	r.logf("broker (pid %d) on %s, publisher (pid %d), artifact %d B", r.broker.cmd.Process.Pid, r.brokerAd, r.pub.cmd.Process.Pid, r.artifact)
	return nil
}

// restartPublisher stops the publisher with sig and starts it again, with
// the staged rollout when staged.
func (r *fleetRun) restartPublisher(ctx context.Context, sig syscall.Signal, staged bool) error {
	r.artBase = r.artifactBytes()
	if err := r.pub.stop(sig, 30*time.Second); err != nil {
		return err
	}
	args := slices.Clone(r.pubArgs)
	if staged {
		args = append(args, "--canary-percent", strconv.Itoa(r.cfg.CanaryPercent), "--canary-soak", r.cfg.CanarySoak.String())
	}
	r.pub.args = args
	if err := r.pub.start(); err != nil {
		return err
	}
	return waitListening(ctx, r.pub, r.artAddr, 30*time.Second)
}

// connect starts every truck at ConnectRate, in load processes of
// trucksPerProcess trucks each (`linkedge bench fleet-trucks`), and waits
// until the monitor saw each one's status online.
func (r *fleetRun) connect(ctx context.Context) (FleetPhase, error) {
	n := r.cfg.Trucks
	procs := (n + trucksPerProcess - 1) / trucksPerProcess
	r.logf("starting %d trucks, %d a second, in %d load processes", n, r.cfg.ConnectRate, procs)
	ph := r.begin("connect", "start, connect, report its status online", n)
	for k := range procs {
		first := k * trucksPerProcess
		count := min(trucksPerProcess, n-first)
		// Each process starts its share at its share of the rate.
		rate := max(r.cfg.ConnectRate*count/n, 1)
		c := &child{name: fmt.Sprintf("load process %d", k+1), exe: r.cfg.Exe, log: filepath.Join(r.dir, fmt.Sprintf("load-%d.log", k+1)),
			args: []string{"bench", "fleet-trucks", "--broker", "tcp://" + r.brokerAd,
				"--first", fmt.Sprint(first), "--count", fmt.Sprint(count), "--rate", fmt.Sprint(rate),
				"--dir", r.cfg.TruckDir, "--key", r.keyFile, "--probation", r.cfg.Probation.String(),
				"--log-file", filepath.Join(r.dir, "trucks.log"), "--truck-log-level", r.cfg.TruckLogLevel.String()}}
		if err := c.start(); err != nil {
			return FleetPhase{}, err
		}
		r.loads = append(r.loads, c)
	}
	for seen, last := 0, time.Now(); seen < n; {
		if err := r.loadsAlive(); err != nil {
			return FleetPhase{}, err
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return FleetPhase{}, err
		}
		seen = r.mon.count(func(s truckView) bool { return s.online })
		if time.Since(last) >= 2*time.Second || seen == n {
			r.logf("connect: %d/%d reported online", seen, n)
			last = time.Now()
		}
		if time.Since(ph.from) > 2*time.Minute {
			break
		}
	}
	return r.finish(ctx, ph, 2*time.Minute, func(s truckView, at time.Time) (time.Time, bool) { return at, s.online })
}

// loadsAlive reports a load process that ended.
func (r *fleetRun) loadsAlive() error {
	for _, c := range r.loads {
		if err := c.alive(); err != nil {
			return err
		}
	}
	return nil
}

// loadUsage is the load processes' CPU and RSS, summed.
func (r *fleetRun) loadUsage() procUsage {
	var u procUsage
	for _, c := range r.loads {
		v := c.sample()
		u.CPU += v.CPU
		u.RSS += v.RSS
	}
	return u
}

// update approves version and waits until every truck reported it
// committed. With killPublisher, the publisher is killed (SIGKILL) once the
// first canary truck committed, and started again.
func (r *fleetRun) update(ctx context.Context, name string, version int64, killPublisher bool) (FleetPhase, error) {
	ph := r.begin(name, fmt.Sprintf("report v%d committed", version), r.cfg.Trucks)
	if _, err := r.reg.Approve(fleetModel, version, "bench"); err != nil {
		return FleetPhase{}, err
	}
	r.logf("%s: v%d approved", name, version)
	done := func(s truckView, at time.Time) (time.Time, bool) {
		return at, s.version == version && s.phase == "committed"
	}
	if killPublisher {
		if err := waitUntil(ctx, 2*time.Minute, "a canary truck to commit", func() bool {
			return r.mon.count(func(s truckView) bool { _, ok := done(s, time.Time{}); return ok }) > 0
		}); err != nil {
			return FleetPhase{}, err
		}
		r.logf("%s: the canary commits; killing the publisher", name)
		if err := r.restartPublisher(ctx, syscall.SIGKILL, true); err != nil {
			return FleetPhase{}, err
		}
	}
	limit := 3*time.Minute + r.cfg.CanarySoak
	return r.finish(ctx, ph, limit, done)
}

// brokerRestart stops the broker (SIGTERM), starts it again on the same
// data, and waits until every truck is back: online, having said so on its
// presence topic since the restart (a truck whose status did not change
// sends none on reconnecting) or reported a status since.
func (r *fleetRun) brokerRestart(ctx context.Context) (FleetPhase, error) {
	stopFrom := time.Now()
	stopErr := r.broker.stop(syscall.SIGTERM, time.Minute)
	stopped := time.Since(stopFrom)
	ph := r.begin("broker restart", "come back online, with its status retained", r.cfg.Trucks)
	if err := r.broker.start(); err != nil {
		return FleetPhase{}, err
	}
	if err := waitListening(ctx, r.broker, r.brokerAd, time.Minute); err != nil {
		return FleetPhase{}, err
	}
	r.logf("broker stopped in %s and started again in %s", stopped.Round(time.Millisecond), time.Since(ph.from).Round(time.Millisecond))
	// The truck's own time stamp says when it reported a status: the
	// monitor may read it later, as a retained message, after its own
	// reconnect. A presence carries no time stamp: its arrival counts
	// (see truckView.backAt).
	p, err := r.finish(ctx, ph, 2*time.Minute, func(s truckView, _ time.Time) (time.Time, bool) {
		switch {
		case !s.online:
			return time.Time{}, false
		case !s.lastSeen.Before(ph.from):
			return s.lastSeen, true
		case !s.backAt.Before(ph.from):
			return s.backAt, true
		}
		return time.Time{}, false
	})
	// A broker that does not stop cleanly is a finding, not the end of
	// the run: the restart is what the trucks live through.
	note := fmt.Sprintf("the broker took %s to stop", fmtSpan(stopped))
	if stopErr != nil {
		note += fmt.Sprintf(" and did not stop cleanly: %v", truncate(stopErr.Error(), 200))
	}
	p.Note = strings.TrimPrefix(strings.Join([]string{p.Note, note}, "; "), "; ")
	return p, err
}

// phaseRun is a phase in progress.
type phaseRun struct {
	FleetPhase
	from                time.Time
	broker0, pub0, self procUsage
	dropped0, art0      int64
	serials0            int
}

func (r *fleetRun) begin(name, goal string, trucks int) *phaseRun {
	r.broker.peakRSS()
	r.pub.peakRSS()
	p := &phaseRun{FleetPhase: FleetPhase{Name: name, Goal: goal, Trucks: trucks}, from: time.Now()}
	p.broker0, p.pub0, p.self = r.broker.sample(), r.pub.sample(), r.loadUsage()
	p.dropped0 = r.brokerDropped()
	p.art0 = r.artifactBytes()
	p.serials0 = r.mon.serials()
	r.mon.mark(p.from)
	return p
}

// finish waits until goal holds for every truck (or limit passes), sampling
// the processes, and fills the phase.
func (r *fleetRun) finish(ctx context.Context, p *phaseRun, limit time.Duration, goal goalFunc) (FleetPhase, error) {
	deadline := time.Now().Add(limit)
	at := map[string]time.Time{} // when each truck first met the goal
	for {
		for truck, t := range r.mon.reached(goal) {
			if _, ok := at[truck]; !ok {
				at[truck] = t
			}
		}
		if len(at) >= p.Trucks || time.Now().After(deadline) {
			break
		}
		if err := errors.Join(r.broker.alive(), r.pub.alive()); err != nil {
			return FleetPhase{}, err
		}
		r.broker.sample()
		r.pub.sample()
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return FleetPhase{}, err
		}
	}
	p.Elapsed = time.Since(p.from)
	b, pu, s := r.broker.sample(), r.pub.sample(), r.loadUsage()
	p.Broker = procUsage{CPU: b.CPU - p.broker0.CPU, RSS: r.broker.peakRSS()}
	p.Publisher = procUsage{CPU: pu.CPU - p.pub0.CPU, RSS: r.pub.peakRSS()}
	p.Load = procUsage{CPU: s.CPU - p.self.CPU, RSS: s.RSS}
	p.Dropped = r.brokerDropped() - p.dropped0
	p.ArtifactBytes = r.artifactBytes() - p.art0
	p.Releases = r.mon.serials() - p.serials0
	p.Done = len(at)
	for _, t := range at {
		p.Latencies = append(p.Latencies, t.Sub(p.from))
	}
	slices.Sort(p.Latencies)
	if p.Done < p.Trucks {
		p.Note = fmt.Sprintf("%d trucks did not %s within %s", p.Trucks-p.Done, p.Goal, limit)
		var late []string
		for i := range p.Trucks {
			truck := fleetTruck(i)
			if _, ok := at[truck]; ok {
				continue
			}
			if len(late) == 5 {
				late = append(late, "…")
				break
			}
			v, seen := r.mon.view(truck)
			if !seen {
				late = append(late, truck+" (never seen)")
				continue
			}
			late = append(late, fmt.Sprintf("%s (last seen online=%v v%d %s, reported %s)", truck, v.online, v.version, v.phase, v.lastSeen.UTC().Format(time.TimeOnly)))
		}
		p.Note += " (" + strings.Join(late, ", ") + ")"
	}
	return p.FleetPhase, nil
}

// brokerMemory is the broker's RSS now, and the Go heap and goroutine
// stacks in use, from its /metrics (zero if it cannot be read).
func (r *fleetRun) brokerMemory() (rss, heap, stacks int64) {
	m := scrape("http://" + r.brokerHT + "/metrics")
	return r.broker.sample().RSS, int64(m["go_memstats_heap_inuse_bytes"]), int64(m["go_memstats_stack_inuse_bytes"])
}

// brokerDropped reads the broker's drop counters from its /metrics.
func (r *fleetRun) brokerDropped() int64 {
	m := scrape("http://" + r.brokerHT + "/metrics")
	return int64(m["linkedge_broker_inflight_dropped_total"] + m["linkedge_broker_messages_dropped_total"])
}

// artifactBytes is what the artifact servers sent over the run: the
// running one's counter, plus what those before it had sent (read just
// before they stopped).
func (r *fleetRun) artifactBytes() int64 {
	m := scrape("http://" + r.artAddr + "/metrics")
	return r.artBase + int64(m["linkedge_publisher_artifact_bytes_total"])
}

// scrape reads the unlabelled (or first) sample of every metric of a
// Prometheus text page; nil on any error.
func scrape(url string) map[string]float64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
			if j := strings.LastIndexByte(line, '}'); j >= 0 {
				rest = strings.TrimSpace(line[j+1:])
			}
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// close stops the trucks, the monitor, the publisher and the broker.
func (r *fleetRun) close() error {
	var errs []error
	if r.mon != nil {
		r.mon.close()
	}
	for _, c := range r.loads {
		errs = append(errs, c.stop(syscall.SIGTERM, 2*time.Minute))
	}
	if r.pub != nil {
		errs = append(errs, r.pub.stop(syscall.SIGTERM, 30*time.Second))
	}
	if r.broker != nil {
		errs = append(errs, r.broker.stop(syscall.SIGTERM, time.Minute))
	}
	if r.rate != nil {
		errs = append(errs, r.rate.Close())
	}
	if r.truckTmp != "" {
		errs = append(errs, os.RemoveAll(r.truckTmp))
	}
	return errors.Join(errs...)
}

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// raiseFileLimit lets this process, and the processes it starts (they
// inherit it), hold want open files if it can, and otherwise as many as
// the hard limit allows, and says so. 10,000 trucks need more than the
// usual soft limit of a few thousand. Raising the hard limit takes
// CAP_SYS_RESOURCE, which a container may lack.
func raiseFileLimit(want uint64) (note string) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Sprintf("the open-file limit could not be read (%v)", err)
	}
	if lim.Cur >= want {
		return ""
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}); err == nil {
		return ""
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	return fmt.Sprintf("the open-file limit is %d, below the %d these trucks may need: a download that meets it fails with \"too many open files\" and is retried", lim.Cur, want)
}

// lockedWriter serialises the trucks' log writes to one file.
type lockedWriter struct {
	mu sync.Mutex
	f  *os.File
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Write(p)
}

// truckView is what the monitor last heard from one truck.
type truckView struct {
	online   bool // the status's and the presence's together (status.Online)
	version  int64
	phase    string
	lastSeen time.Time // the truck's time of the report
	// statusOnline is the status document's own online member.
	statusOnline bool
	// backAt is when the monitor last read "online" on the truck's
	// presence topic: after a reconnect the truck sends that, and no
	// status when nothing changed. A retained copy counts too: it reaches
	// the monitor only as it subscribes, and the broker publishes (and
	// retains) every truck's will when it shuts down, so after a broker
	// restart a retained "online" is a truck that came back.
	backAt time.Time
}

// presenceSeen is what the monitor last read on a truck's presence topic.
type presenceSeen struct {
	online bool
	backAt time.Time // see truckView.backAt
}

// goalFunc reports whether a truck's view meets a phase's goal, and since
// when; changed is when the view last changed (or the phase began).
type goalFunc func(v truckView, changed time.Time) (time.Time, bool)

// fleetMonitor watches the fleet as an operator's tool does: every truck's
// status and every release document, from its own MQTT connection, in a
// process of its own (RunFleetMonitor, `linkedge bench fleet-monitor`): in
// the load generator's process, beside 10,000 agents, it read too slowly,
// and the broker dropped thousands of reports to it.
type fleetMonitor struct {
	proc     *child
	verifier *release.Verifier
	done     chan struct{} // the reader ended
	stop     chan struct{} // closed by close: the reader ends

	mu       sync.Mutex
	trucks   map[string]truckView
	presence map[string]presenceSeen
	changed  map[string]time.Time // when each truck's view last changed
	since    time.Time
	seen     map[int64]bool // release serials
	ready    bool           // the monitor subscribed
}

func newFleetMonitor(ctx context.Context, exe, broker, dir string, v *release.Verifier) (*fleetMonitor, error) {
	m := &fleetMonitor{verifier: v, trucks: map[string]truckView{}, presence: map[string]presenceSeen{}, changed: map[string]time.Time{}, seen: map[int64]bool{}, done: make(chan struct{}), stop: make(chan struct{})}
	// The monitor writes to a file, not a pipe: beside 10,000 agents this
	// process reads late, and a pipe would hold the monitor back until the
	// broker dropped messages to it. Arrival times are the monitor's own.
	out := filepath.Join(dir, "monitor.jsonl")
	m.proc = &child{name: "fleet monitor", exe: exe, log: filepath.Join(dir, "monitor.log"), args: []string{"bench", "fleet-monitor", "--broker", broker, "--out", out}}
	if err := m.proc.start(); err != nil {
		return nil, err
	}
	go m.tail(out)
	if err := waitUntil(ctx, 30*time.Second, "the fleet monitor to subscribe", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.ready || m.proc.alive() != nil
	}); err != nil {
		return nil, err
	}
	return m, m.proc.alive()
}

// tail reads the monitor's file as it grows, until close.
func (m *fleetMonitor) tail(path string) {
	defer close(m.done)
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			select {
			case <-m.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	var partial []byte
	for {
		line, err := r.ReadSlice('\n')
		if err == nil {
			if len(partial) > 0 {
				line = append(partial, line...)
				partial = partial[:0]
			}
			m.observe(bytes.TrimSuffix(line, []byte("\n")))
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > 0 {
			partial = append(partial, line...) // the rest is not written yet
			if len(partial) > status.MaxSize*4 {
				partial = partial[:0] // no line is this long: drop it
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
		}
		select {
		case <-m.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// observe takes one line of the monitor process: "ready", or a topic, the
// Unix nanoseconds it arrived at, and the message.
func (m *fleetMonitor) observe(line []byte) {
	if string(line) == "ready" {
		m.mu.Lock()
		m.ready = true
		m.mu.Unlock()
		return
	}
	var o monitorLine
	if json.Unmarshal(line, &o) != nil {
		return
	}
	at := time.Unix(0, o.At)
	if _, ok := topics.ParseModelRelease(o.Topic); ok {
		if r, err := m.verifier.Verify(o.Payload); err == nil {
			m.mu.Lock()
			m.seen[r.Serial] = true
			m.mu.Unlock()
		}
		return
	}
	if truck, ok := topics.ParseTruckPresence(o.Topic); ok {
		online, err := status.ParsePresence(o.Payload)
		m.mu.Lock()
		defer m.mu.Unlock()
		p := m.presence[truck]
		if err != nil {
			delete(m.presence, truck) // cleared: the status alone says
		} else {
			p.online = online
			if online {
				p.backAt = at
			}
			m.presence[truck] = p
		}
		if v, ok := m.trucks[truck]; ok {
			m.update(truck, v, at)
		}
		return
	}
	truck, ok := topics.ParseTruckStatus(o.Topic)
	if !ok {
		return
	}
	s, err := status.Parse(o.Payload)
	if err != nil {
		return
	}
	v := truckView{statusOnline: s.Online, version: s.Version, phase: s.Phase, lastSeen: s.LastSeen}
	m.mu.Lock()
	m.update(truck, v, at)
	m.mu.Unlock()
}

// update records truck's view v, seen at at, with its presence folded in.
// Under m.mu.
func (m *fleetMonitor) update(truck string, v truckView, at time.Time) {
	p, known := m.presence[truck]
	v.online = status.Online(status.Status{Online: v.statusOnline}, p.online, known)
	v.backAt = p.backAt
	// A change is a change of state; a fresh time stamp alone is not.
	if old := m.trucks[truck]; old.online != v.online || old.version != v.version || old.phase != v.phase || m.changed[truck].IsZero() {
		m.changed[truck] = at
	}
	m.trucks[truck] = v
}

// view is the last status the monitor saw of truck.
func (m *fleetMonitor) view(truck string) (truckView, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.trucks[truck]
	return v, ok
}

// monitorLine is one message the monitor process saw.
type monitorLine struct {
	Topic    string `json:"t"`
	At       int64  `json:"at"` // Unix nanoseconds
	Payload  []byte `json:"p"`
	Retained bool   `json:"r,omitempty"`
}

// RunFleetMonitor subscribes to every truck's status and every release on
// broker and writes each message to w as a JSON line (after a "ready"
// line), with the time it arrived, until ctx is done: the fleet bench's
// observer, in a process of its own.
func RunFleetMonitor(ctx context.Context, broker string, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var mu sync.Mutex
	ready := make(chan struct{}, 1)
	o := paho.NewClientOptions().AddBroker(broker).SetClientID("bench-fleet-monitor").SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(500 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetOrderMatters(true).
		SetOnConnectHandler(func(c paho.Client) {
			// QoS 1, as the console and `linkedge fleet` subscribe: at QoS 0
			// the broker drops what its write buffer cannot hold, and the
			// observer then misses trucks that did reach the goal (seen at
			// 10,000 trucks); at QoS 1 the broker's backpressure paces the
			// fleet to the observer's reading instead.
			subs := map[string]byte{topics.AllTruckStatus(): 1, topics.AllTruckPresence(): 1, topics.AllModelReleases(): 1}
			tok := c.SubscribeMultiple(subs, func(_ paho.Client, msg paho.Message) {
				line, _ := json.Marshal(monitorLine{Topic: msg.Topic(), At: time.Now().UnixNano(), Payload: msg.Payload(), Retained: msg.Retained()})
				mu.Lock()
				bw.Write(append(line, '\n'))
				mu.Unlock()
			})
			go func() {
				if tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
					select {
					case ready <- struct{}{}:
					default:
					}
				}
			}()
		})
	c := paho.NewClient(o)
	if t := c.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
		return fmt.Errorf("fleet monitor: connect: %v", t.Error())
	}
	defer c.Disconnect(250)
	select {
	case <-ready:
	case <-ctx.Done():
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("fleet monitor: the subscription was not acknowledged within 30s")
	}
	mu.Lock()
	bw.WriteString("ready\n")
	bw.Flush()
	mu.Unlock()
	// Flush often: the bench times what it reads.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			mu.Lock()
			err := bw.Flush()
			mu.Unlock()
			if err != nil {
				return nil // the bench went away
			}
		}
	}
}

// mark starts a phase: changes before t do not count for it.
func (m *fleetMonitor) mark(t time.Time) {
	m.mu.Lock()
	m.since = t
	m.mu.Unlock()
}

// reached returns, for every truck whose view meets goal, when it last
// changed (the moment it met it).
func (m *fleetMonitor) reached(goal goalFunc) map[string]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]time.Time{}
	for truck, v := range m.trucks {
		at := m.changed[truck]
		if at.Before(m.since) {
			at = m.since // met it already when the phase began
		}
		if t, ok := goal(v, at); ok {
			out[truck] = t
		}
	}
	return out
}

func (m *fleetMonitor) count(f func(truckView) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, v := range m.trucks {
		if f(v) {
			n++
		}
	}
	return n
}

func (m *fleetMonitor) serials() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}

func (m *fleetMonitor) close() {
	m.proc.stop(syscall.SIGTERM, 10*time.Second)
	close(m.stop)
	select {
	case <-m.done:
	case <-time.After(5 * time.Second):
	}
}
