package release

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

func testPin(truck string) *Release {
	r := testRelease()
	r.Canary, r.Truck = nil, truck
	return r
}

func testClear(truck string) *Release {
	return &Release{Schema: Schema, Model: "aps-failure", Serial: 9, IssuedAt: testNow.Add(-time.Hour), ExpiresAt: testNow.Add(time.Hour), Truck: truck, Clear: true}
}

func TestPinsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *Release
		want string // "" for valid
	}{
		{"pin", testPin("truck-1"), ""},
		{"clear", testClear("truck-1"), ""},
		{"pin with a canary", func() *Release { r := testRelease(); r.Truck = "truck-1"; return r }(), "canary: is set on a pin"},
		{"pin for a bad truck id", testPin("truck/1"), "truck:"},
		{"clear without truck", testClear(""), "clear: is set on a document without truck"},
		{"clear with a target", func() *Release { r := testClear("truck-1"); r.Stable = testTarget(3); return r }(), "clear has no targets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// A clearing pin signs and verifies, without a stable member.
func TestClearRoundTrip(t *testing.T) {
	pub, priv := testKey("publisher")
	doc, err := Sign(testClear("truck-1"), priv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(doc), `"stable"`) {
		t.Fatalf("a clearing pin carries a stable member: %s", doc)
	}
	r, err := (&Verifier{Keys: []ed25519.PublicKey{pub}, Now: func() time.Time { return testNow }}).Verify(doc)
	if err != nil || !r.Clear || r.Truck != "truck-1" {
		t.Fatalf("got %+v, %v", r, err)
	}
}

func TestCheckAudience(t *testing.T) {
	for _, tc := range []struct {
		name  string
		r     *Release
		truck string
		pin   bool
		ok    bool
	}{
		{"model release on the release topic", testRelease(), "truck-1", false, true},
		{"pin on its truck's topic", testPin("truck-1"), "truck-1", true, true},
		{"clear on its truck's topic", testClear("truck-1"), "truck-1", true, true},
		{"model release replayed as a pin", testRelease(), "truck-1", true, false},
		{"another truck's pin", testPin("truck-2"), "truck-1", true, false},
		{"a pin on the release topic", testPin("truck-1"), "truck-1", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.CheckAudience(tc.truck, tc.pin)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
