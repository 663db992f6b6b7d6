// Package cli holds the linkedge command tree. Each command parses its flags,
// builds a plain config struct and calls into a domain package; no domain
// logic lives here.
package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
)

// Execute runs the command line and returns the process exit code.
// SIGINT and SIGTERM cancel the command's context, so every long-running
// command shuts down gracefully.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	defer startCPUProfile()()
	defer startHeapProfiles()()
	if err := root.ExecuteContext(ctx); err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "linkedge:", err)
		}
		return 1
	}
	return 0
}

// startCPUProfile writes a CPU profile of the whole process when
// LINKEDGE_CPU_PROFILE_DIR names a folder, to <folder>/<command>-<pid>.pprof,
// and returns the function that ends it. An environment variable rather
// than a flag: `linkedge bench fleet` starts the broker and the publisher
// itself, and they inherit it, so one run profiles all three (see
// docs/benchmarks.md, Fleet scale).
func startCPUProfile() (stop func()) {
	dir := os.Getenv("LINKEDGE_CPU_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", profileName(), os.Getpid())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "linkedge: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "linkedge: cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// profileName names a profile after the command: "broker", "bench-fleet".
func profileName() string {
	if len(os.Args) < 2 {
		return "linkedge"
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, strings.Join(os.Args[1:min(len(os.Args), 3)], "-"))
}

// startHeapProfiles writes a heap profile, after a garbage collection, to
// <folder>/<command>-<pid>-<n>.heap each time the process gets SIGUSR1,
// when LINKEDGE_HEAP_PROFILE_DIR names a folder. A signal rather than an
// HTTP endpoint: the moment that matters (a fleet connected and idle) is
// known only to whoever drives the process, which `linkedge bench fleet`
// does (docs/benchmarks.md, Fleet scale); and no debug endpoint is left
// open on a server. It returns the function that stops listening.
func startHeapProfiles() (stop func()) {
	dir := os.Getenv("LINKEDGE_HEAP_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-sig:
			}
			if err := writeHeapProfile(filepath.Join(dir, fmt.Sprintf("%s-%d-%d.heap", profileName(), os.Getpid(), n))); err != nil {
				fmt.Fprintln(os.Stderr, "linkedge: heap profile:", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(sig)
			close(done)
			<-finished
		})
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC() // the profile then shows what is live, not what awaits collection
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// errSilent is returned by commands that already told the user what failed.
var errSilent = errors.New("failed")

type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRootCmd() *cobra.Command {
	var g globalFlags
	root := &cobra.Command{
		Use:   "linkedge",
		Short: "Keep ML models on intermittently connected vehicles current, and serve them locally",
		Long: `LinkEdge pulls approved model versions from a model registry to a fleet of trucks
over MQTT. A cloud publisher announces signed releases; each truck's agent downloads,
verifies and health-checks the new model whenever it is online, switches to it without
dropping a request, and serves predictions locally over MQTT and HTTP, online or not.

Start with "linkedge demo" to see a whole fleet on one machine.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return setupLogging(g)
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		newServeCmd(),
		newToolkitCmd(),
		newSetupCmd(),
		newBenchCmd(),
	)
	addLaterCommands(root)
	return root
}

func setupLogging(g globalFlags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(g.logFormat) {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return fmt.Errorf("--log-format %q: want text or json", g.logFormat)
	}
	slog.SetDefault(slog.New(h))
	return nil
}
