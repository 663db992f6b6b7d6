package publisher

import (
	"context"
	"time"

	"github.com/linkedge/linkedge/internal/release"
	"github.com/linkedge/linkedge/publisher/localreg"
)

// LocalRegistry adapts a local folder registry to [Registry]. The adapter
// lives here rather than in localreg so that localreg stays a plain store
// with no dependency on the publisher (the publisher opens it by default).
type LocalRegistry struct {
	Reg *localreg.Registry
}

// NewLocalRegistry opens (creating if needed) the local registry in dir.
func NewLocalRegistry(dir string) (*LocalRegistry, error) {
	r, err := localreg.Open(dir)
	if err != nil {
		return nil, err
	}
	return &LocalRegistry{Reg: r}, nil
}

// Name implements [Registry].
func (l *LocalRegistry) Name() string { return "local:" + l.Reg.Dir() }

// Versions implements [Registry].
func (l *LocalRegistry) Versions(ctx context.Context) ([]Version, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := l.Reg.List()
	if err != nil {
		return nil, err
	}
	out := make([]Version, len(entries))
	for i, e := range entries {
		out[i] = localVersion(e)
	}
	return out, nil
}

// localVersion converts a registry entry. A version that names an image
// runs in that container, any other in process; the approval is only
// reported while the version is approved.
func localVersion(e localreg.Entry) Version {
	v := Version{
		Model:       e.Model,
		Version:     e.Version,
		Status:      Status(e.Status),
		Description: e.Description,
		Artifact:    ArtifactRef{Location: e.Path, SHA256: e.SHA256, Size: e.Size},
		Runtime:     release.Runtime{Kind: release.RuntimeInProcess},
		Source:      release.Source{Registry: release.RegistryLocal},
	}
	if e.Image != "" {
		v.Runtime = release.Runtime{Kind: release.RuntimeContainer, Image: e.Image}
	}
	if e.Status == localreg.StatusApproved {
		v.Source.ApprovedAt = e.ApprovedAt.UTC().Truncate(time.Millisecond)
		v.Source.ApprovedBy = e.ApprovedBy
	}
	return v
}
