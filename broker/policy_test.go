package broker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// iotPolicy is the part of an AWS IoT Core policy document LinkEdge's
// policies use: Allow and Deny statements of actions on resources, with
// the thing-name policy variable. (Conditions are not evaluated: the one
// used, Thing.IsAttached, holds for every truck connecting with its own
// certificate.)
type iotPolicy struct {
	Version   string
	Statement []struct {
		Effect    string
		Action    stringOrList
		Resource  stringOrList
		Condition json.RawMessage
	}
}

type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(s))
}

func loadPolicy(t *testing.T, name string) iotPolicy {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "deployments", "aws-iot-core", name))
	if err != nil {
		t.Fatal(err)
	}
	var p iotPolicy
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if p.Version != "2012-10-17" || len(p.Statement) == 0 {
		t.Fatalf("%s: version %q, %d statements", name, p.Version, len(p.Statement))
	}
	return p
}

// allows evaluates the policy as IoT Core does: an explicit Deny wins, else
// an Allow is needed. resource is "topic/…", "topicfilter/…" or "client/…";
// in the policy, * matches any characters ('/' too), ? one, and MQTT's + and
// # are plain characters.
func (p iotPolicy) allows(action, resource, thing string) bool {
	allowed := false
	for _, st := range p.Statement {
		if !contains(st.Action, action) {
			continue
		}
		for _, r := range st.Resource {
			_, pattern, ok := strings.Cut(r, ":ACCOUNT:")
			if !ok {
				panic("resource without the ACCOUNT placeholder: " + r)
			}
			pattern = strings.ReplaceAll(pattern, "${iot:Connection.Thing.ThingName}", thing)
			if !globMatch(pattern, resource) {
				continue
			}
			if st.Effect == "Deny" {
				return false
			}
			allowed = true
		}
	}
	return allowed
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func globMatch(pattern, s string) bool {
	re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(pattern)) + "$"
	return regexp.MustCompile(re).MatchString(s)
}

// TestIoTPoliciesMatchTheACL: the IoT Core policies in
// deployments/aws-iot-core (docs/aws-iot-core.md) allow and deny exactly
// what the broker's roles do (aclAllows, retainAllowed, and the profile's
// client-id rule), for every topic and filter of the LinkEdge tree and
// around it, seen by a truck, the publisher and an operator.
func TestIoTPoliciesMatchTheACL(t *testing.T) {
	const me, other = "truck-1", "truck-2"
	users := map[string]User{
		me:          {Username: me, Role: RoleTruck},
		"publisher": {Username: "publisher", Role: RolePublisher},
		"ops":       {Username: "ops", Role: RoleOperator},
	}
	policies := map[Role]iotPolicy{
		RoleTruck:     loadPolicy(t, "truck-policy.json"),
		RolePublisher: loadPolicy(t, "publisher-policy.json"),
		RoleOperator:  loadPolicy(t, "operator-policy.json"),
	}

	// Every topic the protocol uses, for two trucks, and mistakes around
	// them: other levels, deeper and shallower, wildcards.
	var corpus []string
	for _, tr := range []string{me, other, "+", "#"} {
		base := "linkedge/v1/trucks/" + tr
		for _, leaf := range []string{"status", "presence", "presence/x", "events", "grant-request", "grant", "desired", "predictions/aps-failure",
			"predictions/+", "predictions/#", "predictions/a/b", "predictions", "other", "+", "#", "status/x", "x/desired", "x/grant"} {
			corpus = append(corpus, base+"/"+leaf)
		}
	}
	corpus = append(corpus, "linkedge/v1/models/aps-failure/release", "linkedge/v1/models/+/release", "linkedge/v1/models/#",
		"linkedge/v1/models/x", "linkedge/v1/#", "linkedge/v1/+/x", "linkedge/v1/local/m/readings",
		"linkedge/v2/models/m/release", "linkedgeX/v1/models/m/release")
	// A policy cannot express MQTT's "/#" also matching its parent, so the
	// parents themselves are left out; no LinkEdge topic is one.
	//
	// The publisher's and the operator's reads are compared under
	// linkedge/v1 only: the broker lets them read anything, the policies
	// only the LinkEdge tree, which is all they read.

	for role, pol := range policies {
		u := users[map[Role]string{RoleTruck: me, RolePublisher: "publisher", RoleOperator: "ops"}[role]]
		for _, topic := range corpus {
			wildcard := strings.ContainsAny(topic, "+#")
			inTree := strings.HasPrefix(topic, "linkedge/v1/")
			// Reads: SUBSCRIBE to a filter, and delivery of a topic.
			if role == RoleTruck || inTree {
				if got, want := pol.allows("iot:Subscribe", "topicfilter/"+topic, me), aclAllows(u, topic, false); got != want {
					t.Errorf("%s subscribe %s: policy %v, broker %v", role, topic, got, want)
				}
				if !wildcard {
					if got, want := pol.allows("iot:Receive", "topic/"+topic, me), aclAllows(u, topic, false); got != want {
						t.Errorf("%s receive %s: policy %v, broker %v", role, topic, got, want)
					}
				}
			}
			if wildcard {
				continue // a topic name has none: refused before any ACL
			}
			publish := aclAllows(u, topic, true)
			if got := pol.allows("iot:Publish", "topic/"+topic, me); got != publish {
				t.Errorf("%s publish %s: policy %v, broker %v", role, topic, got, publish)
			}
			// The publisher's policy is stricter than the broker here: it
			// may not retain a grant (it never does).
			retain := publish && retainAllowed(u, topic) && !(role == RolePublisher && strings.HasSuffix(topic, "/grant"))
			if got := pol.allows("iot:Publish", "topic/"+topic, me) && pol.allows("iot:RetainPublish", "topic/"+topic, me); got != retain {
				t.Errorf("%s retained publish %s: policy %v, broker %v", role, topic, got, retain)
			}
		}
	}

	// Client ids: a truck's is its thing name, and the default mode's ids
	// are not used; the publisher and operators keep theirs.
	h := &authHook{users: users, thingNames: true}
	for _, tt := range []struct {
		role Role
		id   string
	}{
		{RoleTruck, me}, {RoleTruck, other}, {RoleTruck, "linkedge-truck-" + me},
		{RolePublisher, "linkedge-publisher"}, {RolePublisher, "linkedge-publisher-once-x1"},
		{RoleOperator, "linkedge-fleet-42"},
	} {
		u := users[map[Role]string{RoleTruck: me, RolePublisher: "publisher", RoleOperator: "ops"}[tt.role]]
		broker := h.thingNameRefused(u, tt.id) == ""
		if got := policies[tt.role].allows("iot:Connect", "client/"+tt.id, me); got != broker {
			t.Errorf("%s connects as %s: policy %v, broker %v", tt.role, tt.id, got, broker)
		}
	}
}
