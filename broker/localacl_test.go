package broker

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLocalACL: what the roles of a truck's local bus may do, and that they
// and the fleet's roles stay on their own trees.
func TestLocalACL(t *testing.T) {
	sensor := User{Username: "can-gw", Role: RoleSensor}
	app := User{Username: "nav", Role: RoleApp}
	agent := User{Username: LocalAgentUser, Role: roleLocalAgent}
	pub := User{Username: "fleet", Role: RolePublisher}
	truck := User{Username: "t1", Role: RoleTruck}
	ops := User{Username: "ops", Role: RoleOperator}
	const (
		readings    = "linkedge/v1/local/aps-failure/readings"
		predictions = "linkedge/v1/local/aps-failure/predictions"
		errs        = "linkedge/v1/local/aps-failure/errors"
		navHold     = "linkedge/v1/local/hold/nav"
		craneHold   = "linkedge/v1/local/hold/crane"
	)
	tests := []struct {
		user  User
		topic string
		write bool
		want  bool
	}{
		// sensor: readings of any model in; that model's answers out.
		{sensor, readings, true, true},
		{sensor, "linkedge/v1/local/other-model/readings", true, true},
		{sensor, "linkedge/v1/local/hold/readings", true, false}, // app "readings"'s hold topic
		{sensor, predictions, true, false},
		{sensor, errs, true, false},
		{sensor, navHold, true, false},
		{sensor, predictions, false, true},
		{sensor, errs, false, true},
		{sensor, "linkedge/v1/local/+/predictions", false, true},
		{sensor, readings, false, false},
		{sensor, "linkedge/v1/local/#", false, false},
		{sensor, navHold, false, false},
		// app: reads the local tree, writes its own hold only.
		{app, navHold, true, true},
		{app, craneHold, true, false},
		{app, "linkedge/v1/local/hold/+", true, false},
		{app, "linkedge/v1/local/hold/nav/x", true, false},
		{app, predictions, true, false},
		{app, errs, true, false},
		{app, readings, true, false},
		{app, "linkedge/v1/local/#", false, true},
		{app, "$share/g/linkedge/v1/local/#", false, true},
		{app, predictions, false, true},
		{app, craneHold, false, true},
		{app, "linkedge/v1/#", false, false},
		{app, "#", false, false},
		// the agent: answers readings and takes holds.
		{agent, predictions, true, true},
		{agent, errs, true, true},
		{agent, readings, true, false},
		{agent, navHold, true, false},
		{agent, readings, false, true},
		{agent, "linkedge/v1/local/hold/+", false, true},
		{agent, "linkedge/v1/local/#", false, false},
		// Local roles get nothing on the fleet tree.
		{sensor, "linkedge/v1/trucks/t1/status", true, false},
		{sensor, "linkedge/v1/models/#", false, false},
		{app, "linkedge/v1/trucks/t1/desired", true, false},
		{app, "linkedge/v1/models/aps-failure/release", false, false},
		{app, "linkedge/v1/trucks/+/status", false, false},
		{agent, "linkedge/v1/trucks/t1/predictions/aps-failure", true, false},
		{agent, "linkedge/v1/models/#", false, false},
		{sensor, "$SYS/broker/uptime", false, false},
		// Fleet roles may write nothing local.
		{pub, readings, true, false},
		{pub, predictions, true, false},
		{pub, navHold, true, false},
		{truck, predictions, true, false},
		{truck, readings, true, false},
		{truck, readings, false, false},
		{ops, predictions, true, false},
	}
	for _, tc := range tests {
		if got := aclAllows(tc.user, tc.topic, tc.write); got != tc.want {
			t.Errorf("aclAllows(%s %s, %q, write=%v) = %v, want %v",
				tc.user.Role, tc.user.Username, tc.topic, tc.write, got, tc.want)
		}
	}
}

// TestLocalUsersFile: a users file holds the roles of one kind of broker,
// and a local one may not name the agent.
func TestLocalUsersFile(t *testing.T) {
	tests := []struct {
		name     string
		users    map[string]string
		localBus bool
		wantErr  string
	}{
		{"local roles on a local bus", map[string]string{"can-gw": "sensor:pw", "nav": "app:pw"}, true, ""},
		{"fleet roles on the fleet broker", map[string]string{"fleet": "publisher:pw", "t1": "truck:pw"}, false, ""},
		{"publisher on a local bus", map[string]string{"nav": "app:pw", "fleet": "publisher:pw"}, true, "belongs on the fleet broker"},
		{"operator on a local bus", map[string]string{"ops": "operator:pw"}, true, "belongs on the fleet broker"},
		{"sensor on the fleet broker", map[string]string{"fleet": "publisher:pw", "can-gw": "sensor:pw"}, false, "belongs on a truck's local bus"},
		{"app on the fleet broker", map[string]string{"nav": "app:pw"}, false, "belongs on a truck's local bus"},
		{"the agent's username", map[string]string{LocalAgentUser: "app:pw"}, true, "reserved"},
		{"the agent's role", map[string]string{"x": string(roleLocalAgent) + ":pw"}, true, "unknown role"},
		{"app name that is no topic level", map[string]string{"nav@truck": "app:pw"}, true, "app username"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeUsersFile(t, tc.users)
			b, err := New(Config{Listen: "127.0.0.1:0", UsersFile: path, LocalBus: tc.localBus, Logger: testLogger()})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				b.Close()
				return
			}
			if !errors.Is(err, ErrInvalidUsersFile) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New: %v, want ErrInvalidUsersFile containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestLocalBusLogins: with a users file a local bus refuses anonymous and
// wrong logins, admits the agent under the login New made (and no one else
// under its name or client ids), and holds each role to its topics over a
// real connection.
func TestLocalBusLogins(t *testing.T) {
	users := writeUsersFile(t, map[string]string{"can-gw": "sensor:gw-pw", "nav": "app:nav-pw"})
	b := startBroker(t, func(c *Config) { c.UsersFile, c.LocalBus = users, true })
	agentUser, agentPW := b.AgentLogin()
	if agentUser != LocalAgentUser || len(agentPW) < 20 {
		t.Fatalf("AgentLogin() = %q, %q; want %q and a long random password", agentUser, agentPW, LocalAgentUser)
	}
	for _, tc := range []struct {
		name, user, pass, clientID string
		wantOK                     bool
	}{
		{"sensor", "can-gw", "gw-pw", "", true},
		{"app", "nav", "nav-pw", "", true},
		{"agent", agentUser, agentPW, "linkedge-agent-t1", true},
		{"anonymous", "", "", "", false},
		{"wrong password", "can-gw", "nav-pw", "", false},
		{"agent with a guess", LocalAgentUser, "linkedge", "", false},
		{"sensor under the agent's client id", "can-gw", "gw-pw", "linkedge-agent-t1", false},
		{"app under the agent's hold client id", "nav", "nav-pw", "linkedge-agent-hold-t1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := clientOpts(b.Addr()).SetUsername(tc.user).SetPassword(tc.pass)
			if tc.clientID != "" {
				o.SetClientID(tc.clientID)
			}
			c, err := tryConnect(t, o)
			if tc.wantOK && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tc.wantOK && err == nil {
				t.Error("connected, want refused")
			}
			if c != nil {
				c.Disconnect(0)
			}
		})
	}

	agent := connect(t, clientOpts(b.Addr()).SetUsername(agentUser).SetPassword(agentPW))
	sensor := connect(t, clientOpts(b.Addr()).SetUsername("can-gw").SetPassword("gw-pw"))
	app := connect(t, clientOpts(b.Addr()).SetUsername("nav").SetPassword("nav-pw"))
	toAgent, toApp := newInbox(), newInbox()
	subscribe(t, agent, "linkedge/v1/local/+/readings", 0, toAgent)
	subscribe(t, app, "linkedge/v1/local/#", 0, toApp)

	// A fake answer from the sensor is dropped; its reading goes through.
	publish(t, sensor, "linkedge/v1/local/m/predictions", 0, false, "fake")
	publish(t, sensor, "linkedge/v1/local/m/readings", 0, false, "r-1")
	if m := toAgent.next(t); string(m.Payload()) != "r-1" {
		t.Fatalf("agent got %q on %s, want the reading r-1", m.Payload(), m.Topic())
	}
	if m := toApp.next(t); m.Topic() != "linkedge/v1/local/m/readings" {
		t.Fatalf("app got %q on %s before the reading: the fake answer went through", m.Payload(), m.Topic())
	}
	publish(t, agent, "linkedge/v1/local/m/predictions", 0, false, "p-1")
	if m := toApp.next(t); string(m.Payload()) != "p-1" {
		t.Fatalf("app got %q, want the agent's p-1", m.Payload())
	}
	// The app's own hold goes through, retained.
	publish(t, app, "linkedge/v1/local/hold/nav", 1, true, `{"reason":"moving"}`)
	if m := toApp.next(t); m.Topic() != "linkedge/v1/local/hold/nav" {
		t.Fatalf("app got %s, want its own hold", m.Topic())
	}
	// Another app's hold is refused: under MQTT 3.1.1 a refused QoS 1
	// publish closes the connection.
	app.Publish("linkedge/v1/local/hold/crane", 1, true, `{"reason":"forged"}`).WaitTimeout(waitFor)
	deadline := time.Now().Add(waitFor)
	for app.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if app.IsConnectionOpen() {
		t.Fatal("the app's publish on another app's hold was not refused")
	}
	watch := newInbox()
	app2 := connect(t, clientOpts(b.Addr()).SetUsername("nav").SetPassword("nav-pw"))
	subscribe(t, app2, "linkedge/v1/local/hold/+", 1, watch)
	if m := watch.next(t); m.Topic() != "linkedge/v1/local/hold/nav" {
		t.Fatalf("retained %s, want only nav's hold", m.Topic())
	}
	watch.none(t, 200*time.Millisecond)
}

// TestLocalBusAnonymousWithoutUsers: without a users file a local bus
// stays as it was, open to anyone, and the agent needs no login.
func TestLocalBusAnonymousWithoutUsers(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.LocalBus = true })
	if u, p := b.AgentLogin(); u != "" || p != "" {
		t.Fatalf("AgentLogin() = %q, %q; want none", u, p)
	}
	c := connect(t, clientOpts(b.Addr()))
	in := newInbox()
	subscribe(t, c, "linkedge/v1/local/#", 0, in)
	publish(t, c, "linkedge/v1/local/m/predictions", 0, false, "p")
	if m := in.next(t); string(m.Payload()) != "p" {
		t.Fatalf("got %q", m.Payload())
	}
}

// TestLocalSensorCannotRetain: a sensor's retained reading is delivered
// without the retain flag and counted, so no later subscriber (the agent
// after a restart) scores a stale reading, and a sensor cannot fill the
// bus's retained store; an app's hold stays retained.
func TestLocalSensorCannotRetain(t *testing.T) {
	users := writeUsersFile(t, map[string]string{"can-gw": "sensor:gw-pw", "nav": "app:nav-pw"})
	b := startBroker(t, func(c *Config) { c.UsersFile, c.LocalBus = users, true })
	agentUser, agentPW := b.AgentLogin()
	agent := connect(t, clientOpts(b.Addr()).SetUsername(agentUser).SetPassword(agentPW))
	live := newInbox()
	subscribe(t, agent, "linkedge/v1/local/+/readings", 1, live)

	sensor := connect(t, clientOpts(b.Addr()).SetUsername("can-gw").SetPassword("gw-pw"))
	publish(t, sensor, "linkedge/v1/local/m/readings", 1, true, "r-1")
	if m := live.next(t); string(m.Payload()) != "r-1" || m.Retained() {
		t.Fatalf("agent got %q retained=%v, want r-1 delivered live", m.Payload(), m.Retained())
	}
	app := connect(t, clientOpts(b.Addr()).SetUsername("nav").SetPassword("nav-pw"))
	publish(t, app, "linkedge/v1/local/hold/nav", 1, true, `{"reason":"moving"}`)

	later := newInbox()
	app2 := connect(t, clientOpts(b.Addr()).SetUsername("nav").SetPassword("nav-pw"))
	subscribe(t, app2, "linkedge/v1/local/#", 1, later)
	// mochi acknowledges a publish before it delivers it, so the hold may
	// also arrive live; a reading must not arrive at all.
	if m := later.next(t); m.Topic() != "linkedge/v1/local/hold/nav" {
		t.Fatalf("a later subscriber got %q on %s, want only the app's retained hold", m.Payload(), m.Topic())
	}
	for end := time.After(200 * time.Millisecond); ; {
		select {
		case m := <-later:
			if m.Topic() != "linkedge/v1/local/hold/nav" {
				t.Fatalf("a later subscriber got %q on %s (retained %v), want only the app's hold", m.Payload(), m.Topic(), m.Retained())
			}
			continue
		case <-end:
		}
		break
	}
	if got := metricOf(t, b, "linkedge_broker_retain_dropped_total"); got != 1 {
		t.Errorf("retain_dropped_total = %v, want 1", got)
	}
}
