package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/internal/release"
)

// trucksPerProcess is how many simulated trucks one load process runs.
// Each truck holds a socket for its MQTT session and another while it
// downloads, and this VM's open-file limit is 20,000 per process: 10,000
// trucks in one process ran out of files in the middle of an update.
const trucksPerProcess = 2500

// FleetTrucksConfig is one load process of `linkedge bench fleet`: the
// trucks First … First+Count-1.
type FleetTrucksConfig struct {
	Broker    string // MQTT URL of the fleet broker
	First     int
	Count     int
	Rate      int    // trucks started a second
	Dir       string // the trucks' data folders go under it
	KeyFile   string // the publisher's public key (PEM)
	Probation time.Duration
	LogFile   string // appended to; every load process shares it
	LogLevel  slog.Level
}

// RunFleetTrucks starts the trucks of cfg at cfg.Rate a second, runs them
// until ctx is done, then closes them all, 64 at a time.
func RunFleetTrucks(ctx context.Context, cfg FleetTrucksConfig) error {
	if cfg.Count <= 0 || cfg.Rate <= 0 || cfg.Broker == "" || cfg.Dir == "" || cfg.KeyFile == "" {
		return errors.New("fleet trucks: broker, dir, key, a count and a rate are required")
	}
	key, err := release.ReadPublicKeyFile(cfg.KeyFile)
	if err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	if cfg.LogFile != "" {
		f, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close() // after the trucks: closeAgents returns first
		logger = slog.New(slog.NewTextHandler(&lockedWriter{f: f}, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	var agents []*edgeclient.Agent
	defer func() { closeAgents(agents) }()
	tick := time.Second / time.Duration(cfg.Rate)
	next := time.Now()
	for i := cfg.First; i < cfg.First+cfg.Count; i++ {
		if d := time.Until(next); d > 0 {
			if err := sleepCtx(ctx, d); err != nil {
				return nil
			}
		}
		next = next.Add(tick)
		truck := fleetTruck(i)
		a, err := edgeclient.New(edgeclient.Config{
			Truck: truck, Model: fleetModel, DataDir: filepath.Join(cfg.Dir, truck), Keys: []ed25519.PublicKey{key},
			Fleet: edgeclient.FleetConfig{Broker: cfg.Broker},
			HTTP:  "off", LocalBroker: edgeclient.LocalBrokerConfig{Listen: "off"},
			Forward:   edgeclient.ForwardConfig{Alerts: new(bool)},
			Runtime:   &noopRuntime{},
			Probation: cfg.Probation, Logger: logger,
		})
		if err != nil {
			return fmt.Errorf("truck %s: %w", truck, err)
		}
		if err := a.Start(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("truck %s: %w", truck, err)
		}
		agents = append(agents, a)
	}
	<-ctx.Done()
	return nil
}

// closeAgents closes agents in parallel: one by one, thousands take long.
func closeAgents(agents []*edgeclient.Agent) error {
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 64)
	for _, a := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if a.Close() != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d trucks did not close cleanly", n)
	}
	return nil
}
