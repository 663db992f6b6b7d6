package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"
)

// authBroker starts a broker with a publisher, two trucks and an operator.
func authBroker(t *testing.T) *Broker {
	t.Helper()
	users := writeUsersFile(t, map[string]string{
		"fleet": "publisher:fleet-pw",
		"t1":    "truck:t1-pw",
		"t2":    "truck:t2-pw",
		"ops":   "operator:ops-pw",
	})
	return startBroker(t, func(c *Config) { c.UsersFile = users })
}

func TestAuthentication(t *testing.T) {
	b := authBroker(t)
	tests := []struct {
		name, user, pass, clientID, will string
		wantOK                           bool
	}{
		{"publisher", "fleet", "fleet-pw", "", "", true},
		{"truck", "t1", "t1-pw", "linkedge-truck-t1", "", true},
		{"operator", "ops", "ops-pw", "", "", true},
		{"truck with will on its own status", "t1", "t1-pw", "linkedge-truck-t1", "linkedge/v1/trucks/t1/status", true},
		{"truck with will on its own presence", "t1", "t1-pw", "linkedge-truck-t1", "linkedge/v1/trucks/t1/presence", true},
		{"truck with will on another truck's presence", "t1", "t1-pw", "linkedge-truck-t1", "linkedge/v1/trucks/t2/presence", false},
		{"truck under another client id", "t1", "t1-pw", "t1", "", false},
		{"truck under another truck's client id", "t1", "t1-pw", "linkedge-truck-t2", "", false},
		{"operator under a truck's client id", "ops", "ops-pw", "linkedge-truck-t3", "", false},
		{"wrong password", "t1", "t2-pw", "", "", false},
		{"unknown user", "nobody", "t1-pw", "", "", false},
		{"anonymous", "", "", "", "", false},
		{"reserved inline client id", "fleet", "fleet-pw", "inline", "", false},
		{"truck with will on a model topic", "t1", "t1-pw", "", "linkedge/v1/models/detector/release", false},
		{"truck with will on another truck", "t1", "t1-pw", "", "linkedge/v1/trucks/t2/status", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := clientOpts(b.Addr()).SetUsername(tc.user).SetPassword(tc.pass)
			if tc.clientID != "" {
				o.SetClientID(tc.clientID)
			}
			if tc.will != "" {
				o.SetBinaryWill(tc.will, []byte("offline"), 1, true)
			}
			_, err := tryConnect(t, o)
			if tc.wantOK && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tc.wantOK && err == nil {
				t.Error("connected, want refused")
			}
		})
	}
	if got := b.auth.authFailures.Load(); got != 10 {
		t.Errorf("auth failures = %d, want 10", got)
	}
}

func TestACL(t *testing.T) {
	b := authBroker(t)
	login := func(user string) *paho.ClientOptions {
		o := clientOpts(b.Addr()).SetUsername(user).SetPassword(user + "-pw")
		if strings.HasPrefix(user, "t") {
			o.SetClientID("linkedge-truck-" + user)
		}
		return o
	}

	// The publisher reads everything, so it sees what gets through.
	watch := newInbox()
	fleet := connect(t, login("fleet"))
	subscribe(t, fleet, "linkedge/v1/#", 1, watch)

	t1 := connect(t, login("t1"))
	// Refused QoS 0 publishes are dropped silently; a later allowed message
	// from the same client proves the refused ones were not forwarded.
	for _, topic := range []string{
		"linkedge/v1/trucks/t2/status",
		"linkedge/v1/models/detector",
		"linkedge/v1/trucks/t1x/status",
		"linkedge/v1/trucks/t1/desired",
		"linkedge/v1/trucks/t1/grant",
		"linkedge/v1/trucks/t1/anything",
	} {
		publish(t, t1, topic, 0, false, "forbidden")
	}
	publish(t, t1, "linkedge/v1/trucks/t1/status", 1, false, "allowed")
	if m := watch.next(t); m.Topic() != "linkedge/v1/trucks/t1/status" {
		t.Errorf("publisher saw %s %q first, want t1's own status", m.Topic(), m.Payload())
	}

	// A refused QoS 1 publish from an MQTT 3.1.1 client closes its
	// connection (there is no negative PUBACK before MQTT 5).
	publish(t, fleet, "linkedge/v1/trucks/t1/desired", 1, false, "model=v2")
	watch.next(t) // the publisher's own message
	t1.Publish("linkedge/v1/models/detector", 1, false, "forbidden").WaitTimeout(time.Second)
	deadline := time.Now().Add(waitFor)
	for t1.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if t1.IsConnectionOpen() {
		t.Error("truck still connected after a refused QoS 1 publish")
	}
	watch.none(t, 200*time.Millisecond)

	t.Run("subscriptions", func(t *testing.T) {
		tests := []struct {
			user, filter string
			granted      bool
		}{
			{"t2", "linkedge/v1/models/#", true},
			{"t2", "linkedge/v1/trucks/t2/desired", true},
			{"t2", "linkedge/v1/trucks/t1/desired", false},
			{"t2", "linkedge/v1/trucks/+/desired", false},
			{"t2", "linkedge/v1/#", false},
			{"t2", "$share/g/linkedge/v1/models/#", true},
			{"ops", "linkedge/v1/#", true},
			{"ops", "#", false},
			{"fleet", "#", true},
		}
		for _, tc := range tests {
			c := connect(t, login(tc.user))
			tok := c.Subscribe(tc.filter, 1, newInbox().handler)
			if !tok.WaitTimeout(waitFor) {
				t.Fatalf("%s subscribe %s timed out", tc.user, tc.filter)
			}
			code := tok.(interface{ Result() map[string]byte }).Result()[tc.filter]
			if granted := code < 0x80; granted != tc.granted {
				t.Errorf("%s subscribe %s: code %#x, want granted=%v", tc.user, tc.filter, code, tc.granted)
			}
		}
	})

	t.Run("operator cannot publish", func(t *testing.T) {
		ops := connect(t, login("ops"))
		publish(t, ops, "linkedge/v1/models/detector", 0, false, "forbidden")
		publish(t, fleet, "linkedge/v1/models/detector", 1, false, "from fleet")
		if m := watch.next(t); string(m.Payload()) != "from fleet" {
			t.Errorf("publisher saw %q, want only its own message", m.Payload())
		}
	})
}

// TestSessionOwnedByUser checks that a user cannot resume (and so drain or
// kick off) another user's persistent session by reusing its client id.
func TestSessionOwnedByUser(t *testing.T) {
	b := authBroker(t)
	o := clientOpts(b.Addr()).SetClientID("shared").SetCleanSession(false).SetUsername("fleet").SetPassword("fleet-pw")
	fleet := connect(t, o)
	subscribe(t, fleet, "linkedge/v1/trucks/t1/status", 1, newInbox())
	fleet.Disconnect(100)

	thief := clientOpts(b.Addr()).SetClientID("shared").SetCleanSession(false).SetUsername("ops").SetPassword("ops-pw")
	if _, err := tryConnect(t, thief); err == nil {
		t.Error("ops resumed fleet's session")
	}
	if _, err := tryConnect(t, clientOpts(b.Addr()).SetClientID("shared").SetCleanSession(false).SetUsername("fleet").SetPassword("fleet-pw")); err != nil {
		t.Errorf("owner refused: %v", err)
	}
}

func TestAnonymousAccess(t *testing.T) {
	b := startBroker(t, nil)
	c := connect(t, clientOpts(b.Addr()).SetUsername("anyone"))
	in := newInbox()
	subscribe(t, c, "#", 0, in)
	publish(t, c, "anything/at/all", 0, false, "x")
	in.next(t)
	if _, err := tryConnect(t, clientOpts(b.Addr()).SetClientID("inline")); err == nil {
		t.Error("network client took the inline client id")
	}
}

func TestParseUsers(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h := string(hash)
	entry := func(name, role, hash string) string {
		return "  - username: " + name + "\n    password_hash: '" + hash + "'\n    role: " + role + "\n"
	}
	tests := []struct {
		name, doc, wantErr string
	}{
		{"valid", "users:\n" + entry("fleet", "publisher", h) + entry("t-1", "truck", h) + entry("ops@example.com", "operator", h), ""},
		{"empty", "", "empty"},
		{"no users", "users: []\n", "no users"},
		{"unknown field", "users:\n" + entry("a", "truck", h) + "    admin: true\n", "admin"},
		{"unknown top-level field", "users: []\nextra: 1\n", "extra"},
		{"plaintext password", "users:\n" + entry("a", "truck", "secret"), "not a bcrypt hash"},
		{"sha256 password", "users:\n" + entry("a", "truck", "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"), "not a bcrypt hash"},
		{"unknown role", "users:\n" + entry("a", "admin", h), "unknown role"},
		{"duplicate", "users:\n" + entry("a", "truck", h) + entry("a", "operator", h), "duplicate"},
		{"slash in username", "users:\n" + entry("t1/x", "truck", h), "username"},
		{"wildcard in username", "users:\n" + entry("t+", "truck", h), "username"},
		{"truck id too long", "users:\n" + entry(strings.Repeat("t", 65), "truck", h), "username"},
		{"operator with slash", "users:\n" + entry("ops/x", "operator", h), "username"},
		{"two documents", "users:\n" + entry("a", "truck", h) + "---\nusers: []\n", "more than one"},
		{"not a mapping", "- a\n- b\n", "cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			users, err := ParseUsers([]byte(tc.doc))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseUsers: %v", err)
				}
				if users["t-1"].Role != RoleTruck || len(users) != 3 {
					t.Errorf("users = %+v", users)
				}
				return
			}
			if !errors.Is(err, ErrInvalidUsersFile) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want ErrInvalidUsersFile containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if bcrypt.CompareHashAndPassword([]byte(h), []byte("correct horse")) != nil {
		t.Error("hash does not verify")
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("empty password accepted")
	}
	if _, err := HashPassword(strings.Repeat("x", 73)); err == nil {
		t.Error("73-byte password accepted (bcrypt would truncate it)")
	}
}

func FuzzParseUsers(f *testing.F) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	f.Add([]byte("users:\n  - username: t1\n    password_hash: '" + string(hash) + "'\n    role: truck\n"))
	f.Add([]byte("users: []\n"))
	f.Add([]byte("users:\n  - {username: a, role: operator, password_hash: x}\n"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("users: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := ParseUsers(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidUsersFile) {
				t.Fatalf("error not wrapped in ErrInvalidUsersFile: %v", err)
			}
			return
		}
		if len(users) == 0 {
			t.Fatal("success without users")
		}
		for name, u := range users {
			if name != u.Username || u.validate() != nil {
				t.Fatalf("invalid user accepted: %q -> %+v", name, u)
			}
		}
	})
}

// A5: one truck login cannot fill the broker. It may retain a message on
// its status and presence topics only, and a packet above max_packet_size cuts it off
// before the broker reads it.
func TestTruckCannotFillTheBroker(t *testing.T) {
	b := authBroker(t)
	truck := func() paho.Client {
		return connect(t, clientOpts(b.Addr()).SetClientID("linkedge-truck-t1").SetUsername("t1").SetPassword("t1-pw"))
	}
	t1 := truck()
	for i := range 50 {
		publish(t, t1, fmt.Sprintf("linkedge/v1/trucks/t1/predictions/m%d", i), 1, true, "flood")
	}
	publish(t, t1, "linkedge/v1/trucks/t1/events", 1, true, "flood")
	publish(t, t1, "linkedge/v1/trucks/t1/status", 1, true, "online")
	publish(t, t1, "linkedge/v1/trucks/t1/presence", 1, true, "online")
	var kept []string
	for topic := range b.Server().Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$SYS/") {
			kept = append(kept, topic)
		}
	}
	slices.Sort(kept)
	if !slices.Equal(kept, []string{"linkedge/v1/trucks/t1/presence", "linkedge/v1/trucks/t1/status"}) {
		t.Fatalf("retained after a truck's flood: %q; want its status and presence alone", kept)
	}

	big := make([]byte, DefaultMaxPacketSize+1)
	t1.Publish("linkedge/v1/trucks/t1/events", 0, false, big).WaitTimeout(time.Second)
	deadline := time.Now().Add(waitFor)
	for t1.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if t1.IsConnectionOpen() {
		t.Fatal("a truck sending a packet above max_packet_size is still connected")
	}
	// The broker goes on; a packet just under the limit passes.
	t1 = truck()
	publish(t, t1, "linkedge/v1/trucks/t1/events", 1, false, string(big[:DefaultMaxPacketSize-100]))
}

// A12: after 10 failed logins for one username from one address within a
// minute, the next login for it from that address is refused without a
// password check (so a guessing flood costs the broker no bcrypt time),
// even with the right password; other users on the address log in.
func TestFailedLoginsThrottled(t *testing.T) {
	b := authBroker(t)
	login := func(user, pass string) error {
		_, err := tryConnect(t, clientOpts(b.Addr()).SetClientID("linkedge-truck-"+user).SetUsername(user).SetPassword(pass))
		return err
	}
	for i := range maxFailsPerAddrUser {
		if err := login("t1", "guess"); err == nil {
			t.Fatalf("guess %d logged in", i)
		}
	}
	if err := login("t1", "t1-pw"); err == nil {
		t.Fatal("t1 logged in during the throttle")
	}
	if n := b.auth.throttled.Load(); n != 1 {
		t.Fatalf("%d logins throttled, want 1", n)
	}
	if err := login("t2", "t2-pw"); err != nil {
		t.Fatalf("t2 from the same address: %v", err)
	}
}

func TestLoginLimiterWindow(t *testing.T) {
	l := newLoginLimiter()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	for range maxFailsPerAddrUser {
		l.failed("10.0.0.1:4000", "t1")
	}
	if !l.blocked("10.0.0.1:5000", "t1") || l.blocked("10.0.0.2:4000", "t1") || l.blocked("10.0.0.1:4000", "t2") {
		t.Fatal("blocked the wrong address or user")
	}
	now = now.Add(failWindowLen)
	if l.blocked("10.0.0.1:4000", "t1") {
		t.Fatal("still blocked after the window")
	}
	for i := range maxFailsPerAddr {
		l.failed("10.0.0.3:1", fmt.Sprintf("user-%d", i))
	}
	if !l.blocked("10.0.0.3:1", "anyone") {
		t.Fatal("an address spraying usernames is not blocked")
	}
}
