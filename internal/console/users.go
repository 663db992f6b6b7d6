package console

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"

	"golang.org/x/crypto/bcrypt"

	"github.com/linkedge/linkedge/internal/config"
)

// Role is what a console user may do.
type Role string

const (
	// RoleViewer sees everything and changes nothing.
	RoleViewer Role = "viewer"
	// RoleOperator may also approve, reject, pin and unpin.
	RoleOperator Role = "operator"
)

// User is one entry of the console's users file. The file has the shape
// of the broker's (users: a list of username, password_hash, role), so one
// tool makes both hashes (`linkedge broker hash-password`); only the roles
// differ, which is why it is a file of its own and not the broker's: an
// MQTT operator is not a console operator.
type User struct {
	Username     string `yaml:"username"`
	PasswordHash string `yaml:"password_hash"`
	Role         Role   `yaml:"role"`
}

// ErrInvalidUsersFile wraps every problem of a users file.
var ErrInvalidUsersFile = errors.New("console: invalid users file")

// maxUsersFileSize bounds what LoadUsers reads: a console has a handful of
// users, not a fleet's worth.
const maxUsersFileSize = 1 << 20

// usernameRE keeps usernames readable in the audit log and free of
// anything a log reader could mistake for structure.
var usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// LoadUsers reads and parses a users file; see ParseUsers.
func LoadUsers(path string) (map[string]User, error) {
	data, err := config.ReadFile(path, maxUsersFileSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidUsersFile, err)
	}
	users, err := ParseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return users, nil
}

// ParseUsers decodes a users file strictly: unknown keys, a second
// document, duplicate or malformed usernames, unknown roles and anything
// that is not a bcrypt hash are errors wrapping ErrInvalidUsersFile. A file
// with no users is an error too: a console nobody can log in to is a
// mistake.
func ParseUsers(data []byte) (map[string]User, error) {
	if len(data) > maxUsersFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidUsersFile, maxUsersFileSize)
	}
	var doc struct {
		Users []User `yaml:"users"`
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidUsersFile)
	}
	if err := config.DecodeYAML(data, &doc); err != nil { // strict, one document
		return nil, fmt.Errorf("%w: %w", ErrInvalidUsersFile, err)
	}
	if len(doc.Users) == 0 {
		return nil, fmt.Errorf("%w: no users; add one with a hash from `linkedge broker hash-password`", ErrInvalidUsersFile)
	}
	users := make(map[string]User, len(doc.Users))
	for i, u := range doc.Users {
		if !usernameRE.MatchString(u.Username) {
			return nil, fmt.Errorf("%w: users[%d]: username %q must match %s", ErrInvalidUsersFile, i, u.Username, usernameRE)
		}
		if u.Role != RoleViewer && u.Role != RoleOperator {
			return nil, fmt.Errorf("%w: users[%d]: user %q: unknown role %q (want viewer or operator)", ErrInvalidUsersFile, i, u.Username, u.Role)
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return nil, fmt.Errorf("%w: users[%d]: user %q: password_hash is not a bcrypt hash (make one with `linkedge broker hash-password`): %w", ErrInvalidUsersFile, i, u.Username, err)
		}
		if _, dup := users[u.Username]; dup {
			return nil, fmt.Errorf("%w: users[%d]: duplicate username %q", ErrInvalidUsersFile, i, u.Username)
		}
		users[u.Username] = u
	}
	return users, nil
}
