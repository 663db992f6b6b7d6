package edgeclient

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/linkedge/linkedge/inference/ortlib"
	"github.com/linkedge/linkedge/internal/release"
)

// Issue 12 #11: an agent whose ONNX Runtime library is missing fails its
// start at once, naming the fix; it never fetches the library (a 110 MB
// download a truck's serving would wait on).
func TestStartWithoutONNXRuntimeFailsFast(t *testing.T) {
	// No library where `linkedge setup` puts it, and no environment
	// variable: the case that used to start an npm download.
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv(ortlib.EnvVar, "")
	t.Setenv(ortlib.CacheEnvVar, t.TempDir())
	pub, _ := release.GenerateKey()
	a, err := New(Config{Truck: "truck-1", Model: "aps-failure", DataDir: t.TempDir(), Keys: []ed25519.PublicKey{pub},
		Fleet: FleetConfig{Broker: "tcp://127.0.0.1:1"}, HTTP: "127.0.0.1:0", LocalBroker: LocalBrokerConfig{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = a.Start(ctx)
	if err == nil {
		a.Close()
		t.Fatal("the agent started without its ONNX Runtime library")
	}
	if !strings.Contains(err.Error(), "inference.onnxruntime") || time.Since(start) > 5*time.Second {
		t.Fatalf("after %s: %v; want a quick error naming inference.onnxruntime", time.Since(start), err)
	}
}
