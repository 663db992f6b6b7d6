package console

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkedge/linkedge/internal/fleetview"
	"github.com/linkedge/linkedge/publisher"
)

// Defaults of Config.
const (
	DefaultListen     = "127.0.0.1:9890"
	DefaultSessionTTL = 12 * time.Hour
	DefaultPageSize   = 50
	// MaxPageSize bounds Config.PageSize: one SSE message carries at most
	// this many rows.
	MaxPageSize = 500
	// DefaultMaxStreams bounds the live connections (browser tabs).
	DefaultMaxStreams = 256
	// DefaultUpdateInterval is how often a live page is brought up to date
	// when something changed: changes within it go out as one message.
	DefaultUpdateInterval = 250 * time.Millisecond
	// DefaultChartInterval is how often at most the rollout charts sample
	// the fleet (when it changed).
	DefaultChartInterval = 5 * time.Second
)

// Config of a console. Zero values take the defaults.
type Config struct {
	// Listen is the HTTP(S) address. Default 127.0.0.1:9890: loopback,
	// so exposing the console is a decision (and a warning without TLS).
	Listen string
	// TLSCert and TLSKey serve HTTPS (and mark the session cookie Secure).
	TLSCert, TLSKey string
	// UsersFile lists who may log in, with bcrypt hashes and a role
	// (viewer or operator). Required.
	UsersFile string
	// AuditLog is the file every action is appended to (JSON lines).
	// Required when Actions is set.
	AuditLog string
	// Fleet says where the fleet is read from; its Events is always on,
	// and its OnForwarded counts the alerts (and then calls the one set
	// here, if any).
	Fleet fleetview.Config
	// Actions is the publisher configuration the actions use, as
	// `linkedge registry`, `linkedge pin` would: RegistryDir for approve
	// and reject, and KeyFile (with Broker and the artifact URL) for pin
	// and unpin. Nil: a read-only console.
	Actions *publisher.Config
	// ActionTimeout bounds one action (a pin waits for the broker's
	// acknowledgement). Default 30s.
	ActionTimeout time.Duration
	// SessionTTL is how long a login lasts. Default 12h.
	SessionTTL time.Duration
	// PageSize is the fleet table's rows per page. Default 50, at most 500.
	PageSize int
	// MaxStreams bounds the live connections at once. Default 256.
	MaxStreams int
	// UpdateInterval coalesces changes for the live pages. Default 250ms.
	UpdateInterval time.Duration
	// ChartInterval is how often at most the model pages' charts of
	// trucks per version sample the fleet: UpdateInterval after it changed,
	// but no sooner than ChartInterval after the last sample. Default 5s.
	ChartInterval time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Metrics registers the console's metrics, if set.
	Metrics prometheus.Registerer
}

// ErrInvalidConfig wraps every configuration mistake.
var ErrInvalidConfig = errors.New("console: invalid config")

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.PageSize <= 0 {
		c.PageSize = DefaultPageSize
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.UpdateInterval <= 0 {
		c.UpdateInterval = DefaultUpdateInterval
	}
	if c.ChartInterval <= 0 {
		c.ChartInterval = DefaultChartInterval
	}
	if c.ActionTimeout <= 0 {
		c.ActionTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Fleet.Events = true
	if c.Fleet.ClientID == "" {
		c.Fleet.ClientID = "linkedge-console"
	}
}

func (c *Config) validate() error {
	var problems []string
	if c.UsersFile == "" {
		problems = append(problems, "users_file: required (a users file with bcrypt hashes and roles viewer or operator; see docs/console.md)")
	}
	if c.Fleet.Broker == "" {
		problems = append(problems, "broker: required (the fleet broker URL)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		problems = append(problems, "tls: give both the certificate and the key, or neither")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		problems = append(problems, fmt.Sprintf("listen %q: %v (want host:port)", c.Listen, err))
	}
	if c.PageSize > MaxPageSize {
		problems = append(problems, fmt.Sprintf("page_size %d: at most %d", c.PageSize, MaxPageSize))
	}
	if c.Actions != nil && c.AuditLog == "" {
		problems = append(problems, "audit_log: required with actions (every action is written to it)")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
	}
	return nil
}

// exposed reports whether addr listens beyond loopback.
func exposed(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
