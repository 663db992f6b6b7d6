package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type sample struct {
	Name  string `yaml:"name"`
	Count int    `yaml:"count"`
}

func TestDecodeYAML(t *testing.T) {
	tests := []struct {
		name, in string
		want     sample
		err      string
	}{
		{"ok", "name: a\ncount: 2\n", sample{"a", 2}, ""},
		{"empty keeps defaults", "", sample{"d", 1}, ""},
		{"unknown key", "nmae: a\n", sample{}, "field nmae not found"},
		{"two documents", "name: a\n---\nname: b\n", sample{}, "more than one YAML document"},
		{"wrong type", "count: many\n", sample{}, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sample{"d", 1}
			err := DecodeYAML([]byte(tt.in), &got)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}
	if err := DecodeYAML([]byte("a: 1\n---\nb: 2"), &map[string]int{}); !errors.Is(err, ErrMultipleDocuments) {
		t.Fatal(err)
	}
}

func FuzzDecodeYAML(f *testing.F) {
	f.Add([]byte("name: a\ncount: 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s sample
		DecodeYAML(data, &s)
	})
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(path, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		path  string
		limit int64
		want  error // nil: the file's bytes
	}{
		{"at the limit", path, 10, nil},
		{"over the limit", path, 9, ErrTooLarge},
		{"missing", filepath.Join(dir, "nope"), 10, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := ReadFile(tc.path, tc.limit)
			if tc.want == nil {
				if err != nil || string(data) != "0123456789" {
					t.Fatalf("ReadFile = %q, %v", data, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("ReadFile error = %v, want %v", err, tc.want)
			}
		})
	}
}
