package broker

import (
	"strings"

	"github.com/linkedge/linkedge/internal/topics"
)

// Topic patterns of the LinkEdge topic tree the roles are built on.
const (
	topicRoot    = topics.Prefix + "/#"
	topicModels  = topics.Prefix + "/models/#"
	topicTrucks  = topics.Prefix + "/trucks/"
	topicDesired = topicTrucks + "+/desired"
	topicGrant   = topicTrucks + "+/grant"
)

// aclAllows reports whether u may publish to (write) or subscribe to and
// receive from (read) topic, which for reads may be a filter with wildcards.
//
//	role       write                                          read
//	publisher  linkedge/v1/models/#, linkedge/v1/trucks/+/desired,  everything
//	           linkedge/v1/trucks/+/grant
//	truck      linkedge/v1/trucks/{id}/status, …/{id}/presence, linkedge/v1/models/#, linkedge/v1/trucks/{id}/desired,
//	           …/{id}/events, …/{id}/predictions/+,            linkedge/v1/trucks/{id}/grant
//	           …/{id}/grant-request
//	operator   nothing                                        linkedge/v1/#
//
// A truck writes only what an agent sends: not its own desired or grant
// topics (only the publisher's signed documents belong there), and a
// retained message only on its status and presence (see authHook.OnPublish).
//
// The roles of a truck's local bus (sensor, app and the agent's own) are
// localAllows's, in localacl.go.
func aclAllows(u User, topic string, write bool) bool {
	if write && strings.HasPrefix(topic, "$") {
		// $share/... is a subscription syntax, not a topic to publish to,
		// and $SYS belongs to the broker.
		return false
	}
	switch u.Role {
	case RolePublisher:
		if !write {
			return true
		}
		return within(topic, topicModels) || within(topic, topicDesired) || within(topic, topicGrant)
	case RoleTruck:
		own := topicTrucks + u.Username
		if write {
			switch topic {
			case own + "/status", own + "/presence", own + "/events", own + "/grant-request":
				return true
			}
			return within(topic, own+"/predictions/+")
		}
		return within(topic, topicModels) || within(topic, own+"/desired") || within(topic, own+"/grant")
	case RoleOperator:
		return !write && within(topic, topicRoot)
	case RoleSensor, RoleApp, roleLocalAgent:
		return localAllows(u, topic, write) // a truck's local bus: localacl.go
	}
	return false
}

// within reports whether every topic that filter matches is also matched by
// pattern, so a subscription can never reach further than the role allows
// (a truck may not subscribe to linkedge/v1/trucks/+/desired just because
// its own desired topic is among the matches). A plain topic name is a filter
// without wildcards. Shared subscriptions ($share/{group}/{filter}) are judged
// by their inner filter.
func within(filter, pattern string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, inner, ok := strings.Cut(rest, "/")
		if !ok || inner == "" {
			return false
		}
		filter = inner
	}
	f := strings.Split(filter, "/")
	p := strings.Split(pattern, "/")
	for i, pl := range p {
		if pl == "#" {
			// "a/#" also matches "a" itself, so running out of filter
			// levels here is fine.
			return true
		}
		if i >= len(f) {
			return false
		}
		fl := f[i]
		switch {
		case fl == "#":
			return false // the filter reaches deeper than the pattern allows
		case pl == "+":
			// any single level, literal or '+', matches
		case fl != pl: // includes fl == "+" against a literal level
			return false
		}
	}
	return len(f) == len(p)
}
