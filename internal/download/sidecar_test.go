package download

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestParseSidecar(t *testing.T) {
	good := `{"version":1,"url":"https://h/m","size":10,"sha256":"` + validSHA + `","etag":"\"x\"","last_modified":"Mon, 02 Jan 2006 15:04:05 GMT"}`
	cases := []struct {
		name, in string
		ok       bool
	}{
		{"valid", good, true},
		{"valid with trailing newline", good + "\n", true},
		{"no validators", `{"version":1,"url":"","size":0,"sha256":"` + validSHA + `"}`, true},
		{"empty", ``, false},
		{"null", `null`, false},
		{"array", `[]`, false},
		{"truncated", good[:len(good)-5], false},
		{"two objects", good + good, false},
		{"unknown field", strings.Replace(good, `"version"`, `"extra":1,"version"`, 1), false},
		{"version 2", strings.Replace(good, `"version":1`, `"version":2`, 1), false},
		{"negative size", strings.Replace(good, `"size":10`, `"size":-1`, 1), false},
		{"huge size", strings.Replace(good, `"size":10`, `"size":1e400`, 1), false},
		{"upper-case sha", strings.Replace(good, validSHA, strings.ToUpper(validSHA), 1), false},
		{"short sha", strings.Replace(good, validSHA, validSHA[:10], 1), false},
		{"control char in etag", strings.Replace(good, `"\"x\""`, `"a\nb"`, 1), false},
		{"too long", `{"version":1,"url":"` + strings.Repeat("a", maxSidecar) + `"}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSidecar([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestSidecarRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.partial.json")
	want := sidecar{Version: 1, URL: "https://h/m", Size: 42, SHA256: validSHA, ETag: `"e"`, LastModified: "Mon, 02 Jan 2006 15:04:05 GMT"}
	if err := writeSidecar(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readSidecar(path)
	if err != nil || got != want {
		t.Fatalf("read back %+v, %v; want %+v", got, err, want)
	}
	if err := os.WriteFile(path, []byte(strings.Repeat(" ", maxSidecar+10)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSidecar(path); err == nil {
		t.Fatal("oversized sidecar accepted")
	}
}

func TestIfRange(t *testing.T) {
	date := "Mon, 02 Jan 2006 15:04:05 GMT"
	cases := []struct {
		etag, mod, want string
	}{
		{`"a"`, date, `"a"`},
		{`W/"a"`, date, date},
		{`W/"a"`, "", ""},
		{"", date, date},
		{"", "yesterday", ""},
		{"", "", ""},
	}
	for _, tc := range cases {
		if got := (sidecar{ETag: tc.etag, LastModified: tc.mod}).ifRange(); got != tc.want {
			t.Errorf("ifRange(etag %q, mod %q) = %q, want %q", tc.etag, tc.mod, got, tc.want)
		}
	}
}

// FuzzParseSidecar: whatever is on disk, parsing never panics, and what it
// accepts is safe to act on (sent back in headers, compared with the
// expected artifact) and survives a write/read round trip.
func FuzzParseSidecar(f *testing.F) {
	f.Add([]byte(`{"version":1,"url":"https://h/m","size":10,"sha256":"` + validSHA + `","etag":"\"x\""}`))
	f.Add([]byte(`{"version":1,"url":"","size":0,"sha256":"` + validSHA + `","last_modified":"Mon, 02 Jan 2006 15:04:05 GMT"}`))
	f.Add([]byte(`{"version":1`))
	f.Add([]byte(`{"size":-9223372036854775808}`))
	f.Add([]byte("\x00\xff"))
	f.Add([]byte(`{"version":1,"etag":"\u0000"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseSidecar(data)
		if err != nil {
			if s != (sidecar{}) {
				t.Fatalf("error %v with non-zero sidecar %+v", err, s)
			}
			return
		}
		if s.Version != sidecarVersion || s.Size < 0 || !validSHA256(s.SHA256) {
			t.Fatalf("accepted invalid sidecar %+v", s)
		}
		if v := s.ifRange(); v != "" && !validHeaderValue(v) {
			t.Fatalf("If-Range value %q is not a valid header value", v)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseSidecar(b)
		if err != nil || again != s {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, s)
		}
	})
}
