package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/linkedge/linkedge/internal/config"
)

// Defaults applied by Config.setDefaults (and, for HTTPListen, by
// DefaultConfig).
const (
	// DefaultListen is the MQTT TCP address used when Config.Listen is empty.
	DefaultListen = "127.0.0.1:1883"

	// DefaultHTTPListen is the health/metrics address set by DefaultConfig.
	// It deliberately avoids 8080, the inference server's port.
	DefaultHTTPListen = "127.0.0.1:9883"

	// DefaultMaxMessageExpiry is how long an undelivered message, a retained
	// message and a disconnected persistent session are kept: long enough for
	// a truck parked out of coverage for weeks.
	DefaultMaxMessageExpiry = 90 * 24 * time.Hour

	// DefaultCloseTimeout bounds Broker.Close. Closing takes milliseconds
	// unless something is stuck; the bound is what keeps a stuck client or
	// hook from hanging the process that embeds the broker.
	DefaultCloseTimeout = 5 * time.Second

	// DefaultMaxPacketSize bounds one MQTT packet. LinkEdge's largest are
	// batches of forwarded predictions (100 of them, about 30 KB) and
	// release documents (a few KB); a client that sends more is cut off
	// before the broker reads it into memory.
	DefaultMaxPacketSize = 256 << 10

	// minMaxPacketSize keeps max_packet_size above LinkEdge's own documents.
	minMaxPacketSize = 16 << 10

	// DefaultMaxRetainedPerUser bounds the retained topics one user holds.
	// The publisher holds the most: one release per model and one pin per
	// truck, about 10,000 for a 10,000-truck fleet; a truck holds its
	// status alone.
	DefaultMaxRetainedPerUser = 50_000

	// The truck budget (see truckBudget). A truck sends a handful of
	// statuses and events per update, a grant request at most every 5 s,
	// and forwarded predictions in batches of up to about 14 KB, a few a
	// second while it empties a backlog; the bursts take an update's
	// reports and a minute's worth of batches at once.
	DefaultTruckMessagesPerSecond = 20
	DefaultTruckMessageBurst      = 200
	DefaultTruckBytesPerSecond    = 64 << 10
	DefaultTruckByteBurst         = 1 << 20

	// DefaultMaxQueuedBytes bounds the messages queued for one session:
	// about 65,535 (mochi's cap in messages) status reports and events of
	// 1 KB, what a publisher offline during a 10,000-truck update is sent.
	DefaultMaxQueuedBytes = 64 << 20

	// DefaultMaxQueuedBytesPerTruck bounds, within one session's queue,
	// the messages about one truck: hundreds of its status reports and
	// events, or 18 batches of forwarded predictions.
	DefaultMaxQueuedBytesPerTruck = 256 << 10
)

// Config configures one Broker. The zero value is usable: it listens on
// DefaultListen, keeps everything in memory, serves no HTTP endpoint and
// allows anonymous access. DefaultConfig returns the values the CLI and YAML
// config files start from.
type Config struct {
	// Listen is the MQTT TCP address (host:port). Default "127.0.0.1:1883".
	// Port 0 picks a free port; Broker.Addr reports the bound address.
	Listen string `yaml:"listen" json:"listen"`

	// DataDir holds the broker's bolt database (file "broker.db"). Empty
	// (the default) means in-memory only: everything is lost on restart.
	// With a DataDir, retained messages, persistent sessions, their
	// subscriptions and their queued QoS>0 messages survive a restart.
	DataDir string `yaml:"data_dir" json:"data_dir"`

	// MaxMessageExpiry caps how long messages are kept before delivery, how
	// long retained messages live, and how long a disconnected persistent
	// session is kept. Default 90 days (2160h); must be at least 1s.
	MaxMessageExpiry time.Duration `yaml:"max_message_expiry" json:"max_message_expiry"`

	// SessionExpiry is how long a disconnected persistent session is kept,
	// with its subscriptions and queued messages. Default: MaxMessageExpiry,
	// or 1h with the aws-iot-core profile (IoT Core's default, which allows
	// up to 7 days); zero means the default, which follows the other two
	// settings. Must be at least 1s.
	SessionExpiry time.Duration `yaml:"session_expiry" json:"session_expiry"`

	// Profile makes the broker enforce a managed broker's limits on top of
	// its own: "" (the default, none) or "aws-iot-core" (profile.go,
	// docs/aws-iot-core.md).
	Profile Profile `yaml:"profile" json:"profile"`

	// HTTPListen is the address of the health (/healthz) and Prometheus
	// (/metrics) endpoint. DefaultConfig, YAML config files and the CLI
	// default it to "127.0.0.1:9883". The empty string disables the
	// endpoint, so a Config literal that leaves it out gets no HTTP server,
	// which is what brokers embedded several to a process want.
	HTTPListen string `yaml:"http_listen" json:"http_listen"`

	// TLSCert and TLSKey are PEM file paths. When both are set the MQTT
	// listener speaks TLS (1.2 or later) only. Default: both empty, plain TCP.
	TLSCert string `yaml:"tls_cert" json:"tls_cert"`
	TLSKey  string `yaml:"tls_key" json:"tls_key"`
	// TLSClientCA is a PEM file of the CAs that sign client certificates.
	// When set (with TLSCert), every client must present a certificate
	// signed by one of them: mutual TLS, on top of the users file if there
	// is one. Default empty: no client certificate asked for.
	TLSClientCA string `yaml:"tls_client_ca" json:"tls_client_ca"`
	// TLSBindUsername, with TLSClientCA and UsersFile, requires the client
	// certificate's common name (or one of its DNS names) to be the
	// username the client logs in with, so that one certificate and
	// another user's password do not add up to that user. Default false.
	TLSBindUsername bool `yaml:"tls_bind_username" json:"tls_bind_username"`

	// UsersFile is a YAML file of users with bcrypt password hashes and
	// roles (see docs/broker.md). Empty (the default) allows anonymous
	// access to every topic.
	UsersFile string `yaml:"users_file" json:"users_file"`

	// LocalBus makes this broker a truck's local bus, as the agent embeds
	// it: the users file then holds the roles sensor and app instead of the
	// fleet's, and the agent's own clients log in with AgentLogin. Not set
	// from YAML: only the agent, which knows that login, runs a local bus.
	LocalBus bool `yaml:"-" json:"-"`

	// MaxPacketSize is the largest MQTT packet accepted, in bytes: a
	// client that sends a larger one is disconnected before the packet is
	// read. Default 256 KiB (DefaultMaxPacketSize); at least 16 KiB.
	MaxPacketSize int `yaml:"max_packet_size" json:"max_packet_size"`

	// MaxRetainedPerUser caps the retained topics one user of the users
	// file holds at once: those whose retained message it wrote last (an
	// empty retained message clears a topic and frees its slot). Over it,
	// a retained publish that needs a new slot is delivered without the
	// retain flag and logged at Warn. Default 50,000
	// (DefaultMaxRetainedPerUser); zero means the default, a negative
	// value no cap. Without a users file there are no users, and no cap.
	MaxRetainedPerUser int `yaml:"max_retained_per_user" json:"max_retained_per_user"`

	// TruckMessagesPerSecond and TruckMessageBurst, TruckBytesPerSecond and
	// TruckByteBurst are each truck login's publish budget (users file
	// role truck): token buckets in messages and in bytes (payload and
	// topic). A truck over it is slowed down, its connection read only as
	// fast as the budget allows; nothing is dropped. Defaults 20 messages
	// a second with a burst of 200, and 64 KiB a second with a burst of
	// 1 MiB; zero means the default, a negative rate no limit in that
	// unit. A rate must allow at least 0.1 messages or 1 KiB a second,
	// and a burst at least 1 message or 1 KiB.
	TruckMessagesPerSecond float64 `yaml:"truck_messages_per_second" json:"truck_messages_per_second"`
	TruckMessageBurst      int     `yaml:"truck_message_burst" json:"truck_message_burst"`
	TruckBytesPerSecond    int     `yaml:"truck_bytes_per_second" json:"truck_bytes_per_second"`
	TruckByteBurst         int     `yaml:"truck_byte_burst" json:"truck_byte_burst"`

	// MaxQueuedBytes caps the QoS 1/2 messages (payload and topic) queued
	// for one session, connected or not, and MaxQueuedBytesPerTruck those
	// about one truck (on linkedge/v1/trucks/{id}/…) within it. A message
	// over either cap is not queued for that session (other subscribers
	// still get it), counted in
	// linkedge_broker_session_queue_dropped_total and logged at Warn with
	// its topic. Defaults 64 MiB and 256 KiB; zero means the default, a
	// negative value no cap.
	MaxQueuedBytes         int64 `yaml:"max_queued_bytes" json:"max_queued_bytes"`
	MaxQueuedBytesPerTruck int64 `yaml:"max_queued_bytes_per_truck" json:"max_queued_bytes_per_truck"`

	// CloseTimeout bounds how long Close takes, whatever the clients and
	// mochi do: clients that stop reading get their DISCONNECT cut off,
	// connections still open are closed, and past the timeout Close gives
	// up on what is left and returns an error wrapping ErrCloseTimeout that
	// names it. Default 5s (zero means the default); must not be negative.
	CloseTimeout time.Duration `yaml:"close_timeout" json:"close_timeout"`

	// Logger receives the broker's logs; mochi's own logs go through it at
	// Warn and above. Default slog.Default().
	Logger *slog.Logger `yaml:"-" json:"-"`
}

// DefaultConfig returns the configuration the CLI and ParseConfig start
// from: every default of setDefaults plus HTTPListen = DefaultHTTPListen.
func DefaultConfig() Config {
	c := Config{HTTPListen: DefaultHTTPListen}
	c.setDefaults()
	return c
}

// setDefaults fills the zero fields that have a default. HTTPListen is left
// alone because its zero value means "disabled".
func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxMessageExpiry == 0 {
		c.MaxMessageExpiry = DefaultMaxMessageExpiry
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.MaxRetainedPerUser == 0 {
		c.MaxRetainedPerUser = DefaultMaxRetainedPerUser
	}
	if c.TruckMessagesPerSecond == 0 {
		c.TruckMessagesPerSecond = DefaultTruckMessagesPerSecond
	}
	if c.TruckMessageBurst == 0 {
		c.TruckMessageBurst = DefaultTruckMessageBurst
	}
	if c.TruckBytesPerSecond == 0 {
		c.TruckBytesPerSecond = DefaultTruckBytesPerSecond
	}
	if c.TruckByteBurst == 0 {
		c.TruckByteBurst = DefaultTruckByteBurst
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if c.MaxQueuedBytesPerTruck == 0 {
		c.MaxQueuedBytesPerTruck = DefaultMaxQueuedBytesPerTruck
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// maxExpiry is the largest expiry mochi can represent (uint32 seconds, the
// MQTT v5 session-expiry field).
const maxExpiry = time.Duration(math.MaxUint32) * time.Second

// Validate reports configuration mistakes, wrapped in ErrInvalidConfig.
// Zero fields are checked as if their defaults had been applied.
func (c *Config) Validate() error {
	cc := *c
	cc.setDefaults()
	var errs []error
	if err := checkAddr(cc.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if cc.HTTPListen != "" {
		if err := checkAddr(cc.HTTPListen); err != nil {
			errs = append(errs, fmt.Errorf("http_listen: %w", err))
		} else if cc.HTTPListen == cc.Listen && !hasPortZero(cc.Listen) {
			errs = append(errs, errors.New("http_listen: same address as listen"))
		}
	}
	switch {
	case cc.MaxMessageExpiry < time.Second:
		errs = append(errs, fmt.Errorf("max_message_expiry: %s is below the 1s minimum", cc.MaxMessageExpiry))
	case cc.MaxMessageExpiry > maxExpiry:
		errs = append(errs, fmt.Errorf("max_message_expiry: %s exceeds the %s maximum", cc.MaxMessageExpiry, maxExpiry))
	}
	errs = append(errs, cc.validateProfile()...)
	if cc.CloseTimeout < 0 {
		errs = append(errs, fmt.Errorf("close_timeout: %s is negative; leave it out for the %s default", cc.CloseTimeout, DefaultCloseTimeout))
	}
	if cc.MaxPacketSize < minMaxPacketSize || cc.MaxPacketSize > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("max_packet_size: %d bytes is outside %d to %d; leave it out for %d", cc.MaxPacketSize, minMaxPacketSize, math.MaxInt32, DefaultMaxPacketSize))
	}
	if r := cc.TruckMessagesPerSecond; r > 0 && r < 0.1 {
		errs = append(errs, fmt.Errorf("truck_messages_per_second: %g is below 0.1; a negative value means no limit", r))
	}
	if r := cc.TruckBytesPerSecond; r > 0 && r < 1<<10 {
		errs = append(errs, fmt.Errorf("truck_bytes_per_second: %d is below 1024; a negative value means no limit", r))
	}
	if cc.TruckMessageBurst < 1 {
		errs = append(errs, fmt.Errorf("truck_message_burst: %d is below 1; leave it out for %d", cc.TruckMessageBurst, DefaultTruckMessageBurst))
	}
	if cc.TruckByteBurst < 1<<10 {
		errs = append(errs, fmt.Errorf("truck_byte_burst: %d is below 1024; leave it out for %d", cc.TruckByteBurst, DefaultTruckByteBurst))
	}
	if (cc.TLSCert == "") != (cc.TLSKey == "") {
		errs = append(errs, errors.New("tls_cert and tls_key must be set together"))
	}
	if cc.TLSBindUsername && (cc.TLSClientCA == "" || cc.UsersFile == "") {
		errs = append(errs, errors.New("tls_bind_username needs tls_client_ca (client certificates) and users_file (usernames)"))
	}
	if cc.TLSClientCA != "" && cc.TLSCert == "" {
		errs = append(errs, errors.New("tls_client_ca needs tls_cert and tls_key: client certificates are checked only on a TLS listener"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// checkAddr accepts host:port with a numeric port in 0-65535; the host may be
// empty (all interfaces).
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number between 0 and 65535", addr)
	}
	return nil
}

func hasPortZero(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

// expirySeconds converts MaxMessageExpiry to whole seconds for mochi.
func (c *Config) expirySeconds() int64 {
	return int64(c.MaxMessageExpiry / time.Second)
}

// ParseConfig decodes a YAML broker config strictly (unknown keys are an
// error) on top of DefaultConfig. Keys left out keep their defaults;
// `http_listen: ""` disables the HTTP endpoint. Durations use Go syntax
// ("2160h"). Relative paths are relative to the working directory.
//
// The values are not validated, so that a caller can still override them
// (the CLI's flags do); New validates, or call Config.Validate.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	if err := config.DecodeYAML(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return cfg, nil
}

// LoadConfig reads and parses a YAML config file with ParseConfig.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read broker config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
