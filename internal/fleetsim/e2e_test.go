package fleetsim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/status"
	"github.com/linkedge/linkedge/internal/topics"
)

// TestPullSync runs the whole mission on real parts — brokers over TCP,
// signed releases, HTTP artifact downloads, ONNX Runtime — against the
// embedded mochi broker, against it with AWS IoT Core's limits, and against
// Debian's mosquitto.
func TestPullSync(t *testing.T) {
	t.Run("mochi", func(t *testing.T) { testPullSync(t, "", broker.ProfileNone) })
	t.Run("aws-iot-core", func(t *testing.T) { testPullSync(t, "", broker.ProfileAWSIoTCore) })
	t.Run("mosquitto", func(t *testing.T) { testPullSync(t, startMosquitto(t), broker.ProfileNone) })
}

func testPullSync(t *testing.T, externalBroker string, profile broker.Profile) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{Dir: t.TempDir(), Trucks: 3, FleetBroker: externalBroker, Probation: time.Second, HTTPClients: 2, Profile: profile})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t1, t2, t3 := f.Trucks[0], f.Trucks[1], f.Trucks[2]
	ev := watchEvents(t, f.BrokerURL)
	wait := func(what string, cond func() bool) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		defer wcancel()
		if err := WaitFor(wctx, what, cond); err != nil {
			for _, tr := range f.Trucks {
				t.Logf("%s: %+v", tr.ID, tr.Agent.Status())
			}
			t.Fatal(err)
		}
	}
	approve := func(bundle []byte) int64 {
		t.Helper()
		e, err := f.Register(ctx, bundle)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.Approve(e.Model, e.Version, "e2e"); err != nil {
			t.Fatal(err)
		}
		return e.Version
	}

	// Approve v1: every truck serves it.
	start := time.Now()
	approve(apsmodels.V1())
	wait("v1 everywhere", func() bool { return all(f.Trucks, 1) })
	t.Logf("approval of v1 to 3 trucks serving it: %s", time.Since(start).Round(time.Millisecond))
	oldRelease := retained(t, f.BrokerURL, topics.ModelRelease("aps-failure"))

	// Truck 3 goes offline; v2 is approved; trucks 1 and 2 switch under load.
	t3.Link.Cut()
	wait("truck 3 offline", func() bool { return !t3.Agent.Status().Online })
	failedBefore := t1.Load.HTTPFailed.Load() + t2.Load.HTTPFailed.Load()
	start = time.Now()
	approve(apsmodels.V2())
	wait("v2 on trucks 1-2", func() bool { return all([]*Truck{t1, t2}, 2) })
	t.Logf("approval of v2 to 2 online trucks serving it: %s", time.Since(start).Round(time.Millisecond))
	if failed := t1.Load.HTTPFailed.Load() + t2.Load.HTTPFailed.Load() - failedBefore; failed != 0 {
		t.Fatalf("%d HTTP requests failed during the switch: %s", failed, t1.Load.LastFailure()+t2.Load.LastFailure())
	}
	for _, tr := range []*Truck{t1, t2} {
		if v := tr.Load.ByVersion(); v["1"] == 0 || v["2"] == 0 {
			t.Fatalf("%s answered by version %v; both versions should have served", tr.ID, v)
		}
	}

	// Truck 3 still serves v1 offline, and keeps predicting on its bus.
	if v := t3.Version(); v != 1 {
		t.Fatalf("offline truck 3 serves v%d, want v1", v)
	}
	before := t3.Load.Predictions.Load()
	wait("truck 3 predicting offline", func() bool { return t3.Load.Predictions.Load() > before+10 })

	// It reconnects and catches up.
	t3.Link.Restore()
	wait("truck 3 catches up", func() bool { return all([]*Truck{t3}, 2) })

	// A truck restarted without a network serves its committed model at once.
	t1.Link.Cut()
	t1.Load.Pause()
	if err := t1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+t1.Agent.HTTPAddr()+"/invocations", "text/csv", strings.NewReader(rowsCSV[0]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Linkedge-Model-Version") != "2" {
		t.Fatalf("restarted offline truck answered %d from version %q", resp.StatusCode, resp.Header.Get("X-Linkedge-Model-Version"))
	}
	t1.Load.Resume()
	t1.Link.Restore()
	wait("truck 1 back online", func() bool { return t1.Agent.Status().Online })

	// v2 is rejected: the publisher re-announces v1 under a newer serial and
	// every truck goes back to it (from its cache: v1 is the previous version).
	if _, err := f.Registry.Reject("aps-failure", 2, "e2e"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	wait("v1 everywhere after rejecting v2", func() bool { return all(f.Trucks, 1) })
	t.Logf("rejection of v2 to 3 trucks back on v1: %s", time.Since(start).Round(time.Millisecond))

	// A corrupted artifact changes nothing and is reported: a correctly
	// signed release whose download (a tampered mirror, a bad cache) does
	// not match its sha256.
	v3 := rebundle(t, apsmodels.V1(), 3)
	sum := sha256.Sum256(v3)
	bad := bytes.Clone(v3)
	bad[len(bad)/2] ^= 0xff
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "model.tar.gz", time.Time{}, bytes.NewReader(bad))
	}))
	defer mirror.Close()
	priv, err := release.ReadPrivateKeyFile(f.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signed := signRelease(t, priv, 3, mirror.URL+"/model.tar.gz", hex.EncodeToString(sum[:]), int64(len(v3)))
	publishRetained(t, f.BrokerURL, topics.ModelRelease("aps-failure"), signed)
	wait("corrupted v3 refused", func() bool {
		for _, tr := range f.Trucks {
			if st := tr.Agent.Status(); !strings.Contains(st.LastError, "sha256") && !strings.Contains(st.LastError, "digest") {
				return false
			}
		}
		return true
	})
	if !serving(f.Trucks, 1) {
		t.Fatal("a truck left v1 for a corrupted artifact")
	}
	t.Logf("truck 1 reports: %s", t1.Agent.Status().LastError)

	// A wrongly signed release changes nothing and is reported.
	forged := forgedRelease(t, 4)
	publishRetained(t, f.BrokerURL, topics.ModelRelease("aps-failure"), forged)
	// The trucks keep retrying the tampered v3 (a mirror may heal), and
	// each retry reports its own error, so refusals are read from the
	// events, as an operator would.
	refused := func(what, detail string) {
		t.Helper()
		wait(what, func() bool {
			for _, tr := range f.Trucks {
				if !ev.has(tr.ID, status.EventReleaseRefused, detail) {
					return false
				}
			}
			return true
		})
	}
	refused("forged release refused", "does not trust")
	if !serving(f.Trucks, 1) {
		t.Fatal("a truck acted on a forged release")
	}

	// A replayed genuine release (an old serial) changes nothing either.
	publishRetained(t, f.BrokerURL, topics.ModelRelease("aps-failure"), oldRelease)
	refused("replayed release refused", "stale")
	for _, tr := range f.Trucks {
		if st := tr.Agent.Status(); st.Phase == "failed" || st.Phase == "rolled_back" {
			t.Fatalf("%s reports %s for a tampered mirror, which is the source's fault, not the version's", tr.ID, st.Phase)
		}
	}
}

// retained reads the retained message on topic.
func retained(t *testing.T, broker, topic string) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-reader"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		select {
		case got <- bytes.Clone(m.Payload()):
		default:
		}
	})
	select {
	case b := <-got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatalf("no retained message on %s", topic)
		return nil
	}
}

func serving(trucks []*Truck, version int64) bool {
	for _, t := range trucks {
		if t.Version() != version {
			return false
		}
	}
	return true
}

func all(trucks []*Truck, version int64) bool {
	for _, t := range trucks {
		st := t.Agent.Status()
		if st.Version != version || st.Phase != "committed" {
			return false
		}
	}
	return true
}

func forgedRelease(t *testing.T, version int64) []byte {
	_, wrongKey := release.GenerateKey()
	return signRelease(t, wrongKey, version, "http://127.0.0.1:1/evil.tar.gz", strings.Repeat("ab", 32), 10)
}

func signRelease(t *testing.T, key ed25519.PrivateKey, version int64, url, sha string, size int64) []byte {
	t.Helper()
	now := time.Now()
	data, err := release.Sign(&release.Release{Schema: release.Schema, Model: "aps-failure", Serial: now.UnixMilli() + 1000,
		IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		Stable: release.Target{Version: version, Artifact: release.Artifact{URL: url, SHA256: sha, Size: size, MediaType: release.MediaTypeBundle},
			Runtime: release.Runtime{Kind: release.RuntimeInProcess}, Source: release.Source{Registry: release.RegistryLocal}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func publishRetained(t *testing.T, broker, topic string, payload []byte) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-attacker"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, 1, true, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

// startMosquitto runs Debian's mosquitto on a free loopback port, with
// persistence off and anonymous access, as a second, independent broker.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/mosquitto"); err2 != nil {
			t.Fatalf("mosquitto is not installed (the README's test command installs it: deployments/scripts/setup.sh)")
		}
		bin = "/usr/sbin/mosquitto"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\n"), 0o644)
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "tcp://" + addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("mosquitto did not start")
	return ""
}

// rebundle gives a bundle's model a new version number.
func rebundle(t *testing.T, data []byte, version int64) []byte {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(data), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b.Meta.Version = version
	var out bytes.Buffer
	if err := bundle.Write(&out, b.Meta, b.ONNX); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
