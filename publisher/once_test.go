package publisher

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/broker"
)

func TestPublishOnce(t *testing.T) {
	e := newEnv(t)
	b := startBroker(t, "127.0.0.1:0")
	e.add("aps", 1, true)
	e.add("aps", 2, false)
	e.add("old", 1, true)
	e.add("old", 2, true)
	e.add("gone", 1, false)
	e.reject("gone", 1)
	cfg := e.config(b.Addr())
	cfg.ArtifactListen = DefaultArtifactListen

	refused := []struct {
		name    string
		model   string
		version int64
		want    error
		msg     string
	}{
		{"unknown model", "nope", 1, ErrUnknownVersion, `no model "nope"`},
		{"unknown version", "aps", 9, ErrUnknownVersion, "has no version 9 (it has [1 2])"},
		{"pending", "aps", 2, ErrNotApproved, "aps version 2 is pending"},
		{"rejected", "gone", 1, ErrNotApproved, "gone version 1 is rejected"},
		{"superseded", "old", 1, ErrSuperseded, "higher version 2"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := PublishOnce(t.Context(), cfg, tt.model, tt.version)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("PublishOnce error = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
	if len(e.state().Models) != 0 {
		t.Fatal("a refused PublishOnce touched the state file")
	}

	t.Run("acknowledged", func(t *testing.T) {
		r, err := PublishOnce(t.Context(), cfg, "aps", 1)
		if err != nil {
			t.Fatal(err)
		}
		// Returned only after the PUBACK: the broker already retains it.
		got := e.verify(subscribe(t, b.Addr(), "aps").next())
		if got.Serial != r.Serial || got.Stable.Version != 1 {
			t.Fatalf("retained serial %d version %d, want %d version 1", got.Serial, got.Stable.Version, r.Serial)
		}
		if got.Stable.Artifact.URL != "http://127.0.0.1:9884/artifacts/aps/1/model.tar.gz" {
			t.Errorf("url %s", got.Stable.Artifact.URL)
		}
		if a := e.state().Models["aps"].Announced; a == nil || a.Serial != r.Serial {
			t.Fatalf("not recorded: %+v", a)
		}
		// Announcing again always signs a new serial.
		r2, err := PublishOnce(t.Context(), cfg, "aps", 1)
		if err != nil || r2.Serial <= r.Serial {
			t.Fatalf("second PublishOnce: serial %v (first %d), %v", r2, r.Serial, err)
		}
	})

	t.Run("running publisher does not repeat it", func(t *testing.T) {
		s := subscribe(t, b.Addr(), "aps")
		retained := e.verify(s.next())
		pcfg := e.config(b.Addr())
		start(t, pcfg)
		s.none(20 * pcfg.PollInterval)
		e.approve("aps", 2)
		r, err := PublishOnce(t.Context(), cfg, "aps", 2)
		if err != nil {
			t.Fatal(err)
		}
		// Either PublishOnce or the service announces v2 first; the state
		// lock makes the other see it is done. At most two documents:
		// PublishOnce always announces.
		got := e.verify(s.next())
		if got.Stable.Version != 2 || got.Serial <= retained.Serial {
			t.Fatalf("got version %d serial %d", got.Stable.Version, got.Serial)
		}
		if got.Serial != r.Serial {
			if again := e.verify(s.next()); again.Serial != r.Serial {
				t.Fatalf("PublishOnce's document (serial %d) never arrived", r.Serial)
			}
		}
		s.none(20 * pcfg.PollInterval)
	})
}

func TestPublishOnceUnreachable(t *testing.T) {
	e := newEnv(t)
	e.add("aps", 1, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := e.config(addr)
	cfg.ArtifactBaseURL = "https://models.example.com"
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err = PublishOnce(ctx, cfg, "aps", 1)
	if !errors.Is(err, ErrBrokerUnreachable) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("error = %v, want ErrBrokerUnreachable with the cause", err)
	}
	if took := time.Since(begin); took > 4*time.Second {
		t.Errorf("gave up after %s; the deadline was 1.5s", took)
	}
	if len(e.state().Models) != 0 {
		t.Error("state changed although nothing was signed")
	}
}

// A broker that accepts the connection but never acknowledges the publish:
// PublishOnce fails with ErrNoAck, nothing is recorded as announced, but the
// serial stays reserved so the next document uses a higher one.
func TestPublishOnceNoAck(t *testing.T) {
	e := newEnv(t)
	e.add("aps", 1, true)
	addr := silentBroker(t)
	cfg := e.config(addr)
	cfg.ArtifactBaseURL = "https://models.example.com"
	cfg.PublishTimeout = 300 * time.Millisecond
	_, err := PublishOnce(t.Context(), cfg, "aps", 1)
	if !errors.Is(err, ErrNoAck) {
		t.Fatalf("error = %v, want ErrNoAck", err)
	}
	ms := e.state().Models["aps"]
	if ms == nil || ms.Announced != nil || ms.SignedSerial == 0 {
		t.Fatalf("state after an unacknowledged publish: %+v", ms)
	}

	b := startBroker(t, "127.0.0.1:0")
	cfg.Broker = "tcp://" + b.Addr()
	r, err := PublishOnce(t.Context(), cfg, "aps", 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Serial <= ms.SignedSerial {
		t.Fatalf("serial %d reused or below the reserved %d", r.Serial, ms.SignedSerial)
	}
}

// silentBroker accepts MQTT connections, answers CONNECT with CONNACK and
// then ignores everything. It returns its address.
func silentBroker(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if _, err := readPacket(r); err != nil { // CONNECT
					return
				}
				c.Write([]byte{0x20, 0x02, 0x00, 0x00}) // CONNACK, accepted
				io.Copy(io.Discard, r)
			}()
		}
	}()
	return ln.Addr().String()
}

// readPacket reads one MQTT control packet (fixed header, variable-length
// remaining length, body).
func readPacket(r *bufio.Reader) ([]byte, error) {
	if _, err := r.ReadByte(); err != nil {
		return nil, err
	}
	n, mult := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		mult *= 128
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return body, err
}

// Wrong credentials fail PublishOnce at once, and the service says why it
// cannot connect instead of retrying silently.
func TestBadCredentials(t *testing.T) {
	e := newEnv(t)
	e.add("aps", 1, true)
	hash, err := broker.HashPassword("right")
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(e.dir, "users.yaml")
	os.WriteFile(users, []byte("users:\n  - username: publisher\n    password_hash: \""+hash+"\"\n    role: publisher\n"), 0o600)
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", UsersFile: users, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	cfg := e.config(b.Addr())
	cfg.ArtifactBaseURL = "https://models.example.com"
	cfg.Username, cfg.Password = "publisher", "wrong"
	begin := time.Now()
	_, err = PublishOnce(t.Context(), cfg, "aps", 1)
	if !errors.Is(err, ErrBrokerRefused) || time.Since(begin) > 5*time.Second {
		t.Fatalf("after %s: error %v, want ErrBrokerRefused at once", time.Since(begin), err)
	}

	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	start(t, cfg)
	deadline := time.Now().Add(waitFor)
	for !strings.Contains(logs.String(), "cannot connect to the broker") {
		if time.Now().After(deadline) {
			t.Fatalf("no connection error logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	cfg.Password = "right"
	if _, err := PublishOnce(t.Context(), cfg, "aps", 1); err != nil {
		t.Fatalf("with the right password: %v", err)
	}
}
