//go:build !race

package chaos

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = false
