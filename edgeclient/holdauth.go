package edgeclient

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/linkedge/linkedge/broker"
)

// holdAuth guards the hold API (/v1/hold) on the agent's HTTP endpoint
// when the local bus has logins (local_broker.users): a request must carry
// HTTP basic auth with the username and password of an app login of that
// file, and an app sets and releases only its own hold, as on the bus. A
// hold stops a truck from switching models, so whoever can reach the port
// must not hold it, or release another application's hold, without a
// login. The inference endpoints stay open: a prediction changes nothing
// on the truck, and the applications asking for one at sensor rates are
// on the same loopback or vehicle network the bus already trusts.
type holdAuth struct {
	apps map[string]string // username -> bcrypt hash, app logins only

	// ok remembers the sha256 of each app's last verified password, so
	// an application calling often costs one bcrypt check, not one per
	// request. A wrong password is always checked with bcrypt.
	mu sync.Mutex
	ok map[string][32]byte
}

func newHoldAuth(usersFile string) (*holdAuth, error) {
	users, err := broker.LoadUsers(usersFile)
	if err != nil {
		return nil, fmt.Errorf("local_broker.users: %w", err)
	}
	h := &holdAuth{apps: map[string]string{}, ok: map[string][32]byte{}}
	for name, u := range users {
		if u.Role == broker.RoleApp {
			h.apps[name] = u.PasswordHash
		}
	}
	return h, nil
}

// check reports whether user and password are an app login.
func (h *holdAuth) check(user, password string) bool {
	hash, ok := h.apps[user]
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(password))
	h.mu.Lock()
	known, seen := h.ok[user]
	h.mu.Unlock()
	if seen && subtle.ConstantTimeCompare(known[:], sum[:]) == 1 {
		return true
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return false
	}
	h.mu.Lock()
	h.ok[user] = sum
	h.mu.Unlock()
	return true
}

// wrap requires an app login for next, and for a request on
// /v1/hold/{app} other than GET that the login is app's.
func (h *holdAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, password, ok := r.BasicAuth()
		if !ok || !h.check(user, password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="linkedge hold", charset="UTF-8"`)
			msg := "the hold API needs a login: HTTP basic auth with an app login of the truck's local bus (local_broker.users, role app)"
			if ok {
				msg = "bad username or password, or not an app login of the truck's local bus (local_broker.users, role app)"
			}
			holdAuthError(w, http.StatusUnauthorized, msg)
			return
		}
		if app, ok := strings.CutPrefix(r.URL.Path, "/v1/hold/"); ok && r.Method != http.MethodGet && app != user {
			holdAuthError(w, http.StatusForbidden, fmt.Sprintf("app %q may set and release only its own hold, /v1/hold/%s", user, user))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func holdAuthError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
