package status

import (
	"errors"
	"fmt"
)

// Presence payloads, on linkedge/v1/trucks/{truck}/presence: plain words
// rather than a JSON document because the offline one rides in every
// CONNECT as the last will and the online one goes out on every reconnect,
// over links paid by the byte.
const (
	PresenceOnline  = "online"
	PresenceOffline = "offline"
)

// MaxPresenceSize bounds a presence message a reader accepts.
const MaxPresenceSize = 64

// ErrBadPresence is wrapped by every error about an unreadable presence
// message.
var ErrBadPresence = errors.New("status: bad presence message")

// ParsePresence reads a presence message: true for "online", false for
// "offline". Anything else, an empty (cleared) retained message included,
// is an error, and a reader should then fall back on the status document's
// own online member.
func ParsePresence(data []byte) (online bool, err error) {
	if len(data) > MaxPresenceSize {
		return false, fmt.Errorf("%w: %d bytes, over %d; want %q or %q", ErrBadPresence, len(data), MaxPresenceSize, PresenceOnline, PresenceOffline)
	}
	switch string(data) {
	case PresenceOnline:
		return true, nil
	case PresenceOffline:
		return false, nil
	}
	return false, fmt.Errorf("%w: %q; want %q or %q", ErrBadPresence, data, PresenceOnline, PresenceOffline)
}

// Online combines what a reader knows into the online it shows: the status
// document's own member (false in the last will of an agent older than
// the presence topic) and the truck's presence, when one was read
// (known). The truck is online only if neither says otherwise.
func Online(st Status, online, known bool) bool {
	return st.Online && (online || !known)
}
