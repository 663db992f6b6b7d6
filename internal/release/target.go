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

// SameTargets reports whether r and o send every truck to the same bytes:
// the same stable and canary artifacts, runtimes and canary selection. URLs
// and validity may differ: two publishers running at once sign equivalent
// documents, each with its own artifact server and serial.
func (r *Release) SameTargets(o *Release) bool {
	if r == nil || o == nil || r.Model != o.Model || r.Truck != o.Truck || r.Clear != o.Clear || !sameTarget(r.Stable, o.Stable) {
		return false
	}
	if (r.Canary == nil) != (o.Canary == nil) {
		return false
	}
	if r.Canary == nil {
		return true
	}
	return r.Canary.Percent == o.Canary.Percent && slices.Equal(r.Canary.Groups, o.Canary.Groups) && sameTarget(r.Canary.Target, o.Canary.Target)
}

func sameTarget(a, b Target) bool {
	return a.Version == b.Version && a.Artifact.SHA256 == b.Artifact.SHA256 && a.Artifact.Size == b.Artifact.Size && a.Runtime == b.Runtime
}
