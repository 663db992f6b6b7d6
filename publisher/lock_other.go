//go:build !unix

package publisher

import "context"

// lockFile is a no-op where flock is unavailable: run a single publisher
// process per state file there.
func lockFile(ctx context.Context, path string) (func(), error) {
	return func() {}, ctx.Err()
}
