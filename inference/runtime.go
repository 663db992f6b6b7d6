// Package inference turns model bundles into predictions: one process-wide
// ONNX Runtime, models that load from a bundle and check themselves against
// it, a micro-batcher that gathers concurrent single-row calls into one
// runtime call, and the HTTP and MQTT front ends in inference/server.
package inference

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/linkedge/linkedge/inference/ortlib"
)

var (
	initMu   sync.Mutex
	initPath string
)

// Init starts the process-wide ONNX Runtime environment. libPath names the
// shared library; empty means ortlib.Ensure finds or fetches it. Calling Init
// again is cheap and returns nil once the runtime is up, whatever the path:
// the runtime cannot be swapped for another library in a running process.
func Init(ctx context.Context, libPath string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if initPath != "" {
		return nil
	}
	if libPath == "" {
		p, err := ortlib.Ensure(ctx, slog.Default())
		if err != nil {
			return fmt.Errorf("start onnx runtime: %w", err)
		}
		libPath = p
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("start onnx runtime from %s: %w", libPath, err)
	}
	initPath = libPath
	return nil
}

// RuntimeInfo says which library is loaded and its version; empty before Init.
func RuntimeInfo() (libPath, version string) {
	initMu.Lock()
	defer initMu.Unlock()
	if initPath == "" {
		return "", ""
	}
	return initPath, ort.GetVersion()
}
