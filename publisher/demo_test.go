package publisher

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// The committed demo bundles (inference/apsmodels) go through the registry
// and the publisher unchanged. They are read from disk rather than through
// package apsmodels, which would link ONNX Runtime into this test.
func TestDemoBundles(t *testing.T) {
	dir := filepath.Join("..", "inference", "apsmodels")
	v1, err1 := os.ReadFile(filepath.Join(dir, "aps-failure-v1.tar.gz"))
	v2, err2 := os.ReadFile(filepath.Join(dir, "aps-failure-v2.tar.gz"))
	if err1 != nil || err2 != nil {
		t.Skipf("demo bundles not present: %v %v", err1, err2)
	}
	e := newEnv(t)
	for _, p := range []string{"aps-failure-v1.tar.gz", "aps-failure-v2.tar.gz"} {
		if _, err := e.reg.Add(context.Background(), filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	b := startBroker(t, "127.0.0.1:0")
	s := subscribe(t, b.Addr(), "aps-failure")
	e.approve("aps-failure", 1)
	start(t, e.config(b.Addr()))
	for i, want := range [][]byte{v1, v2} {
		r := e.verify(s.next())
		if r.Stable.Version != int64(i+1) {
			t.Fatalf("announced version %d, want %d", r.Stable.Version, i+1)
		}
		if got := get(t, r.Stable.Artifact.URL, nil, http.StatusOK); !bytes.Equal(got, want) {
			t.Fatalf("version %d: downloaded %d bytes differ from the %d-byte bundle", i+1, len(got), len(want))
		}
		if i == 0 {
			e.approve("aps-failure", 2)
		}
	}
}
