package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
//	installed.json  what serves (current) and what served before (previous);
//	                writing it is the commit point of an update
//	update.json     the update in progress, written before every phase
//	failed.json     targets given up, so the same broken model is not
//	                staged again on every reconnect (bounded, see pruneFailed)
//	artifacts/      verified bundles by sha256 (<sha>.tar.gz), the signed
//	                release that named each (<sha>.release.json), and
//	                .partial downloads
type Store struct {
	dir string
	mu  sync.Mutex
	// beforeWrite, when set (tests), runs before each state file is
	// written; an error stops the write, as a power cut would.
	beforeWrite func(name string) error
}

// FailedTarget records why a target was given up on.
type FailedTarget struct {
	Model    string    `json:"model"`
	Version  int64     `json:"version"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
}

// Bounds of failed.json: entries older than failedMaxAge, and past the
// newest failedMaxEntries, are dropped whenever it is written.
const (
	failedMaxAge     = 90 * 24 * time.Hour
	failedMaxEntries = 32
)

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

// releasePath is where the signed release that named a bundle is kept.
func (s *Store) releasePath(sha string) string {
	return filepath.Join(s.dir, "artifacts", sha+".release.json")
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
	if s.beforeWrite != nil {
		if err := s.beforeWrite(name); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := atomicfile.WriteJSON(filepath.Join(s.dir, name), v, 0o600); err != nil {
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

// SetInstalled records what serves. This is the commit point of an update:
// once it is on disk, the version it names is committed, whatever
// update.json still says (Boot reconciles the two).
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

// dropRecord deletes an unreadable update.json: it only said where an
// update stood, and the next release starts it again.
func (s *Store) dropRecord() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(filepath.Join(s.dir, "update.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (s *Store) failed() (map[string]FailedTarget, error) {
	m := map[string]FailedTarget{}
	_, err := s.read("failed.json", &m)
	return m, err
}

// Failed returns the failure record of a target (by Target.Key), if it was
// given up before.
func (s *Store) Failed(key string) (FailedTarget, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.failed()
	if err != nil {
		return FailedTarget{}, false
	}
	f, ok := m[key]
	return f, ok
}

// MarkFailed records that a target was given up on. The file keeps the
// newest failedMaxEntries entries younger than failedMaxAge.
func (s *Store) MarkFailed(key string, f FailedTarget) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.failed()
	if err != nil {
		m = map[string]FailedTarget{}
	}
	m[key] = f
	pruneFailed(m, f.At)
	return s.write("failed.json", m)
}

// ClearFailed forgets a target's failure (it committed after all).
func (s *Store) ClearFailed(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.failed()
	if err != nil {
		return s.write("failed.json", map[string]FailedTarget{})
	}
	if _, ok := m[key]; !ok {
		return nil
	}
	delete(m, key)
	return s.write("failed.json", m)
}

func pruneFailed(m map[string]FailedTarget, now time.Time) {
	for k, f := range m {
		if now.Sub(f.At) > failedMaxAge {
			delete(m, k)
		}
	}
	for len(m) > failedMaxEntries {
		oldest := ""
		for k, f := range m {
			if oldest == "" || f.At.Before(m[oldest].At) {
				oldest = k
			}
		}
		delete(m, oldest)
	}
}

// SetRelease keeps the signed release document that named a bundle beside
// it, so that the truck's state can be rebuilt from signed facts when
// installed.json is lost. committed marks the bundle as one that was
// committed, at that time.
func (s *Store) SetRelease(sha string, doc []byte, committed time.Time) error {
	if s.beforeWrite != nil {
		if err := s.beforeWrite(filepath.Base(s.releasePath(sha))); err != nil {
			return err
		}
	}
	if len(doc) == 0 {
		// Marking a commit without the document: keep the one there.
		data, err := os.ReadFile(s.releasePath(sha))
		if err != nil {
			return fmt.Errorf("no kept release for %s: %w", sha, err)
		}
		var k keptRelease
		if err := json.Unmarshal(data, &k); err != nil || len(k.Document) == 0 {
			return fmt.Errorf("%w: %s", ErrCorruptState, s.releasePath(sha))
		}
		doc = k.Document
	}
	return atomicfile.WriteJSON(s.releasePath(sha), keptRelease{Document: doc, CommittedAt: committed}, 0o600)
}

// keptRelease is <sha>.release.json.
type keptRelease struct {
	// Document is the signed release document, byte for byte.
	Document []byte `json:"document"`
	// CommittedAt is when the bundle was committed; zero if never.
	CommittedAt time.Time `json:"committed_at,omitzero"`
}

// keptReleases lists the kept release documents by bundle digest.
func (s *Store) keptReleases() map[string]keptRelease {
	out := map[string]keptRelease{}
	ents, _ := os.ReadDir(filepath.Join(s.dir, "artifacts"))
	for _, e := range ents {
		sha, ok := strings.CutSuffix(e.Name(), ".release.json")
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, "artifacts", e.Name()))
		if err != nil || len(data) > maxKeptRelease {
			continue
		}
		var k keptRelease
		if json.Unmarshal(data, &k) == nil && len(k.Document) > 0 {
			out[sha] = k
		}
	}
	return out
}

// maxKeptRelease bounds what keptReleases reads: a signed document is a few
// KiB (release.MaxSize), base64 in JSON a third more.
const maxKeptRelease = 1 << 20

// HasArtifact reports whether a complete file of the target's size is on
// disk (not whether its digest is right: VerifyArtifact says that).
func (s *Store) HasArtifact(t Target) bool {
	st, err := os.Stat(s.ArtifactPath(t.Artifact.SHA256))
	return err == nil && st.Mode().IsRegular() && st.Size() == t.Artifact.Size
}

// VerifyArtifact checks that the bundle with digest sha on disk has that
// sha256 (and size, when size > 0). A mismatch wraps ErrCorruptArtifact.
func (s *Store) VerifyArtifact(sha string, size int64) error {
	return verifyFile(s.ArtifactPath(sha), sha, size)
}

// ErrCorruptArtifact means a stored bundle no longer has the digest of the
// signed release that installed it: the disk changed it.
var ErrCorruptArtifact = errors.New("stored bundle is corrupt")

func verifyFile(p, sha string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorruptArtifact, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("%w: read %s: %w", ErrCorruptArtifact, p, err)
	}
	if size > 0 && n != size {
		return fmt.Errorf("%w: %s has %d bytes, its release says %d", ErrCorruptArtifact, p, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("%w: %s has sha256 %s, its release says %s", ErrCorruptArtifact, p, got, sha)
	}
	return nil
}

// SweepTemp removes the temporary files of atomic writes that a crash
// interrupted (".name.tmp-*"); they are never the truth, and would pile up
// one per power cut.
func (s *Store) SweepTemp() (int, error) {
	n := 0
	var errs []error
	for _, dir := range []string{s.dir, filepath.Join(s.dir, "artifacts")} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") && e.Type().IsRegular() {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
					errs = append(errs, err)
					continue
				}
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

// Prune deletes downloaded artifacts, their kept releases and partial
// downloads other than the ones whose digests are listed.
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
	// Subscribed are the topic filters the broker acknowledged on the
	// truck's persistent session; while the broker keeps that session, the
	// agent does not subscribe again.
	Subscribed []string `json:"subscribed,omitempty"`
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
	return atomicfile.WriteFile(p, data, 0o600)
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
