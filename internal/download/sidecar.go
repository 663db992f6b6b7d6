package download

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/linkedge/linkedge/internal/atomicfile"
)

// sidecar is dst+".partial.json": what the bytes in dst+".partial" are a
// prefix of. It is written (atomically) before the first byte of a new
// entity is, so a partial file never holds bytes of an entity its sidecar
// does not describe.
type sidecar struct {
	Version int `json:"version"`
	// URL without query string: a presigned URL's signature is a credential
	// and expires anyway. Informational, and used to decide whether the
	// stored validators apply to the URL of this call.
	URL    string `json:"url"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// ETag and LastModified as the server sent them with the first
	// response; one of them goes into If-Range when resuming.
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

const (
	sidecarVersion = 1
	// maxSidecar bounds what is read from disk; a real sidecar is ~300 bytes.
	maxSidecar = 16 << 10
	// maxValidator bounds a stored ETag or Last-Modified.
	maxValidator = 1024
)

// parseSidecar decodes and validates a sidecar. Anything unexpected is an
// error; the caller then treats the partial file as foreign and starts over,
// which costs bandwidth but can never produce a wrong file.
func parseSidecar(data []byte) (sidecar, error) {
	var s sidecar
	if len(data) > maxSidecar {
		return s, fmt.Errorf("sidecar is %d bytes, more than %d", len(data), maxSidecar)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return sidecar{}, fmt.Errorf("decode sidecar: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return sidecar{}, errors.New("decode sidecar: trailing data after the object")
	}
	if err := s.validate(); err != nil {
		return sidecar{}, err
	}
	return s, nil
}

func (s sidecar) validate() error {
	switch {
	case s.Version != sidecarVersion:
		return fmt.Errorf("sidecar version %d, want %d", s.Version, sidecarVersion)
	case s.Size < 0:
		return fmt.Errorf("sidecar size %d is negative", s.Size)
	case !validSHA256(s.SHA256):
		return errors.New("sidecar sha256 is not 64 lowercase hex digits")
	case len(s.URL) > 8<<10:
		return errors.New("sidecar url is too long")
	case s.ETag != "" && !validHeaderValue(s.ETag):
		return errors.New("sidecar etag is not a valid header value")
	case s.LastModified != "" && !validHeaderValue(s.LastModified):
		return errors.New("sidecar last_modified is not a valid header value")
	}
	return nil
}

// ifRange returns the validator to send in If-Range, or "" if there is
// none usable. RFC 9110 forbids weak entity tags there, so a weak ETag falls
// back to Last-Modified.
func (s sidecar) ifRange() string {
	if s.ETag != "" && !strings.HasPrefix(s.ETag, "W/") {
		return s.ETag
	}
	if s.LastModified != "" {
		if _, err := http.ParseTime(s.LastModified); err == nil {
			return s.LastModified
		}
	}
	return ""
}

// readSidecar reads and validates path.
func readSidecar(path string) (sidecar, error) {
	f, err := os.Open(path)
	if err != nil {
		return sidecar{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSidecar+1))
	if err != nil {
		return sidecar{}, fmt.Errorf("read %s: %w", path, err)
	}
	return parseSidecar(data)
}

func writeSidecar(path string, s sidecar) error {
	if err := atomicfile.WriteJSON(path, s, 0o644); err != nil {
		return fmt.Errorf("write resume state: %w", err)
	}
	return nil
}

// validatorFrom returns v if it can be stored and sent back in a header.
func validatorFrom(v string) string {
	if validHeaderValue(v) {
		return v
	}
	return ""
}

// validHeaderValue rejects what net/http would refuse to send (control
// characters) and absurd lengths: a stored value that the client refuses
// would fail every future attempt.
func validHeaderValue(v string) bool {
	if v == "" || len(v) > maxValidator {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func validSHA256(s string) bool {
	if len(s) != 64 || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
