package update

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/linkedge/linkedge/internal/atomicfile"
)

// ErrCorruptState means a state file exists but cannot be read; the message
// names the file. Move it aside to start the truck afresh.
var ErrCorruptState = errors.New("corrupt agent state")

// Store keeps the update state on disk, one small JSON file per concern, each
// written atomically (temp file, fsync, rename, fsync of the folder):
//
//	installed.json  what serves (current) and what served before (previous)
//	update.json     the update in progress, written before every phase
//	failed.json     artifacts that failed, so the same broken bundle is not
//	                downloaded again on every reconnect
//	artifacts/      verified bundles by sha256, and .partial downloads
type Store struct {
	dir string
	mu  sync.Mutex
}

// FailedArtifact records why an artifact was given up on.
type FailedArtifact struct {
	Model    string    `json:"model"`
	Version  int64     `json:"version"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
}

// OpenStore opens (and creates) the state folder.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "artifacts"), 0o755); err != nil {
		return nil, fmt.Errorf("open agent state %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the state folder.
func (s *Store) Dir() string { return s.dir }

// ArtifactPath is where the verified bundle with this digest lives.
func (s *Store) ArtifactPath(sha string) string {
	return filepath.Join(s.dir, "artifacts", sha+".tar.gz")
}

func (s *Store) read(name string, v any) (bool, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return false, fmt.Errorf("%w: %s: %w", ErrCorruptState, filepath.Join(s.dir, name), err)
	}
	return true, nil
}

func (s *Store) write(name string, v any) error {
	if err := atomicfile.WriteJSON(filepath.Join(s.dir, name), v, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// Installed returns what serves and what served before.
func (s *Store) Installed() (Installed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var in Installed
	_, err := s.read("installed.json", &in)
	return in, err
}

// SetInstalled records what serves. This is the commit point of an update.
func (s *Store) SetInstalled(in Installed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.write("installed.json", in)
}

// Record returns the update in progress, or nil.
func (s *Store) Record() (*Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Record
	ok, err := s.read("update.json", &r)
	if !ok || err != nil {
		return nil, err
	}
	return &r, nil
}

// SetRecord writes the update record.
func (s *Store) SetRecord(r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.write("update.json", r)
}

func (s *Store) failed() (map[string]FailedArtifact, error) {
	m := map[string]FailedArtifact{}
	_, err := s.read("failed.json", &m)
	return m, err
}

// Failed returns the failure record of an artifact, if it failed before.
func (s *Store) Failed(sha string) (FailedArtifact, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.failed()
	if err != nil {
		return FailedArtifact{}, false
	}
	f, ok := m[sha]
	return f, ok
}

// MarkFailed records that an artifact failed; it is not tried again unless
// a newer release names it after the record is cleared.
func (s *Store) MarkFailed(sha string, f FailedArtifact) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.failed()
	if err != nil {
		m = map[string]FailedArtifact{}
	}
	if old, ok := m[sha]; ok {
		f.Attempts += old.Attempts
	}
	m[sha] = f
	return s.write("failed.json", m)
}

// Prune deletes downloaded artifacts and partial downloads other than the
// ones whose digests are listed.
func (s *Store) Prune(keep ...string) error {
	ents, err := os.ReadDir(filepath.Join(s.dir, "artifacts"))
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		sha, _, _ := strings.Cut(name, ".")
		kept := false
		for _, k := range keep {
			kept = kept || (k != "" && sha == k)
		}
		if !kept {
			if err := os.Remove(filepath.Join(s.dir, "artifacts", name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Fleet is what the agent remembers of the fleet between starts.
type Fleet struct {
	// LastSerial is the serial of the last release document accepted;
	// anything not above it is a replay.
	LastSerial int64 `json:"last_serial"`
	// LastPinSerial is the same for this truck's pins, a separate stream.
	LastPinSerial int64 `json:"last_pin_serial,omitempty"`
}

// Fleet returns the remembered fleet state.
func (s *Store) Fleet() (Fleet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f Fleet
	_, err := s.read("fleet.json", &f)
	return f, err
}

// SetFleet records the fleet state.
func (s *Store) SetFleet(f Fleet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.write("fleet.json", f)
}

// Documents the agent keeps: the last accepted release and pin, as received
// (signed), so that after a restart the truck knows its targets before the
// broker re-sends them, whatever order they then arrive in.
const (
	ReleaseDocument = "release.json"
	PinDocument     = "pin.json"
)

// SetDocument stores a signed document; nil data deletes it.
func (s *Store) SetDocument(name string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := filepath.Join(s.dir, name)
	if data == nil {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return atomicfile.WriteFile(p, data, 0o644)
}

// Document returns a stored document, or nil.
func (s *Store) Document(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		return nil
	}
	return data
}
