package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/linkedge/linkedge/internal/topics"
	"github.com/linkedge/linkedge/publisher"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// The actions, as the form names them.
const (
	ActionApprove = "approve"
	ActionReject  = "reject"
	ActionPin     = "pin"
	ActionUnpin   = "unpin"
	ActionHalt    = "halt"
	ActionResume  = "resume"
)

// Action is one operator request, read from a form.
type Action struct {
	Kind    string `json:"action"`
	Model   string `json:"model"`
	Version int64  `json:"version,omitempty"`
	Truck   string `json:"truck,omitempty"`
	// Reason is why a rollout is halted; halt only.
	Reason string `json:"reason,omitempty"`
}

// ErrBadAction wraps every problem of an action form.
var ErrBadAction = errors.New("console: bad action")

// ParseAction reads an action from a form strictly: the fields it needs,
// and valid ids; what it does not need must be empty.
func ParseAction(f url.Values) (Action, error) {
	get := func(k string) string {
		v := f.Get(k)
		if len(v) > maxQueryValue {
			return v[:maxQueryValue]
		}
		return strings.TrimSpace(v)
	}
	a := Action{Kind: get("action"), Model: get("model"), Truck: get("truck")}
	if r := f.Get("reason"); r != "" {
		if len(r) > publisher.MaxHoldReason {
			return a, fmt.Errorf("%w: reason is %d bytes, limit %d; shorten it", ErrBadAction, len(r), publisher.MaxHoldReason)
		}
		a.Reason = strings.TrimSpace(r)
		if a.Kind != ActionHalt {
			return a, fmt.Errorf("%w: %s takes no reason", ErrBadAction, clip(a.Kind, 16))
		}
		if strings.ContainsFunc(a.Reason, unicode.IsControl) || !utf8.ValidString(a.Reason) {
			return a, fmt.Errorf("%w: reason: use one line of plain text", ErrBadAction)
		}
	}
	if err := topics.ValidID(a.Model); err != nil {
		return a, fmt.Errorf("%w: model: %w", ErrBadAction, err)
	}
	if v := get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return a, fmt.Errorf("%w: version %q: want a version number such as 2", ErrBadAction, v)
		}
		a.Version = n
	}
	needVersion, needTruck := false, false
	switch a.Kind {
	case ActionApprove, ActionReject:
		needVersion = true
	case ActionPin:
		needVersion, needTruck = true, true
	case ActionUnpin:
		needTruck = true
	case ActionHalt, ActionResume:
	default:
		return a, fmt.Errorf("%w: action %q: want approve, reject, pin, unpin, halt or resume", ErrBadAction, a.Kind)
	}
	switch {
	case needVersion && a.Version == 0:
		return a, fmt.Errorf("%w: %s needs a version", ErrBadAction, a.Kind)
	case !needVersion && a.Version != 0:
		return a, fmt.Errorf("%w: %s takes no version", ErrBadAction, a.Kind)
	case needTruck:
		if err := topics.ValidID(a.Truck); err != nil {
			return a, fmt.Errorf("%w: truck: %w", ErrBadAction, err)
		}
	case a.Truck != "":
		return a, fmt.Errorf("%w: %s takes no truck", ErrBadAction, a.Kind)
	}
	return a, nil
}

// String says what the action does, for the confirmation and the result.
func (a Action) String() string {
	switch a.Kind {
	case ActionApprove:
		return fmt.Sprintf("approve %s version %d in the registry", a.Model, a.Version)
	case ActionReject:
		return fmt.Sprintf("reject %s version %d in the registry", a.Model, a.Version)
	case ActionPin:
		return fmt.Sprintf("pin %s to %s version %d", a.Truck, a.Model, a.Version)
	case ActionUnpin:
		return fmt.Sprintf("clear the pin of %s (%s)", a.Truck, a.Model)
	case ActionHalt:
		if a.Reason == "" {
			return fmt.Sprintf("halt the staged rollout of %s", a.Model)
		}
		return fmt.Sprintf("halt the staged rollout of %s (%s)", a.Model, a.Reason)
	case ActionResume:
		return fmt.Sprintf("resume the staged rollout of %s", a.Model)
	}
	return a.Kind
}

// ErrActionUnavailable is returned for an action the console was not
// configured for (no registry, no signing key).
var ErrActionUnavailable = errors.New("console: action not available")

// available says whether the console can do the kind of action at all.
func (s *Server) available(kind string) bool {
	a := s.cfg.Actions
	switch {
	case a == nil:
		return false
	case kind == ActionApprove || kind == ActionReject:
		return a.RegistryDir != ""
	case kind == ActionHalt || kind == ActionResume:
		return a.RegistryDir != "" || a.StateFile != ""
	default:
		return a.KeyFile != "" && a.RegistryDir != ""
	}
}

// do runs an action through the same code as the command line: the local
// registry's Approve and Reject (`linkedge registry`), publisher.Pin and
// publisher.Unpin (`linkedge pin`).
func (s *Server) do(ctx context.Context, who string, a Action) (string, error) {
	if !s.available(a.Kind) {
		return "", fmt.Errorf("%w: %s needs %s; start the console with them", ErrActionUnavailable, a.Kind, needs(a.Kind))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ActionTimeout)
	defer cancel()
	cfg := *s.cfg.Actions
	switch a.Kind {
	case ActionApprove, ActionReject:
		reg, err := localreg.Open(cfg.RegistryDir)
		if err != nil {
			return "", err
		}
		decide, verb := reg.Reject, "rejected"
		if a.Kind == ActionApprove {
			decide, verb = reg.Approve, "approved"
		}
		if _, err := decide(a.Model, a.Version, who); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s version %d", verb, a.Model, a.Version), nil
	case ActionPin:
		r, err := publisher.Pin(ctx, cfg, a.Truck, a.Model, a.Version)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("pinned %s to %s version %d: serial %d, valid until %s", a.Truck, a.Model, a.Version, r.Serial, r.ExpiresAt.Format(time.RFC3339)), nil
	case ActionUnpin:
		r, err := publisher.Unpin(ctx, cfg, a.Truck, a.Model)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("cleared the pin of %s: serial %d", a.Truck, r.Serial), nil
	case ActionHalt:
		h, err := publisher.HaltRollout(ctx, cfg, a.Model, who, a.Reason)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("halted the rollout of %s version %d (%s); the publisher stops promoting it at its next poll", a.Model, h.Version, h.Reason), nil
	case ActionResume:
		h, err := publisher.ResumeRollout(ctx, cfg, a.Model, who)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("resumed the rollout of %s version %d (halted by %s); the publisher goes on with it at its next poll", a.Model, h.Version, h.HaltedBy), nil
	}
	return "", fmt.Errorf("%w: %q", ErrBadAction, a.Kind)
}

// needs says what the console must be started with for an action.
func needs(kind string) string {
	switch kind {
	case ActionApprove, ActionReject:
		return "a registry (--registry)"
	case ActionHalt, ActionResume:
		return "the publisher's registry or state file (--registry, --state or --config)"
	}
	return "a registry and a signing key (--registry, --key)"
}

// auditLog appends one JSON line per record and syncs it: an action is
// only done once its request is on disk.
type auditLog struct {
	mu sync.Mutex
	f  *os.File
}

// AuditRecord is one line of the audit log.
type AuditRecord struct {
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Role   Role      `json:"role"`
	Remote string    `json:"remote"`
	Action
	// Result is "requested" (written before the action runs), then "ok"
	// or "failed".
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

// maxAuditDetail clips an error or result text in the log.
const maxAuditDetail = 1000

func openAudit(path string) (*auditLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: audit_log: %w", ErrInvalidConfig, err)
	}
	return &auditLog{f: f}, nil
}

func (l *auditLog) write(r AuditRecord) error {
	if len(r.Detail) > maxAuditDetail {
		r.Detail = r.Detail[:maxAuditDetail] + "…"
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("audit log closed")
	}
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync audit log: %w", err)
	}
	return nil
}

func (l *auditLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
