package release

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestTargetForDistribution(t *testing.T) {
	const n = 10000
	for _, percent := range []int{0, 1, 5, 10, 25, 50, 90, 100} {
		t.Run(fmt.Sprint(percent), func(t *testing.T) {
			r := testRelease()
			r.Canary.Percent = percent
			r.Canary.Groups = nil
			count := 0
			for i := range n {
				truck := fmt.Sprintf("truck-%05d", i)
				tgt, canary := r.TargetFor(truck, nil)
				if canary {
					count++
					if tgt.Version != r.Canary.Version {
						t.Fatalf("canary=true but version %d", tgt.Version)
					}
				} else if tgt.Version != r.Stable.Version {
					t.Fatalf("canary=false but version %d", tgt.Version)
				}
				if _, again := r.TargetFor(truck, nil); again != canary {
					t.Fatalf("TargetFor(%s) is not deterministic", truck)
				}
			}
			// Binomial standard deviation is at most 50 trucks for n=10000;
			// allow about 4 of them.
			want := n * percent / 100
			if d := count - want; d < -200 || d > 200 {
				t.Errorf("%d%%: %d of %d trucks on canary, want about %d", percent, count, n, want)
			}
			if percent == 0 && count != 0 || percent == 100 && count != n {
				t.Errorf("%d%%: %d trucks on canary, want exactly %d", percent, count, want)
			}
		})
	}
}

func TestTargetForRaisingPercentOnlyAddsTrucks(t *testing.T) {
	r := testRelease()
	r.Canary.Groups = nil
	for i := range 2000 {
		truck := fmt.Sprintf("t%d", i)
		was := false
		for p := 0; p <= 100; p += 5 {
			r.Canary.Percent = p
			_, now := r.TargetFor(truck, nil)
			if was && !now {
				t.Fatalf("truck %s left the canary when percent rose to %d", truck, p)
			}
			was = now
		}
	}
}

func TestTargetForGroupsAndNoCanary(t *testing.T) {
	r := testRelease()
	r.Canary.Percent = 0
	r.Canary.Groups = []string{"test-fleet", "depot-7"}

	tests := []struct {
		name   string
		groups []string
		want   bool
	}{
		{"no groups", nil, false},
		{"other group", []string{"north"}, false},
		{"member", []string{"north", "depot-7"}, true},
		{"case matters", []string{"Test-Fleet"}, false},
	}
	for _, tt := range tests {
		if tgt, got := r.TargetFor("truck-1", tt.groups); got != tt.want {
			t.Errorf("%s: canary = %v, want %v", tt.name, got, tt.want)
		} else if got && tgt.Version != 4 || !got && tgt.Version != 3 {
			t.Errorf("%s: version %d", tt.name, tgt.Version)
		}
	}

	r.Canary = nil
	if tgt, canary := r.TargetFor("truck-1", []string{"test-fleet"}); canary || tgt.Version != 3 {
		t.Errorf("without canary: %d, %v", tgt.Version, canary)
	}
}

func TestBucket(t *testing.T) {
	// Vectors computed independently (Python hashlib); every implementation
	// (publisher, dashboards) must agree. Also listed in
	// docs/release-format.md.
	tests := []struct {
		model, truck string
		want         int
	}{
		{"aps-failure", "truck-00001", 82},
		{"aps-failure", "truck-00002", 0},
		{"engine-temp", "truck-00001", 91},
		{"m", "t", 65},
	}
	for _, tt := range tests {
		if got := Bucket(tt.model, tt.truck); got != tt.want {
			t.Errorf("Bucket(%q, %q) = %d, want %d", tt.model, tt.truck, got, tt.want)
		}
	}
}

func TestCheckNewer(t *testing.T) {
	tests := []struct {
		serial, last int64
		ok           bool
	}{
		{1, 0, true},
		{8, 7, true},
		{7, 7, false},
		{6, 7, false},
		{1, 1 << 62, false},
	}
	for _, tt := range tests {
		r := &Release{Model: "m", Serial: tt.serial}
		err := CheckNewer(r, tt.last)
		if (err == nil) != tt.ok {
			t.Errorf("CheckNewer(serial %d, last %d) = %v, want ok=%v", tt.serial, tt.last, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrStale) {
			t.Errorf("error %v does not wrap ErrStale", err)
		}
	}
}

func TestSameTargets(t *testing.T) {
	base := func() *Release {
		return &Release{Model: "m", Serial: 10, Stable: Target{Version: 2, Artifact: Artifact{URL: "http://a/x", SHA256: strings.Repeat("a", 64), Size: 9}, Runtime: Runtime{Kind: RuntimeInProcess}},
			Canary: &Canary{Target: Target{Version: 3, Artifact: Artifact{URL: "http://a/y", SHA256: strings.Repeat("b", 64), Size: 8}, Runtime: Runtime{Kind: RuntimeInProcess}}, Percent: 5}}
	}
	for _, tt := range []struct {
		name string
		edit func(r *Release)
		same bool
	}{
		{"another publisher's copy: other URL, serial, validity", func(r *Release) {
			r.Serial, r.Stable.Artifact.URL, r.Canary.Artifact.URL, r.IssuedAt = 9, "http://b/x", "http://b/y", r.IssuedAt.Add(time.Second)
		}, true},
		{"another stable version", func(r *Release) { r.Stable.Version, r.Stable.Artifact.SHA256 = 1, strings.Repeat("c", 64) }, false},
		{"other bytes, same version", func(r *Release) { r.Stable.Artifact.SHA256 = strings.Repeat("c", 64) }, false},
		{"no canary", func(r *Release) { r.Canary = nil }, false},
		{"another canary share", func(r *Release) { r.Canary.Percent = 50 }, false},
		{"canary groups", func(r *Release) { r.Canary.Groups = []string{"early"} }, false},
		{"a pin", func(r *Release) { r.Truck = "t1" }, false},
		{"another runtime", func(r *Release) {
			r.Stable.Runtime = Runtime{Kind: RuntimeContainer, Image: "x@sha256:" + strings.Repeat("d", 64)}
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.edit(o)
			if got := base().SameTargets(o); got != tt.same {
				t.Errorf("SameTargets = %v, want %v", got, tt.same)
			}
		})
	}
	if base().SameTargets(nil) {
		t.Error("a release has the same targets as none")
	}
}
