package publisher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/linkedge/linkedge/internal/atomicfile"
	"github.com/linkedge/linkedge/internal/topics"
)

// Operator holds of staged rollouts.
//
// An operator halts a running rollout with [HaltRollout] (`linkedge rollout
// halt`, or the console) and lets it go on with [ResumeRollout]. Both write
// one small file, Config.HoldsFile, on the publisher's host; the publisher
// reads it at every poll. While a hold names the version being rolled out,
// the publisher keeps announcing the canary as it is (the trucks that took
// it keep it, no other truck gets it) and does not promote it; canary
// failures still halt it for good. The hold is copied into the rollout's
// record in the state file and logged, so both say who halted it and why.
//
// A file rather than an MQTT command: only someone who can write on the
// publisher's host (where its key and the registry already are) can halt
// or resume, and nothing on the broker, where trucks are, is read as an
// order. A file written by a separate tool also never races the publisher's
// own writes of its state file.

// HoldsSchema is the value of Holds.Schema this package writes and reads.
const HoldsSchema = "linkedge.rollout-holds/v1"

// Limits of the holds file.
const (
	maxHoldsSize   = 1 << 20
	maxHoldModels  = 1000
	MaxHoldBy      = 64
	MaxHoldReason  = 256
	defaultHoldWhy = "no reason given"
)

// Errors of halting and resuming.
var (
	// ErrNoRollout: the model has no staged rollout running to halt.
	ErrNoRollout = errors.New("publisher: no staged rollout running")
	// ErrAlreadyHeld: the rollout is already halted by an operator.
	ErrAlreadyHeld = errors.New("publisher: rollout already halted")
	// ErrNotHeld: there is no operator halt to resume.
	ErrNotHeld = errors.New("publisher: rollout not halted by an operator")
	// ErrCorruptHolds wraps every holds file parse error.
	ErrCorruptHolds = errors.New("publisher: corrupt holds file")
)

// Holds is the holds file: per model, the last operator halt.
type Holds struct {
	Schema string           `json:"schema"`
	Models map[string]*Hold `json:"models"`
}

// Hold is an operator's halt of one model version's rollout, and its
// resumption once resumed.
type Hold struct {
	Version   int64     `json:"version"`
	HaltedBy  string    `json:"halted_by"`
	Reason    string    `json:"reason"`
	HaltedAt  time.Time `json:"halted_at"`
	ResumedBy string    `json:"resumed_by,omitempty"`
	ResumedAt time.Time `json:"resumed_at,omitzero"`
}

// Active reports whether h holds its rollout (it was not resumed).
func (h *Hold) Active() bool { return h != nil && h.ResumedAt.IsZero() }

// ParseHolds decodes a holds file strictly: unknown fields, trailing data
// and impossible content are errors wrapping [ErrCorruptHolds].
func ParseHolds(data []byte) (*Holds, error) {
	var h Holds
	if err := decodeStrict(data, &h, maxHoldsSize, ErrCorruptHolds); err != nil {
		return nil, err
	}
	if h.Schema != HoldsSchema {
		return nil, fmt.Errorf("%w: schema is %q, want %q", ErrCorruptHolds, clip(h.Schema), HoldsSchema)
	}
	if len(h.Models) > maxHoldModels {
		return nil, fmt.Errorf("%w: %d models, limit %d", ErrCorruptHolds, len(h.Models), maxHoldModels)
	}
	if h.Models == nil {
		h.Models = map[string]*Hold{}
	}
	for m, hd := range h.Models {
		if err := topics.ValidID(m); err != nil {
			return nil, fmt.Errorf("%w: model %q: %w", ErrCorruptHolds, clip(m), err)
		}
		if err := hd.validate(); err != nil {
			return nil, fmt.Errorf("%w: model %s: %w", ErrCorruptHolds, m, err)
		}
	}
	return &h, nil
}

func (h *Hold) validate() error {
	switch {
	case h == nil:
		return errors.New("null hold")
	case h.Version < 1:
		return fmt.Errorf("version %d, want 1 or more", h.Version)
	case h.HaltedAt.IsZero():
		return errors.New("halted_at is missing")
	}
	if err := validHoldBy(h.HaltedBy); err != nil {
		return fmt.Errorf("halted_by: %w", err)
	}
	if err := validHoldReason(h.Reason); err != nil {
		return fmt.Errorf("reason: %w", err)
	}
	if !h.ResumedAt.IsZero() || h.ResumedBy != "" {
		if h.ResumedAt.IsZero() {
			return errors.New("resumed_by without resumed_at")
		}
		if err := validHoldBy(h.ResumedBy); err != nil {
			return fmt.Errorf("resumed_by: %w", err)
		}
	}
	return nil
}

// validHoldBy checks who halted or resumed: a name, not a paragraph.
func validHoldBy(s string) error {
	if s == "" {
		return errors.New("empty; say who you are")
	}
	if len(s) > MaxHoldBy {
		return fmt.Errorf("%d bytes, limit %d", len(s), MaxHoldBy)
	}
	return printable(s)
}

func validHoldReason(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxHoldReason {
		return fmt.Errorf("%d bytes, limit %d; shorten it", len(s), MaxHoldReason)
	}
	return printable(s)
}

// printable refuses control characters and invalid UTF-8: the text goes
// into logs and pages.
func printable(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("control character %U; use one line of plain text", r)
		}
	}
	return nil
}

// holdsFile is the holds file on disk; changes are locked
// read-modify-writes with an atomic replace, like the state file's.
type holdsFile struct{ path string }

func (f holdsFile) load() (*Holds, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return &Holds{Schema: HoldsSchema, Models: map[string]*Hold{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("publisher: read holds file: %w", err)
	}
	h, err := ParseHolds(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (fix it, or move it away to lift every operator halt)", f.path, err)
	}
	return h, nil
}

// update runs change on the file's content under its lock and saves it.
func (f holdsFile) update(ctx context.Context, change func(*Holds) error) error {
	unlock, err := lockFile(ctx, f.path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	h, err := f.load()
	if err != nil {
		return err
	}
	if err := change(h); err != nil {
		return err
	}
	if err := atomicfile.WriteJSON(f.path, h, 0o600); err != nil {
		return fmt.Errorf("publisher: write holds file: %w", err)
	}
	return nil
}

// LoadHolds reads the operator holds of cfg (Config.HoldsFile); a missing
// file holds nothing.
func LoadHolds(cfg Config) (*Holds, error) {
	cfg.setDefaults()
	if cfg.HoldsFile == "" {
		return nil, fmt.Errorf("%w: holds_file: unknown without registry_dir or state_file", ErrInvalidConfig)
	}
	return holdsFile{cfg.HoldsFile}.load()
}

// RolloutOf returns the staged rollout cfg's state file records for model,
// or nil when none.
func RolloutOf(cfg Config, model string) (*Rollout, error) {
	cfg.setDefaults()
	if cfg.StateFile == "" {
		return nil, fmt.Errorf("%w: state_file: required (or registry_dir) to find the rollout", ErrInvalidConfig)
	}
	st, err := NewStateFile(cfg.StateFile).Load()
	if err != nil {
		return nil, err
	}
	if ms := st.Models[model]; ms != nil {
		return ms.Rollout, nil
	}
	return nil, nil
}

// HaltRollout halts the staged rollout of model that cfg's state file
// shows running: the publisher stops promoting it at its next poll and
// keeps the canary as it is until [ResumeRollout]. by says who halts
// (required); reason why (default "no reason given").
func HaltRollout(ctx context.Context, cfg Config, model, by, reason string) (*Hold, error) {
	if err := topics.ValidID(model); err != nil {
		return nil, fmt.Errorf("%w: model: %w", ErrInvalidConfig, err)
	}
	if err := validHoldBy(by); err != nil {
		return nil, fmt.Errorf("%w: who halts: %w", ErrInvalidConfig, err)
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		reason = defaultHoldWhy
	}
	if err := validHoldReason(reason); err != nil {
		return nil, fmt.Errorf("%w: reason: %w", ErrInvalidConfig, err)
	}
	ro, err := RolloutOf(cfg, model)
	if err != nil {
		return nil, err
	}
	cfg.setDefaults()
	switch {
	case ro == nil:
		return nil, fmt.Errorf("%w: %s has none in %s; a rollout starts when a version newer than the stable one is approved with a rollout policy", ErrNoRollout, model, cfg.StateFile)
	case ro.Halted():
		return nil, fmt.Errorf("%w: the rollout of %s version %d was already halted by the publisher at %s (%s); approve a newer version to start another",
			ErrNoRollout, model, ro.Version, ro.HaltedAt.Format(time.RFC3339), ro.HaltReason)
	}
	hold := &Hold{Version: ro.Version, HaltedBy: by, Reason: reason, HaltedAt: time.Now().UTC()}
	err = holdsFile{cfg.HoldsFile}.update(ctx, func(h *Holds) error {
		if old := h.Models[model]; old.Active() && old.Version == ro.Version {
			return fmt.Errorf("%w: %s version %d was halted by %s at %s (%s); resume it first to halt it again",
				ErrAlreadyHeld, model, old.Version, old.HaltedBy, old.HaltedAt.Format(time.RFC3339), old.Reason)
		}
		if _, ok := h.Models[model]; !ok && len(h.Models) >= maxHoldModels {
			return fmt.Errorf("%w: the holds file has %d models, the limit", ErrInvalidConfig, maxHoldModels)
		}
		h.Models[model] = hold
		return nil
	})
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("operator halted a rollout", "model", model, "version", hold.Version, "by", by, "reason", reason, "holds_file", cfg.HoldsFile)
	return hold, nil
}

// ResumeRollout lifts the operator halt of model's rollout: the publisher
// goes on with it at its next poll (promoting it at once if its soak is
// over and enough canary trucks committed it). by says who resumes.
func ResumeRollout(ctx context.Context, cfg Config, model, by string) (*Hold, error) {
	if err := topics.ValidID(model); err != nil {
		return nil, fmt.Errorf("%w: model: %w", ErrInvalidConfig, err)
	}
	if err := validHoldBy(by); err != nil {
		return nil, fmt.Errorf("%w: who resumes: %w", ErrInvalidConfig, err)
	}
	cfg.setDefaults()
	if cfg.HoldsFile == "" {
		return nil, fmt.Errorf("%w: holds_file: unknown without registry_dir or state_file", ErrInvalidConfig)
	}
	var resumed Hold
	err := holdsFile{cfg.HoldsFile}.update(ctx, func(h *Holds) error {
		old := h.Models[model]
		if !old.Active() {
			return fmt.Errorf("%w: %s has no operator halt in %s", ErrNotHeld, model, cfg.HoldsFile)
		}
		old.ResumedBy, old.ResumedAt = by, time.Now().UTC()
		resumed = *old
		return nil
	})
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("operator resumed a rollout", "model", model, "version", resumed.Version, "by", by, "halted_by", resumed.HaltedBy)
	return &resumed, nil
}
