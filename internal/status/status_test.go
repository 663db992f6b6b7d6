package status

import (
	"encoding/json"
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
	if *out != in {
		t.Fatalf("got %+v", out)
	}
	for _, bad := range []string{`{`, `{"schema":"x"}`, `{"schema":"linkedge.status/v1","bogus":1}`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%s) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"schema":"linkedge.status/v1","truck":"t","online":true}`))
	f.Add([]byte(`{"schema":"linkedge.status/v1","kind":"booted","time":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if s, err := Parse(data); err == nil && s.Schema != Schema {
			t.Fatal("accepted a wrong schema")
		}
		if e, err := ParseEvent(data); err == nil && e.Schema != Schema {
			t.Fatal("accepted a wrong schema")
		}
	})
}
