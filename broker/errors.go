package broker

import "errors"

// Sentinel errors returned (usually wrapped) by this package; compare with
// errors.Is.
var (
	// ErrClosed is returned by Start when the Broker has already been closed,
	// including after a failed Start: a Broker is single-use because mochi's
	// server cannot be served again once it has been closed.
	ErrClosed = errors.New("broker closed")

	// ErrAlreadyStarted is returned by a second call to Start.
	ErrAlreadyStarted = errors.New("broker already started")

	// ErrInvalidConfig wraps every problem found by Config.Validate and by
	// ParseConfig, so callers can tell a configuration mistake from a runtime
	// failure such as a port already in use.
	ErrInvalidConfig = errors.New("invalid broker config")

	// ErrInvalidUsersFile wraps every problem found while reading or parsing
	// the users file (Config.UsersFile).
	ErrInvalidUsersFile = errors.New("invalid users file")
)
