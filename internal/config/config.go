// Package config holds what every component's configuration loading shares:
// strict YAML decoding, so that a misspelt key is an error instead of a
// setting silently left at its default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"

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
