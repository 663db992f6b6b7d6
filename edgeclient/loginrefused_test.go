package edgeclient

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/internal/release"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

// TestFleetLoginRefusedIsReported: a fleet broker (with a users file) that
// refuses the truck's login makes the agent log why and what to fix, and
// count it by reason, instead of only looking offline.
func TestFleetLoginRefusedIsReported(t *testing.T) {
	users := writeLocalUsers(t, map[string]string{"truck-1": "truck", "ops": "operator"})
	tests := []struct {
		name, user, pass, reason, fix string
	}{
		{"bad password", "truck-1", "wrong", "not_authorized", "fleet.password"},
		{"unknown user", "truck-9", "truck-9-pw", "not_authorized", "fleet.username"},
		// The operator's own login under a truck's client id: refused by
		// the broker as a login, which is all MQTT 3.1.1 can say.
		{"another user's client id", "ops", "ops-pw", "not_authorized", "client id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", UsersFile: users, Logger: busLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), busWait)
			defer cancel()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			logs := &lockedBuffer{}
			pub, _ := release.GenerateKey()
			a, err := New(Config{Truck: "truck-1", Model: busModel, DataDir: t.TempDir(), Keys: []ed25519.PublicKey{pub},
				Fleet:       FleetConfig{Broker: "tcp://" + b.Addr(), Username: tc.user, Password: tc.pass},
				HTTP:        "127.0.0.1:0",
				LocalBroker: LocalBrokerConfig{Listen: "off"},
				Forward:     ForwardConfig{Alerts: new(bool)}, Runtime: stubRuntime{}, ShutdownTimeout: 5 * time.Second,
				Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })

			counter := a.refusals.total.WithLabelValues(tc.reason)
			deadline := time.Now().Add(busWait)
			for counterValue(counter) == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := counterValue(counter); n == 0 {
				t.Fatalf("linkedge_agent_fleet_login_refused_total{reason=%q} = 0 after %s; log:\n%s", tc.reason, busWait, logs.String())
			}
			for _, want := range []string{"the fleet broker refused the truck's login", "reason=" + tc.reason, tc.fix, "username=" + tc.user} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
			if strings.Count(logs.String(), "refused the truck's login") > 1 {
				t.Errorf("the same refusal logged more than once a minute:\n%s", logs.String())
			}
		})
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
