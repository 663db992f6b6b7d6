package fleetsim

import (
	"context"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/internal/tlsconfig"
	"github.com/linkedge/linkedge/internal/tlsconfig/tlstest"
)

// TestPullSyncOverMutualTLS runs the fleet broker on TLS with client
// certificates required, each truck and the publisher holding its own
// certificate of a private fleet CA: approvals reach the trucks as over
// plain TCP, and a client without a certificate cannot even connect.
func TestPullSyncOverMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca := tlstest.NewCA(t, "fleet")
	srvCert, srvKey := ca.Server(t, "fleet-broker")
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 2, Probation: 300 * time.Millisecond, HTTPClients: 1,
		TLS: &TLSFiles{CA: ca.File, ServerCert: srvCert, ServerKey: srvKey,
			ClientCert: func(name string) (string, string) { return ca.Client(t, name) }}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, data := range [][]byte{apsmodels.V1(), apsmodels.V2()} {
		if _, err := f.Register(ctx, data); err != nil {
			t.Fatal(err)
		}
	}
	f.Registry.Approve("aps-failure", 1, "test")
	if err := WaitVersion(ctx, 1, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	f.Registry.Approve("aps-failure", 2, "test")
	if err := WaitVersion(ctx, 2, f.Trucks...); err != nil {
		t.Fatal(err)
	}
	for _, tr := range f.Trucks {
		if st := tr.Agent.Status(); !st.Online {
			t.Fatalf("truck %s reports offline over TLS: %+v", tr.ID, st)
		}
	}

	// A reconnect resumes the TLS session from a ticket instead of a full
	// handshake (the bytes: docs/benchmarks.md, "Link economy").
	tr := f.Trucks[0]
	reg := tr.Agent.Registry()
	full0 := handshakes(t, reg, "false")
	tr.Link.Cut()
	if err := WaitFor(ctx, "truck offline", func() bool { return !tr.Agent.Status().Online }); err != nil {
		t.Fatal(err)
	}
	tr.Link.Restore()
	if err := WaitFor(ctx, "truck online again", func() bool { return tr.Agent.Status().Online }); err != nil {
		t.Fatal(err)
	}
	if full, resumed := handshakes(t, reg, "false"), handshakes(t, reg, "true"); full != full0 || resumed < 1 {
		t.Fatalf("after a reconnect: %v full handshakes (was %v), %v resumed; want a resumed one", full, full0, resumed)
	}

	// Trusting the broker is not enough: without a certificate, no session.
	cfg, err := tlsconfig.Client{CAFile: ca.File}.Build()
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(f.BrokerURL).SetClientID("no-cert").
		SetTLSConfig(cfg).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false))
	if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		c.Disconnect(0)
		t.Fatal("a client without a certificate connected to the fleet broker")
	}
}

// handshakes reads linkedge_agent_fleet_tls_handshakes_total{resumed}.
func handshakes(t *testing.T, reg *prometheus.Registry, resumed string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "linkedge_agent_fleet_tls_handshakes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "resumed" && l.GetValue() == resumed {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no linkedge_agent_fleet_tls_handshakes_total{resumed=%q}", resumed)
	return 0
}
