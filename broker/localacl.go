package broker

import (
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/linkedge/linkedge/internal/topics"
)

// A truck's local bus (Config.LocalBus) with a users file admits the roles
// sensor and app from the file, and the embedding agent under a login of
// its own that no file holds (AgentLogin).

const (
	// LocalAgentUser is the username of the truck agent's own clients on
	// its local bus (the inference bridge, the hold subscriber). A local
	// users file may not use it: its password is made afresh by New, so
	// that no file, and no one who can read one, knows it.
	LocalAgentUser = "linkedge-agent"

	// roleLocalAgent is LocalAgentUser's role. No file may assign it: it
	// is the only one that writes predictions and errors.
	roleLocalAgent Role = "linkedge-agent"

	// localAgentClientPrefix is how the agent names its local clients
	// (linkedge-agent-{truck}, linkedge-agent-hold-{truck}). A sensor or
	// app that took such an id first would keep the agent's own client
	// out (a session belongs to its creator), so they may not use it.
	localAgentClientPrefix = "linkedge-agent-"

	topicLocal     = topics.Prefix + "/local/"
	topicLocalHold = topicLocal + "hold/"
)

// localAllows is aclAllows for the roles of a local bus:
//
//	role     write                                          read
//	sensor   linkedge/v1/local/{model}/readings             linkedge/v1/local/+/predictions, …/+/errors
//	app      linkedge/v1/local/hold/{username}              linkedge/v1/local/#
//	agent    linkedge/v1/local/+/predictions, …/+/errors    linkedge/v1/local/+/readings, linkedge/v1/local/hold/+
//
// Only the agent answers readings, so what an application reads on the
// predictions topic is what the model said. No local role reaches beyond
// linkedge/v1/local/.
func localAllows(u User, topic string, write bool) bool {
	switch u.Role {
	case RoleSensor:
		if write {
			// linkedge/v1/local/hold/readings would be the readings of a
			// model named "hold", and is app "readings"'s hold topic.
			return within(topic, topicLocal+"+/readings") && !within(topic, topicLocalHold+"+")
		}
		return within(topic, topicLocal+"+/predictions") || within(topic, topicLocal+"+/errors")
	case RoleApp:
		if write {
			// Its own name only: no application releases another's hold.
			return topic == topicLocalHold+u.Username
		}
		return within(topic, topicLocal+"#")
	case roleLocalAgent:
		if write {
			return within(topic, topicLocal+"+/predictions") || within(topic, topicLocal+"+/errors")
		}
		return within(topic, topicLocal+"+/readings") || within(topic, topics.LocalHoldFilter)
	}
	return false
}

// isLocalRole reports whether r belongs on a truck's local bus.
func isLocalRole(r Role) bool {
	return r == RoleSensor || r == RoleApp || r == roleLocalAgent
}

// checkUsersFor refuses the roles of the other kind of broker: fleet roles
// on a local bus (a publisher or operator there would read every reading and
// prediction on the truck) and local roles on the fleet broker, where they
// mean nothing; and LocalAgentUser in a local file.
func checkUsersFor(users map[string]User, localBus bool) error {
	for _, name := range slices.Sorted(maps.Keys(users)) {
		u := users[name]
		switch {
		case localBus && name == LocalAgentUser:
			return fmt.Errorf("%w: username %q is reserved for the truck agent", ErrInvalidUsersFile, name)
		case localBus && !isLocalRole(u.Role):
			return fmt.Errorf("%w: user %q: role %q belongs on the fleet broker; a truck's local bus takes sensor or app", ErrInvalidUsersFile, name, u.Role)
		case !localBus && isLocalRole(u.Role):
			return fmt.Errorf("%w: user %q: role %q belongs on a truck's local bus (local_broker.users in truck.yaml); the fleet broker takes publisher, truck or operator", ErrInvalidUsersFile, name, u.Role)
		}
	}
	return nil
}

// addLocalAgent adds LocalAgentUser to users with a new random password
// and returns the password.
func addLocalAgent(users map[string]User) (string, error) {
	pw := rand.Text() // 130 random bits
	// The lowest cost is enough for a random password nobody can guess;
	// a higher one would only slow the agent's connects.
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		return "", fmt.Errorf("local bus agent login: %w", err)
	}
	users[LocalAgentUser] = User{Username: LocalAgentUser, PasswordHash: string(h), Role: roleLocalAgent}
	return pw, nil
}

// localClientIDRefused says why u may not connect as clientID on a local
// bus, or "" if it may.
func localClientIDRefused(u User, clientID string) string {
	if (u.Role == RoleSensor || u.Role == RoleApp) && strings.HasPrefix(clientID, localAgentClientPrefix) {
		return "client ids " + localAgentClientPrefix + "* belong to the truck agent"
	}
	return ""
}

// AgentLogin is the login of the embedding agent's own clients on a local
// bus (Config.LocalBus) with a users file: LocalAgentUser and the password
// New made. Both are empty otherwise; the bus is then anonymous.
func (b *Broker) AgentLogin() (username, password string) {
	if b.agentPassword == "" {
		return "", ""
	}
	return LocalAgentUser, b.agentPassword
}
