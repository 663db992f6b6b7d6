package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testMeta() *Metadata {
	nan := float32(math.NaN())
	return &Metadata{
		Schema: Schema, Name: "aps-failure", Version: 3, Input: "features", Output: "probability",
		Features: []string{"aa_000", "ab_000"}, Labels: [2]string{"neg", "pos"}, Threshold: 0.1,
		Golden: []Golden{{ID: "g1", Features: Row{1, nan}, Score: 0.25, Label: "pos"}},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	var a, b bytes.Buffer
	if err := Write(&a, testMeta(), []byte("onnx-bytes")); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, testMeta(), []byte("onnx-bytes")); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("same inputs gave different bundle bytes; bundles must be reproducible")
	}
	got, err := Read(bytes.NewReader(a.Bytes()), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if string(got.ONNX) != "onnx-bytes" || got.Meta.Name != "aps-failure" || got.Meta.Version != 3 {
		t.Fatalf("round trip changed the bundle: %+v", got.Meta)
	}
	if !math.IsNaN(float64(got.Meta.Golden[0].Features[1])) {
		t.Fatal("a missing golden feature must come back as NaN")
	}
}

func TestOpenForms(t *testing.T) {
	dir := t.TempDir()
	tgz := filepath.Join(dir, "model.tar.gz")
	if _, _, err := WriteFile(tgz, testMeta(), []byte("m")); err != nil {
		t.Fatal(err)
	}
	b, err := Open(tgz)
	if err != nil {
		t.Fatal(err)
	}
	unpacked := filepath.Join(dir, "unpacked")
	if err := b.Unpack(unpacked); err != nil {
		t.Fatal(err)
	}
	if fromDir, err := Open(unpacked); err != nil || fromDir.Meta.Name != "aps-failure" {
		t.Fatalf("open folder: %v", err)
	}
	onnxOnly := filepath.Join(t.TempDir(), "bare.onnx")
	os.WriteFile(onnxOnly, []byte("m"), 0o644)
	bare, err := Open(onnxOnly)
	if err != nil || bare.Meta != nil {
		t.Fatalf("bare onnx: meta=%v err=%v", bare, err)
	}
	besides, err := Open(filepath.Join(unpacked, ModelFile))
	if err != nil || besides.Meta == nil {
		t.Fatalf("onnx with metadata beside it: %v", err)
	}
}

func tarGz(t *testing.T, files map[string]string, typ byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: typ})
		tw.Write([]byte(data))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestReadRejects(t *testing.T) {
	meta, _ := EncodeMetadata(testMeta())
	var good bytes.Buffer
	Write(&good, testMeta(), []byte("m"))
	tests := []struct {
		name string
		data []byte
		lim  Limits
		want error
		msg  string
	}{
		{"not gzip", []byte("hello"), Limits{}, ErrInvalid, "not a gzip"},
		{"truncated", good.Bytes()[:good.Len()/2], Limits{}, ErrInvalid, ""},
		{"no model", tarGz(t, map[string]string{MetadataFile: string(meta)}, tar.TypeReg), Limits{}, ErrInvalid, "no model.onnx"},
		{"no metadata", tarGz(t, map[string]string{ModelFile: "m"}, tar.TypeReg), Limits{}, ErrInvalid, "no metadata.json"},
		{"bad metadata", tarGz(t, map[string]string{ModelFile: "m", MetadataFile: "{}"}, tar.TypeReg), Limits{}, ErrInvalid, "schema"},
		{"unknown field", tarGz(t, map[string]string{ModelFile: "m", MetadataFile: `{"schema":"linkedge.bundle/v1","nmae":"x"}`}, tar.TypeReg), Limits{}, ErrInvalid, "unknown field"},
		{"model too big", good.Bytes(), Limits{MaxModelBytes: 0, MaxMetadataBytes: 10}, ErrTooLarge, "metadata.json"},
		{"symlink", tarGz(t, map[string]string{ModelFile: ""}, tar.TypeSymlink), Limits{}, ErrInvalid, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tt.data), tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.msg)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *Metadata)
		msg    string
	}{
		{"ok", func(m *Metadata) {}, ""},
		{"schema", func(m *Metadata) { m.Schema = "x" }, "schema"},
		{"name", func(m *Metadata) { m.Name = "Bad/Name" }, "name"},
		{"version", func(m *Metadata) { m.Version = 0 }, "version"},
		{"dup feature", func(m *Metadata) { m.Features[1] = "aa_000" }, "twice"},
		{"labels", func(m *Metadata) { m.Labels[1] = "neg" }, "labels"},
		{"threshold", func(m *Metadata) { m.Threshold = 2 }, "threshold"},
		{"golden width", func(m *Metadata) { m.Golden[0].Features = Row{1} }, "golden sample 0"},
		{"golden label", func(m *Metadata) { m.Golden[0].Label = "maybe" }, "label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMeta()
			tt.change(m)
			err := m.Validate()
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.msg)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	var good bytes.Buffer
	Write(&good, testMeta(), []byte("m"))
	f.Add(good.Bytes())
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Read(bytes.NewReader(data), Limits{MaxModelBytes: 1 << 16, MaxMetadataBytes: 1 << 16})
		if err == nil && (b.Meta == nil || b.Meta.Validate() != nil) {
			t.Fatal("Read accepted a bundle with invalid metadata")
		}
	})
}

func FuzzDecodeMetadata(f *testing.F) {
	good, _ := EncodeMetadata(testMeta())
	f.Add(good)
	f.Add([]byte(`{"schema":"linkedge.bundle/v1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMetadata(data)
		if err != nil {
			return
		}
		if _, err := EncodeMetadata(m); err != nil {
			t.Fatalf("decoded metadata does not encode again: %v", err)
		}
	})
}
