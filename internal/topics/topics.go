// Package topics is the one place where LinkEdge MQTT topic names live.
//
// Every publisher, agent and test builds topics through these functions and
// routes incoming messages through the parsers, so a rename is a one-line
// change and a typo is a compile error instead of a silent mismatch.
//
// All topics sit under [Prefix], which carries the protocol version: a
// breaking change to any payload moves everything to "linkedge/v2" so old
// and new fleets can share a broker during a migration.
//
// Two brokers are involved:
//
//   - the fleet broker (cloud), reached over an intermittent link, carries
//     releases, per-truck pins, status, events and forwarded predictions;
//   - the truck-local broker, on the truck itself, carries sensor readings
//     in and predictions out for on-board consumers.
//
// # Identifiers
//
// Model and truck ids are spliced into topic levels, so they must be valid
// per [ValidID]: no "/" (which would add a level), no "+" or "#" (MQTT
// wildcards). Builders do not check, because ids are validated once when
// configuration is loaded and a builder that returned an error would clutter
// every call site; passing an unvalidated id to a builder is a bug. Parsers
// face the network and always validate.
//
// # QoS and retain
//
// Each topic documents the QoS and retain flag its publisher must use, as a
// pair of constants next to its builder. Retained topics hold state (the
// latest value is what a reconnecting client needs); non-retained topics
// carry a stream of events.
package topics

import (
	"errors"
	"fmt"
)

// Prefix is the root of every LinkEdge topic, including the protocol version.
const Prefix = "linkedge/v1"

// Wildcard is the MQTT single-level wildcard used by subscription filters.
const Wildcard = "+"

// MaxIDLen is the maximum length of a model or truck id, in bytes.
const MaxIDLen = 64

// ErrBadID is wrapped by every error about an invalid model or truck id.
var ErrBadID = errors.New("topics: invalid id")

// ValidID reports whether s can be used as a model id, a truck id or a group
// name: 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'.
//
// That alphabet keeps ids safe in every place they end up: MQTT topic levels
// (no '/', '+', '#'), file names on the truck, metric labels and shell
// commands. "." and ".." are refused as well because ids become directory
// names, where those two mean something else.
func ValidID(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty; use 1-%d characters of A-Z a-z 0-9 . _ -", ErrBadID, MaxIDLen)
	}
	if len(s) > MaxIDLen {
		return fmt.Errorf("%w: %q is %d bytes long; use at most %d characters of A-Z a-z 0-9 . _ -", ErrBadID, truncate(s), len(s), MaxIDLen)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%w: %q is reserved for directory navigation; choose another name", ErrBadID, s)
	}
	for i := 0; i < len(s); i++ {
		if !idByte(s[i]) {
			return fmt.Errorf("%w: %q has %q at byte %d; use only A-Z a-z 0-9 . _ - (no slashes, spaces or MQTT wildcards)", ErrBadID, s, s[i], i)
		}
	}
	return nil
}

func idByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// truncate shortens s for an error message so that a hostile multi-kilobyte
// topic does not end up verbatim in a log line.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
