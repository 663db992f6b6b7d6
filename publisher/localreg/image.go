package localreg

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/linkedge/linkedge/internal/atomicfile"
	"github.com/linkedge/linkedge/internal/release"
)

// ErrImageFixed: the version's image cannot change (it names another one,
// or it is approved).
var ErrImageFixed = errors.New("localreg: the version's image cannot change")

// SetImage makes a version run in the serving container image (pinned by
// digest, as `linkedge toolkit image` prints it) instead of in process.
// What an approved version runs is what trucks were told, so its image is
// fixed from the approval on, and a version that names an image keeps it:
// either is [ErrImageFixed], and the way out is a new version. Setting the
// image a version already names changes nothing.
func (r *Registry) SetImage(model string, version int64, image string) (Entry, error) {
	if err := release.CheckImage(image); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	e, err := r.Get(model, version)
	if err != nil || e.Image == image {
		return e, err
	}
	switch {
	case e.Image != "":
		return Entry{}, fmt.Errorf("%w: %s version %d already runs in %s; add the bundle again as a new version to run it in %s",
			ErrImageFixed, model, version, e.Image, image)
	case e.Status == StatusApproved:
		return Entry{}, fmt.Errorf("%w: %s version %d is approved to run in process; add the bundle again as a new version with --image %s",
			ErrImageFixed, model, version, image)
	}
	e.Image = image
	if err := e.Record.validate(); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(filepath.Dir(e.Path), RecordFile), &e.Record, 0o644); err != nil {
		return Entry{}, fmt.Errorf("localreg: %w", err)
	}
	return e, nil
}
