package publisher

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const goodState = `{
  "schema": "linkedge.publisher-state/v1",
  "models": {
    "aps": {
      "signed_serial": 1700000000124,
      "announced": {
        "version": 2, "serial": 1700000000123,
        "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "size": 42, "url": "http://127.0.0.1:9884/artifacts/aps/2/model.tar.gz",
        "runtime": {"kind": "inprocess"},
        "issued_at": "2025-01-01T00:00:00Z", "expires_at": "2025-01-31T00:00:00Z",
        "acked_at": "2025-01-01T00:00:00.2Z"
      }
    },
    "fresh": {"signed_serial": 5}
  }
}`

func TestParseState(t *testing.T) {
	s, err := ParseState([]byte(goodState))
	if err != nil {
		t.Fatal(err)
	}
	if a := s.Models["aps"].Announced; a.Version != 2 || a.Serial != 1700000000123 {
		t.Fatalf("parsed %+v", a)
	}
	bad := map[string]string{
		"unknown field":         strings.Replace(goodState, `"size"`, `"bytes"`, 1),
		"wrong schema":          strings.Replace(goodState, "publisher-state/v1", "publisher-state/v2", 1),
		"serial above reserved": strings.Replace(goodState, `"signed_serial": 1700000000124`, `"signed_serial": 1`, 1),
		"bad model id":          strings.Replace(goodState, `"fresh"`, `"a/b"`, 1),
		"bad digest":            strings.Replace(goodState, `"0123`, `"X123`, 1),
		"trailing data":         goodState + "{}",
		"null entry":            strings.Replace(goodState, `{"signed_serial": 5}`, `null`, 1),
		"expiry before issue":   strings.Replace(goodState, `"2025-01-31T00:00:00Z"`, `"2024-12-31T00:00:00Z"`, 1),
	}
	for name, doc := range bad {
		if _, err := ParseState([]byte(doc)); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: ParseState error = %v, want ErrCorruptState", name, err)
		}
	}
}

func TestStateFileLoad(t *testing.T) {
	dir := t.TempDir()
	f := NewStateFile(filepath.Join(dir, "state.json"))
	s, err := f.Load()
	if err != nil || len(s.Models) != 0 {
		t.Fatalf("missing file: %+v, %v; want an empty state", s, err)
	}
	os.WriteFile(f.Path(), []byte("{"), 0o644)
	if _, err := f.Load(); !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), f.Path()) {
		t.Fatalf("corrupt file: %v, want ErrCorruptState naming the file", err)
	}
}

// FuzzParseState: ParseState must never panic, and whatever it accepts
// must survive the publisher's write and a re-read unchanged.
func FuzzParseState(f *testing.F) {
	for _, s := range []string{
		goodState,
		`{"schema":"linkedge.publisher-state/v1","models":{}}`,
		`{"schema":"linkedge.publisher-state/v1"}`,
		`{"schema":"linkedge.publisher-state/v1","models":{"m":{"signed_serial":-1}}}`,
		`{"schema":"linkedge.publisher-state/v1","models":{"m":{"announced":{}}}}`,
		`{}`, `null`, `[]`, ``, `{"models":{"":null}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseState(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("accepted state does not encode: %v", err)
		}
		s2, err := ParseState(out)
		if err != nil {
			t.Fatalf("re-reading an accepted state failed: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("state changed across a write and re-read:\n%+v\n%+v", s, s2)
		}
	})
}
