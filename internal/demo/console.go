package demo

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/internal/console"
	"github.com/linkedge/linkedge/internal/fleetsim"
	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/publisher"
)

// startConsole serves the fleet console on the demo fleet, with one
// operator, "demo", whose password is made up now and printed: the demo's
// state folder is temporary, and so is the login.
func startConsole(ctx context.Context, cfg Config, f *fleetsim.Fleet, st *story) (*console.Server, error) {
	password := rand.Text()[:16]
	hash, err := broker.HashPassword(password)
	if err != nil {
		return nil, err
	}
	users := filepath.Join(cfg.Dir, "console-users.yaml")
	if err := os.WriteFile(users, fmt.Appendf(nil, "users:\n  - username: demo\n    password_hash: %q\n    role: operator\n", hash), 0o600); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := console.New(console.Config{
		Listen: cfg.ConsoleListen, UsersFile: users, AuditLog: filepath.Join(cfg.Dir, "console-audit.jsonl"),
		Fleet: fleetview.Config{Broker: f.BrokerURL},
		Actions: &publisher.Config{Broker: f.BrokerURL, RegistryDir: f.Registry.Dir(), KeyFile: f.KeyFile(),
			ArtifactBaseURL: f.Publisher.ArtifactBaseURL(), Logger: log},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	st.say("fleet console: %s (log in as demo, password %s)", s.URL(), password)
	return s, nil
}
