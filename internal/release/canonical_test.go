package release

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestCanonicalGolden(t *testing.T) {
	in := `{
		"b": [1, -2, {"z": null, "a": true}, [], {}],
		"a": "x\u0041\/<>&\u2028\u0001\n\b\f\t\r\u001F\"\\\u00e9\u007f",
		"signature": {"value": "ignored"},
		"": 0,
		"é": 9223372036854775807,
		"Z": -9223372036854775808
	}`
	want := `{"":0,"Z":-9223372036854775808,"a":"xA/<>&\u2028\u0001\n\b\f\t\r\u001f\"\\é` + "\x7f" + `","b":[1,-2,{"a":true,"z":null},[],{}],"é":9223372036854775807}`
	got, err := Canonical([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("Canonical =\n%s\nwant\n%s", got, want)
	}
}

func TestCanonicalRejects(t *testing.T) {
	tests := []struct{ name, in, wantMsg string }{
		{"float", `{"a":1.5}`, "1.5"},
		{"float zero fraction", `{"a":1.0}`, "1.0"},
		{"exponent", `{"a":1e2}`, "1e2"},
		{"negative zero", `{"a":-0}`, "-0"},
		{"overflow", `{"a":9223372036854775808}`, "int64"},
		{"duplicate", `{"a":1,"a":1}`, "duplicate"},
		{"duplicate after unescaping", `{"a":1,"\u0061":2}`, "duplicate"},
		{"nested duplicate", `{"x":[{"k":1,"k":2}]}`, "duplicate"},
		{"lone surrogate", `{"a":"\ud800"}`, "U+FFFD"},
		{"replacement char", `{"a":"` + "\uFFFD" + `"}`, "U+FFFD"},
		{"replacement char in key", `{"\ufffd":1}`, "U+FFFD"},
		{"invalid UTF-8", "{\"a\":\"\xc3\x28\"}", "UTF-8"},
		{"not an object", `"x"`, "a string"},
		{"null", `null`, "null"},
		{"trailing", `{} x`, "after the top-level value"},
		{"two objects", `{}{}`, "after the top-level value"},
		{"missing colon", `{"a" 1}`, ""},
		{"trailing comma", `{"a":1,}`, ""},
		{"leading comma", `{,"a":1}`, ""},
		{"unterminated", `{"a":[1,2`, ""},
		{"single quotes", `{'a':1}`, ""},
		{"deep", strings.Repeat(`{"a":`, 20) + "1" + strings.Repeat("}", 20), "nested"},
		{"empty", ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Canonical([]byte(tt.in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Canonical(%q) error = %v, want ErrMalformed", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

// The signature must survive any re-encoding that keeps the content: key
// order, whitespace, and equivalent string escapes.
func TestCanonicalIndependentOfEncoding(t *testing.T) {
	pub, priv := testKey("publisher")
	signed := mustSign(t, priv, nil)
	want, err := Canonical(signed)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := parseJSON(signed)
	if err != nil {
		t.Fatal(err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, signed, "", "\t"); err != nil {
		t.Fatal(err)
	}
	variants := map[string][]byte{
		"reverse key order with spaces": appendReversed(nil, tree),
		"indented":                      indented.Bytes(),
		"escaped characters":            bytes.Replace(signed, []byte(`"aps-failure"`), []byte(`"\u0061ps\u002dfailure"`), 1),
		"escaped slashes":               bytes.ReplaceAll(signed, []byte(`/`), []byte(`\/`)),
		"html-escaped (Go default)":     bytes.Replace(signed, []byte(`<y>`), []byte(`\u003cy\u003e`), 1),
		"CRLF whitespace":               bytes.ReplaceAll(indented.Bytes(), []byte("\n"), []byte("\r\n")),
	}
	for name, data := range variants {
		t.Run(name, func(t *testing.T) {
			if bytes.Equal(data, signed) {
				t.Fatal("variant is identical to the original; the test is broken")
			}
			got, err := Canonical(data)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Canonical differs:\n%s\n%s", got, want)
			}
			if _, err := testVerifier(pub).Verify(data); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// appendReversed encodes a parsed tree with keys in reverse order and extra
// whitespace: valid JSON with the same content as the canonical form.
func appendReversed(b []byte, v any) []byte {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		slices.Reverse(keys)
		b = append(b, "{ "...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, " ,\n "...)
			}
			b = appendString(b, k)
			b = append(b, " : "...)
			b = appendReversed(b, t[k])
		}
		return append(b, " }"...)
	case []any:
		b = append(b, "[ "...)
		for i, e := range t {
			if i > 0 {
				b = append(b, " , "...)
			}
			b = appendReversed(b, e)
		}
		return append(b, " ]"...)
	}
	return appendCanonical(b, v)
}

// appendString is a hand-written copy of encoding/json's escaping so that a
// Go upgrade cannot silently change the signed form. Hold it to the
// original for arbitrary strings.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	check := func(t tb, s string) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(buf.String(), "\n")
		if got := string(appendString(nil, s)); got != want {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
		var back string
		if err := json.Unmarshal([]byte(want), &back); err != nil || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, err)
		}
	}
	for r := rune(0); r < 0x3000; r++ { // every ASCII and control character, and U+2028/9
		check(t, "a"+string(r)+"b")
	}
	rapid.Check(t, func(t *rapid.T) {
		check(t, rapid.String().Draw(t, "s"))
	})
}
