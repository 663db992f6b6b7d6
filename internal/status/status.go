// Package status defines what a truck reports about itself on the fleet
// broker: the retained status document (linkedge/v1/trucks/{truck}/status),
// its presence (linkedge/v1/trucks/{truck}/presence) and the event stream
// (linkedge/v1/trucks/{truck}/events). The agent writes them; the demo,
// `linkedge fleet` and operators' tools read them.
package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linkedge/linkedge/internal/topics"
)

// Schema names version 1 of both documents.
const Schema = "linkedge.status/v1"

// Status is the retained truck status. The broker keeps the last one. The
// agent sends it with Online=true; whether the truck is connected now is its
// presence (presence.go), which the last will sets to offline without
// touching this document. An agent older than the presence topic had its
// will replace this document with Online=false, which readers still honour
// (see [Online]).
type Status struct {
	Schema string `json:"schema"`
	Truck  string `json:"truck"`
	Online bool   `json:"online"`
	Model  string `json:"model"`
	// Groups the truck belongs to, from its configuration (a canary may
	// target them); left out when it has none. At most MaxGroups, each a
	// topics.ValidID.
	Groups []string `json:"groups,omitempty"`
	// Version serving now (0: none yet).
	Version int64 `json:"version"`
	// SHA256 of the bundle serving now, as its signed release names it.
	SHA256 string `json:"sha256,omitempty"`
	// Desired is the version the latest accepted release asks for.
	Desired int64 `json:"desired_version"`
	// Serial of the latest accepted release document.
	Serial int64 `json:"serial"`
	// Phase of the update state machine (see edgeclient/update).
	Phase string `json:"phase"`
	// Download progress of the update in flight, bytes.
	Downloaded int64 `json:"downloaded,omitempty"`
	Total      int64 `json:"total,omitempty"`
	// LastError is the latest problem: a refused release, a failed update.
	LastError string `json:"last_error,omitempty"`
	// Hold says why the truck's safety hold keeps a new version from being
	// switched in (an application's hold, outside maintenance windows);
	// empty when nothing holds.
	Hold string `json:"hold,omitempty"`
	// Predictions served and alerts (positive label) since the agent started.
	Predictions int64     `json:"predictions"`
	Alerts      int64     `json:"alerts"`
	LastSeen    time.Time `json:"last_seen"`
	Agent       string    `json:"agent,omitempty"`
}

// Event is one thing that happened on a truck.
type Event struct {
	Schema  string    `json:"schema"`
	Truck   string    `json:"truck"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // release_refused, update_started, update_committed, update_failed, update_rolled_back, update_retrying, serving_restarted, serving_fallback, serving_failed, booted
	Model   string    `json:"model,omitempty"`
	Version int64     `json:"version,omitempty"`
	Serial  int64     `json:"serial,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// Event kinds.
const (
	EventBooted          = "booted"
	EventReleaseRefused  = "release_refused"
	EventUpdateStarted   = "update_started"
	EventUpdateCommitted = "update_committed"
	EventUpdateFailed    = "update_failed"
	EventRolledBack      = "update_rolled_back"
	// EventUpdateRetrying: a step failed for a reason that may pass (the
	// artifact source misbehaved); nothing is wrong with the version, and
	// the truck tries again. Not a failure of the version.
	EventUpdateRetrying = "update_retrying"
	// EventServingRestarted: the serving container died and was restarted.
	EventServingRestarted = "serving_restarted"
	// EventServingFallback: the serving container could not be brought
	// back; the truck serves the previous version, or the same bundle in
	// process, instead (Version is what serves now).
	EventServingFallback = "serving_fallback"
	// EventServingFailed: nothing could replace a dead serving container.
	EventServingFailed = "serving_failed"
)

// MaxSize bounds a status or event document a reader accepts.
const MaxSize = 16 << 10

// MaxGroups bounds the groups a status document may name. Readers keep the
// list of every truck in memory, and an agent's configuration is held to
// the same bound (edgeclient.Config.Validate), so a truck within it is never
// refused.
const MaxGroups = 16

// Parse decodes a status document strictly.
func Parse(data []byte) (*Status, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("status document of %d bytes is over %d", len(data), MaxSize)
	}
	var s Status
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("malformed status document: %w", err)
	}
	if s.Schema != Schema {
		return nil, fmt.Errorf("status schema %q, want %q", s.Schema, Schema)
	}
	if err := CheckGroups(s.Groups); err != nil {
		return nil, fmt.Errorf("status document: %w", err)
	}
	return &s, nil
}

// ParseEvent decodes an event strictly.
func ParseEvent(data []byte) (*Event, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("event of %d bytes is over %d", len(data), MaxSize)
	}
	var e Event
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("malformed event: %w", err)
	}
	if e.Schema != Schema {
		return nil, fmt.Errorf("event schema %q, want %q", e.Schema, Schema)
	}
	return &e, nil
}

// CheckGroups reports whether groups fit a status document: at most
// MaxGroups names, each a topics.ValidID (so at most 64 bytes, and safe in
// a URL, a filter and a page).
func CheckGroups(groups []string) error {
	if len(groups) > MaxGroups {
		return fmt.Errorf("%d groups, at most %d", len(groups), MaxGroups)
	}
	for _, g := range groups {
		if err := topics.ValidID(g); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	return nil
}
