package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// cookieName is the session cookie. It is HttpOnly (scripts never see it)
// and SameSite=Strict (no other site's page can make the browser send it).
const cookieName = "linkedge_console"

// maxSessions bounds the session store; past it the oldest is dropped.
const maxSessions = 1000

type session struct {
	user    string
	role    Role
	csrf    string // tied to this session: a token of another session is refused
	expires time.Time
}

type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, now: time.Now}
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics rather)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) create(u User) (token string, ses *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m {
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	for len(s.m) >= maxSessions {
		var oldest string
		for k, v := range s.m {
			if oldest == "" || v.expires.Before(s.m[oldest].expires) {
				oldest = k
			}
		}
		delete(s.m, oldest)
	}
	token = randomToken()
	ses = &session{user: u.Username, role: u.Role, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.m[token] = ses
	return token, ses
}

func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) > 64 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ses := s.m[c.Value]
	if ses == nil || s.now().After(ses.expires) {
		delete(s.m, c.Value)
		return nil
	}
	return ses
}

func (s *sessions) drop(r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.mu.Lock()
		delete(s.m, c.Value)
		s.mu.Unlock()
	}
}

// validCSRF compares the form's token with the session's in constant time.
func (ses *session) validCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(ses.csrf)) == 1
}

// loginLimiter refuses, unchecked, logins from an address that failed
// more than maxLoginFails times in the last minute: every guess costs a
// bcrypt comparison, tens of milliseconds of CPU.
type loginLimiter struct {
	mu    sync.Mutex
	fails map[string][]time.Time
	now   func() time.Time
}

const (
	maxLoginFails   = 10
	loginFailWindow = time.Minute
	// maxLoginAddrs bounds the limiter's memory; past it, it starts over.
	maxLoginAddrs = 10_000
)

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{fails: map[string][]time.Time{}, now: time.Now}
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

func (l *loginLimiter) recent(addr string) []time.Time {
	cut := l.now().Add(-loginFailWindow)
	ts := l.fails[addr]
	i := 0
	for i < len(ts) && ts[i].Before(cut) {
		i++
	}
	return ts[i:]
}

func (l *loginLimiter) blocked(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recent(addr)) >= maxLoginFails
}

func (l *loginLimiter) failed(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fails) >= maxLoginAddrs {
		l.fails = map[string][]time.Time{}
	}
	ts := l.recent(addr)
	if len(ts) >= maxLoginFails {
		ts = ts[1:]
	}
	l.fails[addr] = append(append([]time.Time(nil), ts...), l.now())
}

// dummyHash is compared against when the username is unknown, so that a
// wrong username takes as long as a wrong password and does not tell
// which usernames exist.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), bcrypt.DefaultCost)

// checkPassword returns the user if the password matches.
func checkPassword(users map[string]User, name, password string) (User, bool) {
	u, ok := users[name]
	hash := []byte(u.PasswordHash)
	if !ok {
		hash = dummyHash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !ok {
		return User{}, false
	}
	return u, true
}
