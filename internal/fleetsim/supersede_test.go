package fleetsim

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/apsmodels"
)

// TestNewerReleaseSupersedesDownload: over a slow link, v3 is approved while
// v2 is still downloading; the truck drops v2 and goes straight to v3.
func TestNewerReleaseSupersedesDownload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	f, err := Start(ctx, Options{Dir: dir, Trucks: 1, Probation: 200 * time.Millisecond, HTTPClients: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := f.Trucks[0]
	approve := func(data []byte) {
		e, err := f.Register(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.Approve(e.Model, e.Version, "test"); err != nil {
			t.Fatal(err)
		}
	}
	approve(apsmodels.V1())
	if err := WaitVersion(ctx, 1, tr); err != nil {
		t.Fatal(err)
	}
	tr.Link.SetRate(8 << 10) // v2 (41 KB) now takes about 5 s
	approve(apsmodels.V2())
	if err := WaitFor(ctx, "v2 downloading", func() bool {
		st := tr.Agent.Status()
		return st.Phase == "downloading" && st.Desired == 2 && st.Downloaded > 0
	}); err != nil {
		t.Fatal(err)
	}
	approve(rebundle(t, apsmodels.V1(), 3))
	if err := WaitVersion(ctx, 3, tr); err != nil {
		t.Fatalf("%v; status %+v", err, tr.Agent.Status())
	}
	data, err := os.ReadFile(filepath.Join(dir, tr.ID, "installed.json"))
	if err != nil {
		t.Fatal(err)
	}
	var in struct {
		Previous struct{ Version int64 } `json:"previous"`
	}
	json.Unmarshal(data, &in)
	if in.Previous.Version != 1 {
		t.Fatalf("previous version %d: the truck installed v2 on its way to v3", in.Previous.Version)
	}
}
