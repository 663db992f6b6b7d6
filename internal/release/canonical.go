package release

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The canonical form is what the signature covers. It must be computable
// from the received bytes alone, identically by every implementation, so its
// rules are few and exact (docs/release-format.md repeats them for
// implementers in other languages):
//
//   - The input is UTF-8 JSON (RFC 8259) whose top-level value is an object.
//     Invalid UTF-8, duplicate object keys (compared after unescaping),
//     nesting deeper than [maxDepth], data after the top-level value, and any
//     string containing U+FFFD are refused. (U+FFFD is what decoders
//     substitute for invalid input, so refusing it removes every way for two
//     different strings to decode alike.)
//   - Every number must be an integer in the int64 range written without
//     fraction, exponent, leading zeros or "-0": the document has no
//     non-integer fields, so "1.0" or "1e3" can only be a mistake or a trick.
//   - Output: no whitespace outside strings; object members sorted by key,
//     comparing the unescaped keys' UTF-8 bytes; array order kept; numbers as
//     received; true, false, null as themselves; strings escaped as below.
//   - String escaping (Go's encoding/json with HTML escaping off): `"` and
//     `\` are escaped with a backslash; U+0008, U+000C, U+000A, U+000D, U+0009
//     become \b \f \n \r \t; the other code points below U+0020 become \u00XX
//     with lowercase hex; U+2028 and U+2029 become \u2028 and \u2029;
//     everything else, including "/", "<", ">", "&" and U+007F, is written as
//     raw UTF-8.
//   - The signed bytes are that form of the top-level object with its
//     "signature" member left out.

// maxDepth bounds object and array nesting. A release document is four
// levels deep; the bound keeps hostile input from recursing far.
const maxDepth = 16

// Canonical returns the bytes a release signature covers: the canonical form
// of data's top-level object without its "signature" member. It does not
// check the signature, the schema or any field; see [Verifier.Verify].
func Canonical(data []byte) ([]byte, error) {
	obj, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	return signedBytes(obj), nil
}

// parseDocument parses data as a JSON object for canonicalization.
// Errors wrap ErrMalformed.
func parseDocument(data []byte) (map[string]any, error) {
	v, err := parseJSON(data)
	if err != nil {
		return nil, wrap(ErrMalformed, "%v; the payload is not a well-formed release document (truncated, or not from a compatible LinkEdge publisher)", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, wrap(ErrMalformed, "top-level value is %s, want a JSON object", kindOf(v))
	}
	return obj, nil
}

// signedBytes is the canonical form of obj without "signature".
func signedBytes(obj map[string]any) []byte {
	return appendObject(nil, obj, "signature")
}

// parseJSON parses data into a tree of map[string]any, []any, json.Number
// (integers only), string, bool and nil, applying the input rules above.
func parseJSON(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec, 0)
	if err != nil {
		return nil, err
	}
	switch tok, err := dec.Token(); {
	case err == io.EOF:
		return v, nil
	case err != nil:
		return nil, fmt.Errorf("after the top-level value: %w", err)
	default:
		return nil, fmt.Errorf("unexpected %v after the top-level value", tok)
	}
}

func parseValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= maxDepth {
			return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
		}
		switch t {
		case '{':
			return parseObject(dec, depth)
		case '[':
			return parseArray(dec, depth)
		}
		return nil, fmt.Errorf("unexpected %q", t) // the decoder reports these itself
	case json.Number:
		if err := checkInteger(t); err != nil {
			return nil, err
		}
		return t, nil
	case string:
		if strings.ContainsRune(t, utf8.RuneError) {
			return nil, fmt.Errorf("string %q contains U+FFFD (the replacement character, which is also what invalid UTF-8 turns into); it is not allowed", truncate(t))
		}
		return t, nil
	case bool, nil:
		return t, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

func parseObject(dec *json.Decoder, depth int) (map[string]any, error) {
	obj := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok { // unreachable: the decoder enforces string keys
			return nil, fmt.Errorf("object key is %v, want a string", tok)
		}
		if strings.ContainsRune(key, utf8.RuneError) {
			return nil, fmt.Errorf("object key %q contains U+FFFD (the replacement character, which is also what invalid UTF-8 turns into); it is not allowed", truncate(key))
		}
		if _, dup := obj[key]; dup {
			return nil, fmt.Errorf("duplicate object key %q", truncate(key))
		}
		v, err := parseValue(dec, depth+1)
		if err != nil {
			return nil, err
		}
		obj[key] = v
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	return obj, nil
}

func parseArray(dec *json.Decoder, depth int) ([]any, error) {
	arr := []any{}
	for dec.More() {
		v, err := parseValue(dec, depth+1)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return nil, err
	}
	return arr, nil
}

// checkInteger accepts exactly the decimal integers that strconv.FormatInt
// produces, which rules out fractions, exponents, "-0" and out-of-range
// values.
func checkInteger(n json.Number) error {
	s := string(n)
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil || strconv.FormatInt(i, 10) != s {
		return fmt.Errorf("number %s is not an integer in the int64 range written plainly (no fraction, exponent or -0)", truncate(s))
	}
	return nil
}

// appendCanonical appends the canonical form of a parseJSON tree.
func appendCanonical(b []byte, v any) []byte {
	switch t := v.(type) {
	case map[string]any:
		return appendObject(b, t, "")
	case []any:
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonical(b, e)
		}
		return append(b, ']')
	case string:
		return appendString(b, t)
	case json.Number:
		return append(b, t...)
	case bool:
		return strconv.AppendBool(b, t)
	case nil:
		return append(b, "null"...)
	}
	panic(fmt.Sprintf("release: appendCanonical: unexpected %T", v)) // parseJSON produces no other type
}

// appendObject appends obj with sorted keys, leaving out the member named
// skip (none if skip is "", which is never a key we need to skip).
func appendObject(b []byte, obj map[string]any, skip string) []byte {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		if skip == "" || k != skip {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys) // Go compares strings bytewise, i.e. by UTF-8 bytes
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendCanonical(b, obj[k])
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString escapes s as encoding/json does with HTML escaping off. It is
// written out here rather than delegated so that the signed form cannot
// change under us with a Go release; a test holds it equal to
// encoding/json.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s { // s is valid UTF-8 (checked by parseJSON or produced by Go)
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\b':
			b = append(b, '\\', 'b')
		case r == '\f':
			b = append(b, '\\', 'f')
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

func kindOf(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

// truncate shortens s for error messages so hostile input stays out of logs.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
