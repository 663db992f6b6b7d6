package runtime

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/linkedge/linkedge/inference/apsmodels"
	"github.com/linkedge/linkedge/inference/bundle"
)

// Adopt gives the bundle the release's version whatever metadata.json
// says, and refuses a bundle of another model. The container runtime
// unpacks the adopted bundle, so the metadata.json its container serves
// from carries the release's version too.
func TestAdopt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		own     int64 // metadata.json's version; 0 leaves it out
		spec    Spec
		wantErr bool
	}{
		{name: "no version", own: 0, spec: Spec{Model: "aps-failure", Version: 3}},
		{name: "another version", own: 2, spec: Spec{Model: "aps-failure", Version: 3}},
		{name: "same version", own: 3, spec: Spec{Model: "aps-failure", Version: 3}},
		{name: "another model", own: 3, spec: Spec{Model: "engine-temp", Version: 3}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bundle.Read(bytes.NewReader(apsmodels.V1()), bundle.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			b.Meta.Version = tc.own
			err = Adopt(b, tc.spec)
			if tc.wantErr {
				if !errors.Is(err, bundle.ErrInvalid) {
					t.Fatalf("Adopt = %v, want bundle.ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := b.Unpack(dir); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, bundle.MetadataFile))
			if err != nil {
				t.Fatal(err)
			}
			m, err := bundle.DecodeMetadata(raw)
			if err != nil {
				t.Fatal(err)
			}
			if m.Version != tc.spec.Version {
				t.Fatalf("unpacked metadata.json says version %d, want the release's %d", m.Version, tc.spec.Version)
			}
		})
	}
}
