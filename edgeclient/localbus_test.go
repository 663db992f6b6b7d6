package edgeclient

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/edgeclient/runtime"
	"github.com/linkedge/linkedge/inference"
	"github.com/linkedge/linkedge/inference/bundle"
	"github.com/linkedge/linkedge/inference/server"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// busWait bounds every wait of the local bus tests; generous, since the
// machine may be shared and small.
const busWait = 10 * time.Second

const busModel = "aps-failure"

// TestLocalBusCredentials: with local_broker.users the truck's local bus
// refuses anonymous and wrong logins; a sensor gets the model's answer to
// its reading (the agent's own clients get in under a login of their own);
// an answer faked by a sensor or an app never reaches an application; an
// application holds under its own name only.
func TestLocalBusCredentials(t *testing.T) {
	users := writeLocalUsers(t, map[string]string{"can-gw": "sensor", "nav": "app", "crane": "app"})
	a := startBusAgent(t, LocalBrokerConfig{Listen: "127.0.0.1:0", Users: users})
	addr := "tcp://" + a.LocalBrokerAddr()

	for _, tc := range []struct{ name, user, pass string }{
		{"anonymous", "", ""},
		{"wrong password", "can-gw", "nav-pw"},
		{"unknown user", "nobody", "nobody-pw"},
		{"the agent's name with a guess", broker.LocalAgentUser, "linkedge"},
	} {
		if c, err := busConnect(addr, tc.user, tc.pass); err == nil {
			c.Disconnect(0)
			t.Errorf("%s: connected to the local bus, want refused", tc.name)
		}
	}

	nav := busClient(t, addr, "nav")
	navPredictions := make(chan paho.Message, 16)
	busAwait(t, "nav subscribes to predictions", nav.Subscribe(topics.LocalPredictions(busModel), 0, func(_ paho.Client, m paho.Message) { navPredictions <- m }))
	sensor := busClient(t, addr, "can-gw")
	sensorPredictions := make(chan paho.Message, 16)
	busAwait(t, "the sensor subscribes to predictions", sensor.Subscribe(topics.LocalPredictions(busModel), 0, func(_ paho.Client, m paho.Message) { sensorPredictions <- m }))

	// A sensor's fake answer is dropped (QoS 0: silently); its reading,
	// sent after it on the same connection, is answered by the model.
	busAwait(t, "fake prediction", sensor.Publish(topics.LocalPredictions(busModel), 0, false, `{"id":"fake-sensor","label":"pos"}`))
	busAwait(t, "reading", sensor.Publish(topics.LocalReadings(busModel), 0, false, `{"id":"r-1","features":[0.9,0]}`))
	if p := nextPrediction(t, sensorPredictions); p.ID != "r-1" || p.Label != "pos" {
		t.Fatalf("the sensor got %+v, want the model's answer to r-1", p)
	}
	if p := nextPrediction(t, navPredictions); p.ID != "r-1" {
		t.Fatalf("the app got %+v before the answer to r-1: a fake answer went through", p)
	}

	// An app's fake answer at QoS 1 is refused: MQTT 3.1.1 has no way to
	// refuse one message, so the broker closes the connection.
	crane := busClient(t, addr, "crane")
	crane.Publish(topics.LocalPredictions(busModel), 1, false, `{"id":"fake-app","label":"pos"}`).WaitTimeout(busWait)
	waitClosed(t, crane, "crane's fake prediction")
	busAwait(t, "reading", sensor.Publish(topics.LocalReadings(busModel), 0, false, `{"id":"r-2","features":[0.1,0]}`))
	if p := nextPrediction(t, navPredictions); p.ID != "r-2" || p.Label != "neg" {
		t.Fatalf("the app got %+v, want the model's answer to r-2 and nothing before it", p)
	}

	// nav may not hold as crane; then it holds as itself, and the agent
	// has that hold and no other.
	nav.Publish(topics.LocalHold("crane"), topics.LocalHoldQoS, topics.LocalHoldRetain, `{"reason":"forged"}`).WaitTimeout(busWait)
	waitClosed(t, nav, "nav's hold as crane")
	nav = busClient(t, addr, "nav")
	busAwait(t, "nav's hold", nav.Publish(topics.LocalHold("nav"), topics.LocalHoldQoS, topics.LocalHoldRetain, `{"reason":"vehicle moving"}`))
	waitHolds(t, a, "nav")
	busAwait(t, "nav's release", nav.Publish(topics.LocalHold("nav"), topics.LocalHoldQoS, topics.LocalHoldRetain, ""))
	waitHolds(t, a)
}

// TestLocalBusAnonymousByDefault: without local_broker.users the bus is as
// it was: anyone on it may send readings, read answers and hold, under any
// name.
func TestLocalBusAnonymousByDefault(t *testing.T) {
	a := startBusAgent(t, LocalBrokerConfig{Listen: "127.0.0.1:0"})
	addr := "tcp://" + a.LocalBrokerAddr()
	c, err := busConnect(addr, "", "")
	if err != nil {
		t.Fatalf("anonymous client refused: %v", err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	predictions := make(chan paho.Message, 16)
	busAwait(t, "subscribe", c.Subscribe(topics.LocalPredictions(busModel), 0, func(_ paho.Client, m paho.Message) { predictions <- m }))
	busAwait(t, "reading", c.Publish(topics.LocalReadings(busModel), 0, false, `{"id":"r-1","features":[0.9,0]}`))
	if p := nextPrediction(t, predictions); p.ID != "r-1" || p.Label != "pos" {
		t.Fatalf("got %+v, want the answer to r-1", p)
	}
	busAwait(t, "hold", c.Publish(topics.LocalHold("crane"), topics.LocalHoldQoS, topics.LocalHoldRetain, `{"reason":"unloading"}`))
	waitHolds(t, a, "crane")
}

// TestLocalBusExternalLogin: the agent's own clients log in to an external
// local broker with local_broker.username and password. The external broker
// here is a local bus with a users file, so that nothing gets in anonymously;
// its agent login stands in for the account an operator would create.
func TestLocalBusExternalLogin(t *testing.T) {
	users := writeLocalUsers(t, map[string]string{"can-gw": "sensor", "nav": "app"})
	ext, err := broker.New(broker.Config{Listen: "127.0.0.1:0", UsersFile: users, LocalBus: true, Logger: busLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ext.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), busWait)
	defer cancel()
	if err := ext.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := "tcp://" + ext.Addr()
	user, pass := ext.AgentLogin()
	a := startBusAgent(t, LocalBrokerConfig{Listen: "off", External: addr, Username: user, Password: pass})

	sensor := busClient(t, addr, "can-gw")
	predictions := make(chan paho.Message, 16)
	busAwait(t, "subscribe", sensor.Subscribe(topics.LocalPredictions(busModel), 0, func(_ paho.Client, m paho.Message) { predictions <- m }))
	busAwait(t, "reading", sensor.Publish(topics.LocalReadings(busModel), 0, false, `{"id":"r-1","features":[0.9,0]}`))
	if p := nextPrediction(t, predictions); p.ID != "r-1" || p.Label != "pos" {
		t.Fatalf("got %+v, want the answer to r-1", p)
	}
	nav := busClient(t, addr, "nav")
	busAwait(t, "nav's hold", nav.Publish(topics.LocalHold("nav"), topics.LocalHoldQoS, topics.LocalHoldRetain, `{"reason":"vehicle moving"}`))
	waitHolds(t, a, "nav")
}

// startBusAgent starts an agent whose slot serves stubBackend and whose
// fleet broker is unreachable: only the local bus matters here.
func startBusAgent(t *testing.T, lb LocalBrokerConfig) *Agent {
	t.Helper()
	pub, _ := release.GenerateKey()
	a, err := New(Config{Truck: "truck-1", Model: busModel, DataDir: t.TempDir(), Keys: []ed25519.PublicKey{pub},
		Fleet: FleetConfig{Broker: "tcp://127.0.0.1:1"}, HTTP: "127.0.0.1:0", LocalBroker: lb,
		Forward: ForwardConfig{Alerts: new(bool)}, Runtime: stubRuntime{}, ShutdownTimeout: 5 * time.Second, Logger: busLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	a.slot.Swap(stubBackend{}, 0)
	return a
}

func busLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// writeLocalUsers writes a local users file; users maps username to role,
// and each password is "{username}-pw".
func writeLocalUsers(t *testing.T, users map[string]string) string {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("users:\n")
	for name, role := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(name+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "  - username: %s\n    password_hash: %q\n    role: %s\n", name, h, role)
	}
	path := filepath.Join(t.TempDir(), "local-users.yaml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var busClientSeq atomic.Int64

// busConnect connects once, without retries, so that a refusal shows.
func busConnect(addr, user, pass string) (paho.Client, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(addr).
		SetClientID(fmt.Sprintf("test-%s-%d", user, busClientSeq.Add(1))).
		SetUsername(user).SetPassword(pass).
		SetProtocolVersion(4). // no silent retry as MQTT 3.1 when refused
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(busWait))
	tok := c.Connect()
	if !tok.WaitTimeout(busWait) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return c, nil
}

// busClient logs user in with its password, "{user}-pw".
func busClient(t *testing.T, addr, user string) paho.Client {
	t.Helper()
	c, err := busConnect(addr, user, user+"-pw")
	if err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func busAwait(t *testing.T, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(busWait) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func nextPrediction(t *testing.T, ch <-chan paho.Message) server.PredictionMessage {
	t.Helper()
	select {
	case m := <-ch:
		var p server.PredictionMessage
		if err := json.Unmarshal(m.Payload(), &p); err != nil {
			t.Fatalf("prediction %q: %v", m.Payload(), err)
		}
		return p
	case <-time.After(busWait):
		t.Fatal("no prediction arrived")
		return server.PredictionMessage{}
	}
}

// waitClosed waits until the broker has closed c's connection, which it
// does when it refuses a QoS 1 publish.
func waitClosed(t *testing.T, c paho.Client, what string) {
	t.Helper()
	deadline := time.Now().Add(busWait)
	for c.IsConnectionOpen() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not refused", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitHolds waits until the agent holds for exactly apps.
func waitHolds(t *testing.T, a *Agent, apps ...string) {
	t.Helper()
	deadline := time.Now().Add(busWait)
	for {
		var got []string
		for _, h := range a.holds.Holds() {
			got = append(got, h.App)
		}
		if strings.Join(got, ",") == strings.Join(apps, ",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent holds for %v, want %v", got, apps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stubRuntime stages nothing: these tests put stubBackend in the slot
// themselves, and no update runs.
type stubRuntime struct{}

func (stubRuntime) Stage(context.Context, runtime.Spec) (runtime.Candidate, error) {
	return nil, errors.New("stub runtime stages nothing")
}
func (stubRuntime) Activate(context.Context, runtime.Candidate) (runtime.Candidate, error) {
	return nil, errors.New("stub runtime activates nothing")
}
func (stubRuntime) Serving() runtime.Candidate { return nil }

// stubBackend is a two-feature model: "pos" when the first is 0.5 or more.
type stubBackend struct{}

func (stubBackend) Meta() *bundle.Metadata {
	return &bundle.Metadata{Name: busModel, Version: 1, Features: []string{"a", "b"}, Labels: [2]string{"neg", "pos"}, Threshold: 0.5}
}
func (stubBackend) Digest() string { return "stub" }
func (b stubBackend) PredictOne(_ context.Context, row []float32) (inference.Prediction, error) {
	if row[0] >= 0.5 {
		return inference.Prediction{Label: "pos", Score: row[0]}, nil
	}
	return inference.Prediction{Label: "neg", Score: row[0]}, nil
}
func (b stubBackend) Predict(ctx context.Context, rows [][]float32) ([]inference.Prediction, error) {
	out := make([]inference.Prediction, len(rows))
	for i, r := range rows {
		out[i], _ = b.PredictOne(ctx, r)
	}
	return out, nil
}
func (stubBackend) Failures() int64 { return 0 }
func (stubBackend) Close() error    { return nil }
