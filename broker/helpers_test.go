package broker

import (
	"context"
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
)

// waitFor bounds every wait in these tests; generous because the machine is
// shared and small.
const waitFor = 10 * time.Second

// testLogger keeps test output quiet unless -v is given.
func testLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startBroker creates and starts a broker on a free loopback port and closes
// it when the test ends. mod may adjust the config first.
func startBroker(t *testing.T, mod func(*Config)) *Broker {
	t.Helper()
	b := newBroker(t, mod)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return b
}

func newBroker(t *testing.T, mod func(*Config)) *Broker {
	t.Helper()
	cfg := Config{Listen: "127.0.0.1:0", Logger: testLogger()}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

var clientSeq atomic.Int64

// clientOpts returns paho options for addr with a unique client id and no
// automatic reconnects, so a refused or dropped connection stays visible.
func clientOpts(addr string) *paho.ClientOptions {
	return paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("test-%d", clientSeq.Add(1))).
		SetProtocolVersion(4). // MQTT 3.1.1 only: no silent retry as 3.1 when refused
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetKeepAlive(30 * time.Second)
}

// tryConnect connects and returns the connect error, if any.
func tryConnect(t *testing.T, opts *paho.ClientOptions) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c, nil
}

func connect(t *testing.T, opts *paho.ClientOptions) paho.Client {
	t.Helper()
	c, err := tryConnect(t, opts)
	if err != nil {
		t.Fatalf("connect %s: %v", opts.ClientID, err)
	}
	return c
}

// await waits for a paho token and fails the test on timeout or error.
func await(t *testing.T, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// inbox collects messages delivered to a paho handler.
type inbox chan paho.Message

func newInbox() inbox { return make(inbox, 100) }

func (in inbox) handler(_ paho.Client, m paho.Message) { in <- m }

// next returns the next message or fails the test after waitFor.
func (in inbox) next(t *testing.T) paho.Message {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message received")
		return nil
	}
}

// none asserts that nothing arrives within d.
func (in inbox) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-in:
		t.Fatalf("unexpected message on %s: %q", m.Topic(), m.Payload())
	case <-time.After(d):
	}
}

func subscribe(t *testing.T, c paho.Client, filter string, qos byte, in inbox) {
	t.Helper()
	await(t, "subscribe "+filter, c.Subscribe(filter, qos, in.handler))
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	await(t, "publish "+topic, c.Publish(topic, qos, retained, payload))
}

// writeUsersFile writes a users file with cheap bcrypt hashes; users maps
// username to "role:password".
func writeUsersFile(t *testing.T, users map[string]string) string {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("users:\n")
	for name, rp := range users {
		role, pw, _ := strings.Cut(rp, ":")
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "  - username: %s\n    password_hash: %q\n    role: %s\n", name, h, role)
	}
	path := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
