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

	// ErrCloseTimeout is wrapped by the error of a Close that gave up
	// waiting after Config.CloseTimeout. The error names what was left
	// behind: connections still open, mochi's shutdown still running, the
	// storage not closed (its file lock is then held until the process
	// exits, so a new Broker on the same DataDir cannot start before).
	ErrCloseTimeout = errors.New("broker close timed out")

	// ErrInvalidUsersFile wraps every problem found while reading or parsing
	// the users file (Config.UsersFile).
	ErrInvalidUsersFile = errors.New("invalid users file")
)
