package publisher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"time"

	"github.com/linkedge/linkedge/internal/atomicfile"
	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/internal/topics"
)

// StateSchema is the value of State.Schema this package writes and reads.
const StateSchema = "linkedge.publisher-state/v1"

// maxStateSize bounds what ParseState reads (a model's entry is under 1 KiB).
const maxStateSize = 16 << 20

// ErrCorruptState wraps every state file parse error.
var ErrCorruptState = errors.New("publisher: corrupt state file")

// State is the publisher's persistent memory: per model, the highest serial
// ever signed, the last announcement the broker acknowledged and the staged
// rollout, with the canary failures heard. It is what makes a restarted
// publisher announce nothing twice, never reuse a serial and go on counting
// a rollout's failures where it stopped.
type State struct {
	Schema string                 `json:"schema"`
	Models map[string]*ModelState `json:"models"`
}

// ModelState is one model's entry in [State].
type ModelState struct {
	// SignedSerial is the highest serial ever signed for the model. It is
	// recorded before the document leaves the process, so a crash or an
	// unacknowledged publish (which the broker may still have received)
	// never lets the serial be reused.
	SignedSerial int64 `json:"signed_serial"`
	// Announced is the last announcement the broker acknowledged; nil if
	// none yet.
	Announced *Announcement `json:"announced,omitempty"`
	// Rollout is the staged rollout of a version newer than the announced
	// stable one: running (its canary is in Announced) or halted (the canary
	// was withdrawn). Nil when none; see rollout.go.
	Rollout *Rollout `json:"rollout,omitempty"`
}

// Announcement records one acknowledged release document.
type Announcement struct {
	Version   int64           `json:"version"`
	Serial    int64           `json:"serial"`
	SHA256    string          `json:"sha256"`
	Size      int64           `json:"size"`
	URL       string          `json:"url"`
	Runtime   release.Runtime `json:"runtime"`
	IssuedAt  time.Time       `json:"issued_at"`
	ExpiresAt time.Time       `json:"expires_at"`
	AckedAt   time.Time       `json:"acked_at"`
	// Canary is the document's canary target, if it had one.
	Canary *CanaryAnnouncement `json:"canary,omitempty"`
}

// CanaryAnnouncement records the canary target of an announcement.
type CanaryAnnouncement struct {
	Version int64           `json:"version"`
	SHA256  string          `json:"sha256"`
	Size    int64           `json:"size"`
	Runtime release.Runtime `json:"runtime"`
	Percent int             `json:"percent"`
	Groups  []string        `json:"groups,omitempty"`
}

// Matches reports whether a announces exactly v's content (version,
// artifact digest and size, runtime). The URL is left out on purpose: a
// presigned URL differs on every call without the content changing.
func (a *Announcement) Matches(v Version) bool {
	return a != nil && a.Version == v.Version && a.SHA256 == v.Artifact.SHA256 &&
		a.Size == v.Artifact.Size && a.Runtime == v.Runtime
}

// MatchesPlan reports whether a announces exactly pl's content: the same
// stable target, and the same canary target and selection (or none).
func (a *Announcement) MatchesPlan(pl Plan) bool {
	if !a.Matches(pl.Stable) {
		return false
	}
	c := pl.Canary
	if c == nil || a.Canary == nil {
		return c == nil && a.Canary == nil
	}
	ac := a.Canary
	return ac.Version == c.Version && ac.SHA256 == c.Artifact.SHA256 && ac.Size == c.Artifact.Size &&
		ac.Runtime == c.Runtime && ac.Percent == pl.Percent && slices.Equal(ac.Groups, pl.Groups)
}

// ResignAt is when a should be re-signed: once less than a third of its
// validity window remains, which leaves trucks that are online now and then
// two chances in three to get the fresh document before the old one expires.
func (a *Announcement) ResignAt() time.Time {
	return a.ExpiresAt.Add(-a.ExpiresAt.Sub(a.IssuedAt) / 3)
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// decodeStrict decodes one JSON object of at most limit bytes into v,
// refusing unknown fields and anything after the object; errors wrap
// corrupt. The publisher's own files (state, holds) are read this way.
func decodeStrict(data []byte, v any, limit int, corrupt error) error {
	if len(data) > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", corrupt, len(data), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", corrupt, err)
	}
	if _, err := dec.Token(); err == nil {
		return fmt.Errorf("%w: data after the JSON object", corrupt)
	}
	return nil
}

// ParseState decodes a state file strictly: unknown fields, trailing data
// and impossible content are errors wrapping [ErrCorruptState].
func ParseState(data []byte) (*State, error) {
	var s State
	if err := decodeStrict(data, &s, maxStateSize, ErrCorruptState); err != nil {
		return nil, err
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptState, err)
	}
	return &s, nil
}

func (s *State) validate() error {
	if s.Schema != StateSchema {
		return fmt.Errorf("schema is %q, want %q", clip(s.Schema), StateSchema)
	}
	if s.Models == nil {
		s.Models = map[string]*ModelState{}
	}
	for m, ms := range s.Models {
		if err := topics.ValidID(m); err != nil {
			return fmt.Errorf("model %q: %w", clip(m), err)
		}
		if ms == nil {
			return fmt.Errorf("model %s: null entry", m)
		}
		if ms.SignedSerial < 0 {
			return fmt.Errorf("model %s: signed_serial %d is negative", m, ms.SignedSerial)
		}
		a := ms.Announced
		if a == nil {
			continue
		}
		switch {
		case a.Serial < 1 || a.Serial > ms.SignedSerial:
			return fmt.Errorf("model %s: announced serial %d is not between 1 and signed_serial %d", m, a.Serial, ms.SignedSerial)
		case a.Version < 1:
			return fmt.Errorf("model %s: announced version %d, want 1 or more", m, a.Version)
		case !sha256Hex.MatchString(a.SHA256):
			return fmt.Errorf("model %s: announced sha256 %q is not 64 lowercase hex characters", m, clip(a.SHA256))
		case !a.ExpiresAt.After(a.IssuedAt):
			return fmt.Errorf("model %s: announced expires_at is not after issued_at", m)
		}
		if c := a.Canary; c != nil {
			switch {
			case c.Version <= a.Version:
				return fmt.Errorf("model %s: canary version %d is not above the stable %d", m, c.Version, a.Version)
			case !sha256Hex.MatchString(c.SHA256):
				return fmt.Errorf("model %s: canary sha256 %q is not 64 lowercase hex characters", m, clip(c.SHA256))
			case c.Percent < 0 || c.Percent > 100:
				return fmt.Errorf("model %s: canary percent %d is not between 0 and 100", m, c.Percent)
			}
		}
		if r := ms.Rollout; r != nil {
			if r.Version < 1 || !sha256Hex.MatchString(r.SHA256) {
				return fmt.Errorf("model %s: rollout of version %d with sha256 %q is not valid", m, r.Version, clip(r.SHA256))
			}
			if err := validFailures(r.Failures); err != nil {
				return fmt.Errorf("model %s: rollout of version %d: %w", m, r.Version, err)
			}
			if r.Hold != nil {
				if err := r.Hold.validate(); err != nil {
					return fmt.Errorf("model %s: rollout of version %d: operator_hold: %w", m, r.Version, err)
				}
			}
		}
	}
	return nil
}

func validFailures(f map[string]string) error {
	if len(f) > maxRolloutFailures {
		return fmt.Errorf("%d failed trucks, limit %d", len(f), maxRolloutFailures)
	}
	for truck, detail := range f {
		if err := topics.ValidID(truck); err != nil {
			return fmt.Errorf("failed truck %q: %w", clip(truck), err)
		}
		if len(detail) > maxFailureDetail {
			return fmt.Errorf("failed truck %s: error of %d bytes, limit %d", truck, len(detail), maxFailureDetail)
		}
	}
	return nil
}

// StateFile is the state on disk. Every change is a locked
// read-modify-write with an atomic replace, so a publisher service and a
// one-shot `linkedge publish` may share it.
type StateFile struct {
	path string
}

// NewStateFile returns the state file at path; it need not exist yet.
func NewStateFile(path string) *StateFile { return &StateFile{path: path} }

// Path returns the file's path.
func (f *StateFile) Path() string { return f.path }

// Load reads the state; a missing file is an empty state. It takes no lock:
// the file is replaced atomically, so it is always whole.
func (f *StateFile) Load() (*State, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{Schema: StateSchema, Models: map[string]*ModelState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("publisher: read state: %w", err)
	}
	s, err := ParseState(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (fix or move the file away; without it the publisher re-announces every model once)", f.path, err)
	}
	return s, nil
}

func (f *StateFile) save(s *State) error {
	if err := atomicfile.WriteJSON(f.path, s, 0o600); err != nil {
		return fmt.Errorf("publisher: write state: %w", err)
	}
	return nil
}

// lock takes the cross-process lock that serializes announcements (see
// lockFile), waiting until ctx is done.
func (f *StateFile) lock(ctx context.Context) (unlock func(), err error) {
	return lockFile(ctx, f.path+".lock")
}

// entry returns s's entry for model, creating it.
func (s *State) entry(model string) *ModelState {
	ms := s.Models[model]
	if ms == nil {
		ms = &ModelState{}
		s.Models[model] = ms
	}
	return ms
}

// clip shortens s for error messages so a hostile file stays out of logs.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
