package cli

import (
	"os"
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
	data, err := os.ReadFile(dir + "publisher.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publisher.ParseConfig(data); err != nil {
		t.Error(err)
	}
}
