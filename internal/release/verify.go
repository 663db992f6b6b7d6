package release

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// MaxSize is the largest document [Verifier.Verify] reads, in bytes. A real
// release is well under 2 KiB; the limit bounds the work an attacker with
// broker access can make every truck do.
const MaxSize = 64 << 10

// DefaultMaxSkew is the clock-skew allowance used when Verifier.MaxSkew is
// zero. Truck clocks drift while offline; five minutes absorbs that without
// meaningfully extending a document's life.
const DefaultMaxSkew = 5 * time.Minute

// Verifier checks received release documents. The zero value trusts no key
// and so rejects everything with [ErrUnknownKey]. A Verifier is safe for
// concurrent use as long as Now is and its fields are not changed.
type Verifier struct {
	// Keys are the pinned publisher public keys. Several may be pinned
	// during a key rotation; a document must be signed by one of them.
	Keys []ed25519.PublicKey
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// MaxSkew is how far the truck's clock may be off: a document is
	// accepted from IssuedAt-MaxSkew until ExpiresAt+MaxSkew. Zero means
	// [DefaultMaxSkew]; a negative value means no allowance.
	MaxSkew time.Duration
}

// Verify checks data and returns the release it holds. In order:
//
//  1. size (at most [MaxSize], else [ErrTooLarge]);
//  2. parse and canonicalize ([ErrMalformed]);
//  3. the signature, against a pinned key whose [KeyID] matches key_id
//     ([ErrUnsigned], [ErrUnknownKey], [ErrBadSignature]);
//  4. only then the content: schema, strict decoding into [Release] with
//     unknown (or differently cased) members refused ([ErrMalformed]), and
//     [Release.Validate] ([ErrInvalid]);
//  5. the validity window against the clock ([ErrNotYetValid], [ErrExpired]).
//
// It does not check the serial against history; call [CheckNewer] with the
// last accepted serial for the model.
func (v *Verifier) Verify(data []byte) (*Release, error) {
	r, err := v.verify(data)
	if err != nil {
		return nil, err
	}
	if err := v.checkTime(r); err != nil {
		return nil, err
	}
	return r, nil
}

// VerifyAtRest is [Verify] without the validity window, for a document the
// truck accepted once and kept beside the bundle it installed: the signature
// still proves which bytes the publisher named, and an offline truck must
// keep serving its last verified model after the document has expired.
func (v *Verifier) VerifyAtRest(data []byte) (*Release, error) {
	return v.verify(data)
}

func (v *Verifier) verify(data []byte) (*Release, error) {
	if len(data) > MaxSize {
		return nil, wrap(ErrTooLarge, "%d bytes, limit %d; a release document is normally under 2 KiB, so check what is publishing on the release topic", len(data), MaxSize)
	}
	r, err := decodeSigned[Release](v, data, Schema)
	if err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeSigned checks a signed document of type T: canonical parse, the
// signature against a pinned key, then (the content being the
// publisher's from here on) the schema and a strict decoding, with
// unknown or differently cased members refused. T's content rules are the
// caller's to check.
func decodeSigned[T any](v *Verifier, data []byte, schema string) (*T, error) {
	obj, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	if err := v.checkSignature(obj); err != nil {
		return nil, err
	}
	if s, _ := obj["schema"].(string); s != schema {
		return nil, wrap(ErrInvalid, "schema is %q, this agent understands %q; upgrade the agent (or the publisher) so they agree", truncate(s), schema)
	}
	if err := checkFields(obj, reflect.TypeFor[T](), ""); err != nil {
		return nil, err
	}
	var doc T
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, wrap(ErrMalformed, "does not match schema %s: %v; check that publisher and agent versions agree", schema, err)
	}
	return &doc, nil
}

// checkSignature verifies obj's signature member against the pinned keys.
func (v *Verifier) checkSignature(obj map[string]any) error {
	raw, ok := obj["signature"]
	if !ok || raw == nil {
		return wrap(ErrUnsigned, "no \"signature\" member; trucks accept only documents signed by the publisher, so configure its signing key")
	}
	sig, err := parseSignature(raw)
	if err != nil {
		return err
	}
	if sig.Algorithm != AlgorithmEd25519 {
		return wrap(ErrBadSignature, "algorithm %q is not supported, only %q", truncate(sig.Algorithm), AlgorithmEd25519)
	}
	var keys []ed25519.PublicKey
	pinned := make([]string, 0, len(v.Keys))
	for _, k := range v.Keys {
		if len(k) != ed25519.PublicKeySize {
			continue // a broken pin cannot verify anything
		}
		id := KeyID(k)
		pinned = append(pinned, id)
		if id == sig.KeyID {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		if len(pinned) == 0 {
			return wrap(ErrUnknownKey, "key id %q, and no publisher key is pinned; install the publisher's .pub file on the truck", truncate(sig.KeyID))
		}
		return wrap(ErrUnknownKey, "key id %q, pinned key ids %s; if the publisher key was rotated, pin its new .pub file (`linkedge keys id FILE` prints a file's key id)", truncate(sig.KeyID), strings.Join(pinned, ", "))
	}
	value, err := base64.StdEncoding.Strict().DecodeString(sig.Value)
	// Require the one canonical spelling so the unsigned signature member
	// cannot be varied either (base64 decoders skip newlines, for example).
	if err != nil || len(value) != ed25519.SignatureSize || base64.StdEncoding.EncodeToString(value) != sig.Value {
		return wrap(ErrBadSignature, "value is not %d bytes in padded standard base64", ed25519.SignatureSize)
	}
	msg := signedBytes(obj)
	for _, k := range keys {
		if ed25519.Verify(k, msg, value) {
			return nil
		}
	}
	return wrap(ErrBadSignature, "key id %s: the document was changed after signing, or signed by another key; discard it", sig.KeyID)
}

// parseSignature reads the signature member from the parsed tree. It is
// strict because the member is the one part the signature cannot cover.
func parseSignature(raw any) (*Signature, error) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, wrap(ErrMalformed, "signature is %s, want an object with key_id, algorithm and value", kindOf(raw))
	}
	var sig Signature
	fields := map[string]*string{"key_id": &sig.KeyID, "algorithm": &sig.Algorithm, "value": &sig.Value}
	for k, v := range m {
		dst, ok := fields[k]
		if !ok {
			return nil, wrap(ErrMalformed, "signature has unknown member %q; want only key_id, algorithm and value", truncate(k))
		}
		s, ok := v.(string)
		if !ok {
			return nil, wrap(ErrMalformed, "signature.%s is %s, want a string", k, kindOf(v))
		}
		*dst = s
	}
	for k, dst := range fields {
		if *dst == "" {
			return nil, wrap(ErrMalformed, "signature.%s is missing or empty", k)
		}
	}
	return &sig, nil
}

// checkFields refuses object members that have no exactly matching JSON
// field in t. encoding/json matches names case-insensitively, so without
// this {"Model": ...} would be read as "model" by this agent but not by a
// stricter one: two readers must never disagree on a signed document.
func checkFields(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok || t == reflect.TypeFor[time.Time]() {
			return nil // a type mismatch is the strict decoder's to report
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys) // report the same member every time
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				where := "at top level"
				if path != "" {
					where = "in " + path
				}
				return wrap(ErrMalformed, "unknown field %q %s (names are case-sensitive); it is signed, so this agent refuses rather than ignore it: upgrade the agent, or stop the publisher from sending it", truncate(k), where)
			}
			if err := checkFields(obj[k], ft, joinPath(path, k)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		arr, _ := v.([]any)
		for i, e := range arr {
			if err := checkFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonFields maps each JSON member name of struct t to its Go type,
// flattening embedded structs the way encoding/json does for our types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			for k, ft := range jsonFields(f.Type) {
				out[k] = ft
			}
		case !f.IsExported():
		case name == "":
			out[f.Name] = f.Type
		default:
			out[name] = f.Type
		}
	}
	return out
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// checkWindow applies a validity window with the skew allowance to the
// document named what.
func (v *Verifier) checkWindow(what string, issued, expires time.Time) error {
	now, skew := v.clock()
	if now.Add(skew).Before(issued) {
		return wrap(ErrNotYetValid, "%s issued at %s but the truck clock says %s (allowance %s); check the truck's clock (NTP)",
			what, issued.Format(timeFormat), now.Format(timeFormat), skew)
	}
	if !now.Add(-skew).Before(expires) {
		return wrap(ErrExpired, "%s expired at %s, truck clock says %s (allowance %s); ask for a new one, and check the truck's clock",
			what, expires.Format(timeFormat), now.Format(timeFormat), skew)
	}
	return nil
}

// clock is the verifier's time and skew allowance.
func (v *Verifier) clock() (time.Time, time.Duration) {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	skew := v.MaxSkew
	switch {
	case skew == 0:
		skew = DefaultMaxSkew
	case skew < 0:
		skew = 0
	}
	return now, skew
}

// checkTime applies the validity window with the skew allowance.
func (v *Verifier) checkTime(r *Release) error {
	now, skew := v.clock()
	if now.Add(skew).Before(r.IssuedAt) {
		return wrap(ErrNotYetValid, "model %s serial %d issued at %s but the truck clock says %s (allowance %s); check the truck's clock (NTP)",
			r.Model, r.Serial, r.IssuedAt.Format(timeFormat), now.Format(timeFormat), skew)
	}
	if !now.Add(-skew).Before(r.ExpiresAt) {
		return wrap(ErrExpired, "model %s serial %d expired at %s, truck clock says %s (allowance %s); the publisher re-signs before expiry, so check that it is running and reaching the broker, and that the truck's clock is right",
			r.Model, r.Serial, r.ExpiresAt.Format(timeFormat), now.Format(timeFormat), skew)
	}
	return nil
}
