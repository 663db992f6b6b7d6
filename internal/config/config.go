// Package config holds what every component's configuration loading shares:
// strict YAML decoding, so that a misspelt key is an error instead of a
// setting silently left at its default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// ErrMultipleDocuments means a config file holds more than one YAML document.
var ErrMultipleDocuments = errors.New("more than one YAML document")

// DecodeYAML decodes one YAML document into v, refusing unknown keys. An
// empty document leaves v as it is (its defaults).
func DecodeYAML(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: keep one configuration per file", ErrMultipleDocuments)
	}
	return nil
}

// ErrTooLarge means a file is larger than its reader allows.
var ErrTooLarge = errors.New("file too large")

// ReadFile reads the file at path, refusing one larger than limit bytes
// without reading more than limit+1 of it: files named in a configuration
// (a users file, a policy) are read whole and must not exhaust memory.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, path, limit)
	}
	return data, nil
}
