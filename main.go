// Command linkedge keeps ML models on intermittently connected vehicles
// current over MQTT, and serves them locally. Run `linkedge --help`.
package main

import (
	"os"

	"github.com/linkedge/linkedge/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
