// Package localreg is the embedded model registry: a folder that holds model
// bundles and their approval status, edited by `linkedge registry` and
// watched by the publisher. It plays the role the SageMaker Model Registry
// plays in the cloud, with no service to run.
//
// # Layout
//
//	DIR/models/{model}/{version}/model.tar.gz   the bundle, byte for byte as added
//	DIR/models/{model}/{version}/version.json   its [Record]: status, times, sha256, size
//
// # Concurrency
//
// One writing process (the CLI) and any number of reading processes (the
// publisher polls) may use a registry at once, with no lock: a version
// folder is assembled under a hidden name and renamed into place complete,
// and version.json is only ever replaced atomically, so a reader sees a
// version entirely or not at all, and each record either before or after a
// change. Two writers at once are not supported: both could pass the
// "newer than the newest version" check before either renames.
package localreg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/linkedge/linkedge/internal/topics"
)

// File names inside a version folder.
const (
	ArtifactFile = "model.tar.gz"
	RecordFile   = "version.json"
)

// Sentinel errors, checked with errors.Is. Each error says what to do.
var (
	ErrNotFound      = errors.New("localreg: no such model version")
	ErrExists        = errors.New("localreg: version already exists")
	ErrNotNewer      = errors.New("localreg: version is not above the newest existing version")
	ErrInvalidBundle = errors.New("localreg: not a valid model bundle")
	ErrInvalidInput  = errors.New("localreg: invalid input")
	ErrCorrupt       = errors.New("localreg: corrupt version record")
	ErrModified      = errors.New("localreg: artifact changed since it was added")
)

// Registry is a registry folder. Its methods are safe for concurrent use
// within one process; see the package doc for several processes.
type Registry struct {
	dir string // absolute
}

// Entry is one version: where it lives and its record.
type Entry struct {
	Model   string
	Version int64
	Record
	// Path is the absolute path of the version's model.tar.gz.
	Path string
}

// Open opens the registry in dir, creating dir/models if needed, so a new
// registry needs no separate init step.
func Open(dir string) (*Registry, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: registry folder is empty; pass --registry DIR", ErrInvalidInput)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("localreg: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, "models"), 0o755); err != nil {
		return nil, fmt.Errorf("localreg: create registry folder: %w", err)
	}
	return &Registry{dir: abs}, nil
}

// Dir returns the registry's absolute folder.
func (r *Registry) Dir() string { return r.dir }

func (r *Registry) modelsDir() string { return filepath.Join(r.dir, "models") }

func (r *Registry) versionDir(model string, version int64) string {
	return filepath.Join(r.modelsDir(), model, strconv.FormatInt(version, 10))
}

// Get returns one version, or an error wrapping [ErrNotFound].
func (r *Registry) Get(model string, version int64) (Entry, error) {
	if err := checkID(model, version); err != nil {
		return Entry{}, err
	}
	dir := r.versionDir(model, version)
	rec, err := readRecord(filepath.Join(dir, RecordFile))
	if errors.Is(err, os.ErrNotExist) {
		return Entry{}, fmt.Errorf("%w: %s version %d (see `linkedge registry list`)", ErrNotFound, model, version)
	}
	if err != nil {
		return Entry{}, err
	}
	return Entry{Model: model, Version: version, Record: *rec, Path: filepath.Join(dir, ArtifactFile)}, nil
}

// List returns every version of every model, sorted by model and version.
// A version whose record cannot be read makes List fail rather than skip
// it: the publisher decides what trucks run from this list, and silently
// dropping an approved version would withdraw it from the fleet.
func (r *Registry) List() ([]Entry, error) {
	models, err := os.ReadDir(r.modelsDir())
	if err != nil {
		return nil, fmt.Errorf("localreg: list models: %w", err)
	}
	var out []Entry
	for _, m := range models {
		if !m.IsDir() || strings.HasPrefix(m.Name(), ".") || topics.ValidID(m.Name()) != nil {
			continue // staging folders and anything not made by Add
		}
		versions, err := r.versions(m.Name())
		if err != nil {
			return nil, err
		}
		for _, v := range versions {
			e, err := r.Get(m.Name(), v)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// versions returns model's version numbers in ascending order; none if the
// model does not exist.
func (r *Registry) versions(model string) ([]int64, error) {
	ents, err := os.ReadDir(filepath.Join(r.modelsDir(), model))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("localreg: list versions of %s: %w", model, err)
	}
	var vs []int64
	for _, e := range ents {
		if v, ok := parseVersion(e.Name()); ok && e.IsDir() {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs, nil
}

// parseVersion accepts the folder names Add creates: positive decimal
// integers without sign or leading zeros.
func parseVersion(name string) (int64, bool) {
	v, err := strconv.ParseInt(name, 10, 64)
	return v, err == nil && v >= 1 && strconv.FormatInt(v, 10) == name
}

func checkID(model string, version int64) error {
	if err := topics.ValidID(model); err != nil {
		return fmt.Errorf("%w: model: %w", ErrInvalidInput, err)
	}
	if version < 1 {
		return fmt.Errorf("%w: version %d, want 1 or more", ErrInvalidInput, version)
	}
	return nil
}

func readRecord(path string) (*Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rec, err := ParseRecord(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (restore it from a backup, or remove the version folder and add the bundle again)", path, err)
	}
	return rec, nil
}
