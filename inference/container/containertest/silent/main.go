// Command silent is the entry point of a test image that starts and never
// serves: it stands for a serving image that hangs before it listens, or
// listens somewhere else. It ignores its arguments (`serve --http ADDR`)
// and exits on SIGTERM or SIGINT, so stopping it is quick.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}
