package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/linkedge/linkedge/internal/config"
	"github.com/linkedge/linkedge/internal/topics"
)

// Role decides what a user may publish and read; see aclAllows.
type Role string

// The roles a users file may assign.
const (
	// RolePublisher is the fleet controller: it publishes models and the
	// trucks' desired state and may read everything.
	RolePublisher Role = "publisher"
	// RoleTruck is one truck; its username is its truck id.
	RoleTruck Role = "truck"
	// RoleOperator may read linkedge/v1/# and publish nothing.
	RoleOperator Role = "operator"

	// The roles of a truck's local bus (Config.LocalBus), see localAllows.
	// A users file holds either fleet roles or local ones, never both.

	// RoleSensor publishes readings for any model and reads the answers.
	RoleSensor Role = "sensor"
	// RoleApp is a truck application: it reads the local tree and holds
	// the switch to a new version under its own name (its username).
	RoleApp Role = "app"
)

// User is one entry of the users file.
type User struct {
	// Username is the MQTT username. For a truck it is also the truck id,
	// and for an app its hold topic's last level: spliced into topic levels,
	// so they must pass topics.ValidID (1-64 of A-Z a-z 0-9 . _ -); other
	// users match ^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$.
	Username string `yaml:"username"`
	// PasswordHash is a bcrypt hash ("$2a$…"/"$2b$…"), as printed by
	// HashPassword or `linkedge broker hash-password`. Plaintext is refused.
	PasswordHash string `yaml:"password_hash"`
	// Role is one of publisher, truck, operator (fleet broker) or sensor,
	// app (a truck's local bus).
	Role Role `yaml:"role"`
}

// usersFile is the users file's top-level shape.
type usersFile struct {
	Users []User `yaml:"users"`
}

// usernameRE keeps usernames of publishers and operators readable in logs
// and free of MQTT wildcards; truck usernames follow topics.ValidID instead,
// because they are spliced into topic levels.
var usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// maxUsersFileSize bounds what LoadUsers reads; a fleet of tens of thousands
// of trucks is well below it.
const maxUsersFileSize = 16 << 20

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

// ParseUsers decodes a users file strictly: unknown keys, a second YAML
// document, duplicate or malformed usernames, unknown roles and anything that
// is not a bcrypt hash are errors (wrapped in ErrInvalidUsersFile). At least
// one user is required: a file that admits nobody is a mistake, not a policy.
// The result is keyed by username.
func ParseUsers(data []byte) (map[string]User, error) {
	var doc usersFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty", ErrInvalidUsersFile)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidUsersFile, err)
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrInvalidUsersFile)
	}
	if len(doc.Users) == 0 {
		return nil, fmt.Errorf("%w: no users", ErrInvalidUsersFile)
	}
	users := make(map[string]User, len(doc.Users))
	for i, u := range doc.Users {
		if err := u.validate(); err != nil {
			return nil, fmt.Errorf("%w: users[%d]: %w", ErrInvalidUsersFile, i, err)
		}
		if _, dup := users[u.Username]; dup {
			return nil, fmt.Errorf("%w: users[%d]: duplicate username %q", ErrInvalidUsersFile, i, u.Username)
		}
		users[u.Username] = u
	}
	return users, nil
}

func (u User) validate() error {
	switch u.Role {
	case RoleTruck, RoleApp:
		if err := topics.ValidID(u.Username); err != nil {
			return fmt.Errorf("%s username: %w", u.Role, err)
		}
	case RolePublisher, RoleOperator, RoleSensor:
		if !usernameRE.MatchString(u.Username) {
			return fmt.Errorf("username %q must match %s", u.Username, usernameRE)
		}
	default:
		return fmt.Errorf("user %q: unknown role %q (want publisher, truck or operator; sensor or app on a truck's local bus)", u.Username, u.Role)
	}
	if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
		return fmt.Errorf("user %q: password_hash is not a bcrypt hash: %w", u.Username, err)
	}
	return nil
}

// HashPassword returns the bcrypt hash (default cost) to store as a user's
// password_hash. bcrypt ignores bytes past 72, so longer passwords are
// refused rather than silently truncated.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}
