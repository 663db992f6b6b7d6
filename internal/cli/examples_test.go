package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/linkedge/linkedge/broker"
	"github.com/linkedge/linkedge/edgeclient"
	"github.com/linkedge/linkedge/publisher"
)

// TestExampleConfigs keeps deployments/examples in step with the config
// structs: every example must decode strictly.
func TestExampleConfigs(t *testing.T) {
	dir := "../../deployments/examples/"
	if _, err := edgeclient.LoadConfig(dir + "truck.yaml"); err != nil {
		t.Error(err)
	}
	if _, err := broker.LoadConfig(dir + "broker.yaml"); err != nil {
		t.Error(err)
	}
	// Every publisher example, so a new one is covered without a new line
	// here. Beyond decoding, the settings must hold together (Validate
	// without what only Go code sets; nothing here touches the files the
	// examples name).
	examples, err := filepath.Glob(dir + "publisher*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(examples) < 2 {
		t.Fatalf("publisher examples: %v, want publisher.yaml and publisher-sagemaker.yaml", examples)
	}
	for _, path := range examples {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := publisher.ParseConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.ValidateSettings(); err != nil {
				t.Error(err)
			}
		})
	}
}
