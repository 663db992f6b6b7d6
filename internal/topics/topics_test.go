package topics

import (
	"errors"
	"strings"
	"testing"
)

func TestBuilders(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{ModelRelease("aps-failure"), "linkedge/v1/models/aps-failure/release"},
		{AllModelReleases(), "linkedge/v1/models/+/release"},
		{TruckDesired("truck-042"), "linkedge/v1/trucks/truck-042/desired"},
		{TruckStatus("truck-042"), "linkedge/v1/trucks/truck-042/status"},
		{AllTruckStatus(), "linkedge/v1/trucks/+/status"},
		{TruckPresence("truck-042"), "linkedge/v1/trucks/truck-042/presence"},
		{AllTruckPresence(), "linkedge/v1/trucks/+/presence"},
		{TruckEvents("truck-042"), "linkedge/v1/trucks/truck-042/events"},
		{TruckPredictions("truck-042", "aps-failure"), "linkedge/v1/trucks/truck-042/predictions/aps-failure"},
		{LocalReadings("aps-failure"), "linkedge/v1/local/aps-failure/readings"},
		{LocalPredictions("aps-failure"), "linkedge/v1/local/aps-failure/predictions"},
		{LocalErrors("aps-failure"), "linkedge/v1/local/aps-failure/errors"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"aps-failure", true},
		{"Truck_042.v2", true},
		{"...", true},
		{".hidden", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{".", false},
		{"..", false},
		{strings.Repeat("x", 65), false},
		{"a/b", false},
		{"+", false},
		{"#", false},
		{"a b", false},
		{"a\x00b", false},
		{"é", false},
		{"a:b", false},
	}
	for _, tt := range tests {
		err := ValidID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadID) {
			t.Errorf("ValidID(%q) error %v does not wrap ErrBadID", tt.id, err)
		}
	}
}

func TestParseRoundTrip(t *testing.T) {
	ids := []string{"a", "aps-failure", "Truck_042.v2", strings.Repeat("z", 64), "release", "status", "predictions"}
	for _, id := range ids {
		if got, ok := ParseModelRelease(ModelRelease(id)); !ok || got != id {
			t.Errorf("ParseModelRelease(ModelRelease(%q)) = %q, %v", id, got, ok)
		}
		if got, ok := ParseTruckStatus(TruckStatus(id)); !ok || got != id {
			t.Errorf("ParseTruckStatus(TruckStatus(%q)) = %q, %v", id, got, ok)
		}
		if got, ok := ParseTruckPresence(TruckPresence(id)); !ok || got != id {
			t.Errorf("ParseTruckPresence(TruckPresence(%q)) = %q, %v", id, got, ok)
		}
		if got, ok := ParseTruckEvents(TruckEvents(id)); !ok || got != id {
			t.Errorf("ParseTruckEvents(TruckEvents(%q)) = %q, %v", id, got, ok)
		}
		if got, ok := ParseTruckGrantRequest(TruckGrantRequest(id)); !ok || got != id {
			t.Errorf("ParseTruckGrantRequest(TruckGrantRequest(%q)) = %q, %v", id, got, ok)
		}
		for _, model := range ids {
			truck, m, ok := ParseTruckPredictions(TruckPredictions(id, model))
			if !ok || truck != id || m != model {
				t.Errorf("ParseTruckPredictions(TruckPredictions(%q, %q)) = %q, %q, %v", id, model, truck, m, ok)
			}
		}
	}
}

func TestParseRejects(t *testing.T) {
	bad := []string{
		"",
		"linkedge/v1",
		"linkedge/v1/models//release",
		"linkedge/v1/models/+/release",
		"linkedge/v1/models/#/release",
		"linkedge/v1/models/a/b/release",
		"linkedge/v1/models/a/release/",
		"linkedge/v1/models/a/releases",
		"/linkedge/v1/models/a/release",
		"linkedge/v2/models/a/release",
		"linkedge/v1/models/../release",
		"linkedge/v1/trucks/t/status/x",
		"linkedge/v1/trucks//status",
		"linkedge/v1/trucks/t/predictions",
		"linkedge/v1/trucks/t/predictions/",
		"linkedge/v1/trucks/t/predictions/m/x",
		"linkedge/v1/trucks/+/predictions/m",
		"linkedge/v1/trucks/t/predictions/#",
		"linkedge/v1/trucks/t/desired",
		"linkedge/v1/trucks/+/events",
		"linkedge/v1/trucks/+/presence",
		"linkedge/v1/trucks/t/presence/x",
		"linkedge/v1/trucks/t/events/x",
		"linkedge/v1/trucks/+/grant-request",
		"linkedge/v1/trucks/t/grant",
		"linkedge/v1/trucks/t/grant-request/x",
		"linkedge/v1/local/m/predictions",
		"Linkedge/v1/models/a/release",
	}
	for _, topic := range bad {
		if m, ok := ParseModelRelease(topic); ok {
			t.Errorf("ParseModelRelease(%q) accepted %q", topic, m)
		}
		if tr, ok := ParseTruckStatus(topic); ok {
			t.Errorf("ParseTruckStatus(%q) accepted %q", topic, tr)
		}
		if tr, ok := ParseTruckPresence(topic); ok {
			t.Errorf("ParseTruckPresence(%q) accepted %q", topic, tr)
		}
		if tr, ok := ParseTruckEvents(topic); ok {
			t.Errorf("ParseTruckEvents(%q) accepted %q", topic, tr)
		}
		if tr, ok := ParseTruckGrantRequest(topic); ok {
			t.Errorf("ParseTruckGrantRequest(%q) accepted %q", topic, tr)
		}
		if tr, m, ok := ParseTruckPredictions(topic); ok {
			t.Errorf("ParseTruckPredictions(%q) accepted %q, %q", topic, tr, m)
		}
	}
}

// The parsers must never panic, must only return valid ids, and must accept
// only the exact strings the builders would produce.
func FuzzParsers(f *testing.F) {
	for _, s := range []string{
		ModelRelease("aps-failure"), AllModelReleases(), TruckStatus("t1"), AllTruckStatus(), TruckPresence("t1"), AllTruckPresence(),
		TruckPredictions("t1", "m1"), TruckEvents("t1"), TruckGrantRequest("t1"), LocalReadings("m"),
		"linkedge/v1/models//release", "linkedge/v1/trucks/a/predictions/b/c", "", "/", "linkedge/v1/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		if model, ok := ParseModelRelease(topic); ok {
			if ValidID(model) != nil || ModelRelease(model) != topic {
				t.Fatalf("ParseModelRelease(%q) = %q does not round-trip", topic, model)
			}
		}
		if truck, ok := ParseTruckEvents(topic); ok && TruckEvents(truck) != topic {
			t.Fatalf("ParseTruckEvents(%q) = %q does not round-trip", topic, truck)
		}
		if truck, ok := ParseTruckGrantRequest(topic); ok && (ValidID(truck) != nil || TruckGrantRequest(truck) != topic) {
			t.Fatalf("ParseTruckGrantRequest(%q) = %q does not round-trip", topic, truck)
		}
		if truck, ok := ParseTruckPresence(topic); ok && (ValidID(truck) != nil || TruckPresence(truck) != topic) {
			t.Fatalf("ParseTruckPresence(%q) = %q does not round-trip", topic, truck)
		}
		if truck, ok := ParseTruckStatus(topic); ok {
			if ValidID(truck) != nil || TruckStatus(truck) != topic {
				t.Fatalf("ParseTruckStatus(%q) = %q does not round-trip", topic, truck)
			}
		}
		if truck, model, ok := ParseTruckPredictions(topic); ok {
			if ValidID(truck) != nil || ValidID(model) != nil || TruckPredictions(truck, model) != topic {
				t.Fatalf("ParseTruckPredictions(%q) = %q, %q does not round-trip", topic, truck, model)
			}
		}
	})
}

func TestQoSConstants(t *testing.T) {
	// Retained state topics need QoS 1 so the broker's copy is reliable.
	for name, q := range map[string]byte{
		"release": ReleaseQoS, "desired": DesiredQoS, "status": StatusQoS,
	} {
		if q != 1 {
			t.Errorf("%s QoS = %d, want 1", name, q)
		}
	}
	if !ReleaseRetain || !DesiredRetain || !StatusRetain {
		t.Error("state topics must be retained")
	}
	if EventsRetain || PredictionsRetain || LocalReadingsRetain || LocalPredictionsRetain {
		t.Error("stream topics must not be retained")
	}
}
