package localreg

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzParseRecord: ParseRecord must never panic, and whatever it accepts
// must survive a write and a re-read unchanged (what Approve and Reject do).
func FuzzParseRecord(f *testing.F) {
	good := `{"schema":"linkedge.localreg.version/v1","status":"approved","created_at":"2025-01-02T03:04:05Z",` +
		`"approved_at":"2025-01-02T04:00:00.123Z","approved_by":"alice","sha256":"` +
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `","size":42,"description":"v1"}`
	for _, s := range []string{
		good,
		`{"schema":"linkedge.localreg.version/v1","status":"pending","created_at":"2025-01-02T03:04:05Z","sha256":"` +
			"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `","size":1}`,
		good + "x",
		`{"schema":"linkedge.localreg.version/v1","status":"rejected"}`,
		`{"status":"approved","extra":1}`,
		`{}`, `null`, `[]`, ``, `{"size":1e400}`, "{\"approved_by\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRecord(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("accepted record does not encode: %v", err)
		}
		r2, err := ParseRecord(out)
		if err != nil {
			t.Fatalf("re-reading an accepted record failed: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("record changed across a write and re-read:\n%+v\n%+v", r, r2)
		}
	})
}
