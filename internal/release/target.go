package release

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// TargetFor returns the target truckID should run, and whether it is the
// canary. A truck runs the canary if it is in one of the canary's groups or
// its [Bucket] is below the canary percent; otherwise it runs Stable.
func (r *Release) TargetFor(truckID string, groups []string) (t Target, canary bool) {
	c := r.Canary
	if c == nil {
		return r.Stable, false
	}
	for _, g := range groups {
		if slices.Contains(c.Groups, g) {
			return c.Target, true
		}
	}
	if Bucket(r.Model, truckID) < c.Percent {
		return c.Target, true
	}
	return r.Stable, false
}

// Bucket places a truck in one of 100 buckets (0 to 99) for model's canary:
// the first 8 bytes of SHA-256(model + "/" + truckID), read as a big-endian
// unsigned integer, modulo 100.
//
// It is deterministic, so the publisher and dashboards can predict which
// trucks a percent selects, and a truck's bucket never changes: raising the
// percent only adds trucks. Including the model gives each model its own
// cohort, so the same trucks are not always the guinea pigs.
func Bucket(model, truckID string) int {
	sum := sha256.Sum256([]byte(model + "/" + truckID))
	return int(binary.BigEndian.Uint64(sum[:8]) % 100)
}

// CheckNewer returns an error wrapping [ErrStale] unless r.Serial is above
// lastSerial, the serial of the last document the truck accepted for
// r.Model (0 if none). Call it after [Verifier.Verify], and persist r.Serial
// as the new last serial when the truck accepts r; the broker re-delivers
// the retained document on every reconnect, and that copy is then (harmlessly)
// stale.
func CheckNewer(r *Release, lastSerial int64) error {
	if r.Serial <= lastSerial {
		return wrap(ErrStale, "model %s serial %d is not newer than the last accepted serial %d; ignoring a replayed or rolled-back document (if the publisher's serial counter was reset, it must continue above %d)",
			r.Model, r.Serial, lastSerial, lastSerial)
	}
	return nil
}
