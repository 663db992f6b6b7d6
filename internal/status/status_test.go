package status

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRoundTrip(t *testing.T) {
	in := Status{Schema: Schema, Truck: "t1", Online: true, Model: "m", Version: 2, Desired: 3, Phase: "downloading", LastSeen: time.Unix(5, 0).UTC()}
	data, _ := json.Marshal(in)
	out, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*out, in) {
		t.Fatalf("got %+v", out)
	}
	for _, bad := range []string{`{`, `{"schema":"x"}`, `{"schema":"linkedge.status/v1","bogus":1}`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%s) accepted", bad)
		}
	}
}

// TestParseGroups: a truck's groups round-trip, are left out of the
// document when there are none, and a document naming too many, or names
// no truck could have, is refused: the status is outside input.
func TestParseGroups(t *testing.T) {
	in := Status{Schema: Schema, Truck: "t1", Groups: []string{"early", "north-2"}}
	data, _ := json.Marshal(in)
	out, err := Parse(data)
	if err != nil || !reflect.DeepEqual(out.Groups, in.Groups) {
		t.Fatalf("Parse(%s) = %+v, %v", data, out, err)
	}
	if data, _ := json.Marshal(Status{Schema: Schema}); strings.Contains(string(data), "groups") {
		t.Errorf("a truck without groups sends %s", data)
	}
	many := make([]string, MaxGroups+1)
	for i := range many {
		many[i] = "g" + strings.Repeat("x", i)
	}
	doc := func(groups []string) []byte {
		d, _ := json.Marshal(map[string]any{"schema": Schema, "groups": groups})
		return d
	}
	if _, err := Parse(doc(many[:MaxGroups])); err != nil {
		t.Errorf("%d groups refused: %v", MaxGroups, err)
	}
	for name, groups := range map[string][]string{
		"too many":   many,
		"too long":   {strings.Repeat("g", 65)},
		"empty":      {""},
		"a slash":    {"a/b"},
		"a comma":    {"a,b"},
		"a wildcard": {"#"},
	} {
		if _, err := Parse(doc(groups)); err == nil {
			t.Errorf("groups %s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"schema":"linkedge.status/v1","truck":"t","online":true}`))
	f.Add([]byte(`{"schema":"linkedge.status/v1","kind":"booted","time":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if s, err := Parse(data); err == nil && (s.Schema != Schema || CheckGroups(s.Groups) != nil) {
			t.Fatal("accepted a wrong schema or bad groups")
		}
		if e, err := ParseEvent(data); err == nil && e.Schema != Schema {
			t.Fatal("accepted a wrong schema")
		}
	})
}

func TestParsePresence(t *testing.T) {
	for _, tt := range []struct {
		in     string
		online bool
		ok     bool
	}{
		{"online", true, true},
		{"offline", false, true},
		{"", false, false},
		{"Online", false, false},
		{"online\n", false, false},
		{`{"online":true}`, false, false},
		{strings.Repeat("x", MaxPresenceSize+1), false, false},
	} {
		got, err := ParsePresence([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.online {
			t.Errorf("ParsePresence(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.online, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadPresence) {
			t.Errorf("ParsePresence(%q) error %v does not wrap ErrBadPresence", tt.in, err)
		}
	}
}

func TestOnline(t *testing.T) {
	on, off := Status{Online: true}, Status{Online: false}
	for _, tt := range []struct {
		name          string
		st            Status
		online, known bool
		want          bool
	}{
		{"status online, no presence (older agent)", on, false, false, true},
		{"older agent's will", off, false, false, false},
		{"presence online", on, true, true, true},
		{"presence offline (the will)", on, false, true, false},
		{"older agent's will after a newer agent's presence", off, true, true, false},
	} {
		if got := Online(tt.st, tt.online, tt.known); got != tt.want {
			t.Errorf("%s: Online = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func FuzzParsePresence(f *testing.F) {
	for _, s := range []string{"online", "offline", "", "onlinex", "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		online, err := ParsePresence(data)
		if err != nil {
			if online || !errors.Is(err, ErrBadPresence) {
				t.Fatalf("ParsePresence(%q) = %v, %v", data, online, err)
			}
			return
		}
		if want := map[bool]string{true: PresenceOnline, false: PresenceOffline}[online]; string(data) != want {
			t.Fatalf("ParsePresence(%q) = %v, but the payload is not %q", data, online, want)
		}
	})
}
