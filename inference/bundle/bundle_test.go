package bundle

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"io"
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
		{"trailer cut", good.Bytes()[:good.Len()-1], Limits{}, ErrInvalid, "download it again"},
		{"no trailer", good.Bytes()[:good.Len()-8], Limits{}, ErrInvalid, "download it again"},
		{"reserved flag", flipBit(good.Bytes(), 3*8+5), Limits{}, ErrInvalid, "reserved"},
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
		{"no version", func(m *Metadata) { m.Version = 0 }, ""},
		{"negative version", func(m *Metadata) { m.Version = -1 }, "leave it out"},
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
	f.Add(flipBit(good.Bytes(), good.Len()*8-1))      // in the trailer's ISIZE
	f.Add(flipBit(good.Bytes(), (good.Len()-8)*8))    // in the trailer's CRC-32
	f.Add(append(bytes.Clone(good.Bytes()), 0x1f, 0)) // trailing garbage
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Read(bytes.NewReader(data), Limits{MaxModelBytes: 1 << 16, MaxMetadataBytes: 1 << 16})
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Read error %v is neither ErrInvalid nor ErrTooLarge", err)
			}
			return
		}
		if b.Meta == nil || b.Meta.Validate() != nil {
			t.Fatal("Read accepted a bundle with invalid metadata")
		}
		// Whatever Read accepts starts with an intact gzip member: its
		// CRC-32 and length checked (bytes after the members are ignored,
		// as gzip(1) does).
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err == nil {
			zr.Multistream(false)
			_, err = io.Copy(io.Discard, zr)
		}
		if err != nil {
			t.Fatalf("Read accepted a stream that gzip refuses: %v", err)
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

// flipBit returns a copy of data with bit i (counted from the first byte's
// least significant bit) inverted.
func flipBit(data []byte, i int) []byte {
	out := bytes.Clone(data)
	out[i/8] ^= 1 << (i % 8)
	return out
}

// gzipInformational reports whether bit i lies in a gzip header field that
// no checksum covers and that changes nothing Read returns: FTEXT (bit 0 of
// FLG), MTIME, XFL and OS (bytes 4 to 9). Bundles from Write set no FHCRC.
func gzipInformational(i int) bool {
	return i == 3*8 || (i >= 4*8 && i < 10*8)
}

// inflate returns the decompressed content of a gzip stream, ignoring its
// trailer: what a reader that never checks the trailer would see.
func inflate(data []byte) []byte {
	out, _ := io.ReadAll(flate.NewReader(bytes.NewReader(data[10:])))
	return out
}

// TestReadRefusesBitFlips flips single bits of the real APS bundle: every
// bit of the gzip header and of the trailer (CRC-32 and ISIZE), and a
// sample spread over the compressed data. Each flip must be refused unless
// it changes no byte of the content: a bit in the header's informational
// fields, or one of the padding bits that align a stored deflate block to a
// byte, which the format ignores. Before Read drained the stream, flips
// after the last byte the tar needed and in the trailer were accepted.
func TestReadRefusesBitFlips(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "apsmodels", "aps-failure-v1.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader(data), Limits{}); err != nil {
		t.Fatalf("the stored bundle does not read: %v", err)
	}
	content := inflate(data)
	bits := len(data) * 8
	// A stride coprime with 8 visits every bit position within a byte.
	stride := 17
	if testing.Short() {
		stride = 61
	}
	var sample []int
	for i := range 10 * 8 {
		sample = append(sample, i)
	}
	for i := 10 * 8; i < bits-8*8; i += stride {
		sample = append(sample, i)
	}
	for i := bits - 8*8; i < bits; i++ {
		sample = append(sample, i)
	}
	dir := t.TempDir()
	var harmless []int
	informational := 0
	for n, i := range sample {
		flipped := flipBit(data, i)
		if n%64 == 0 {
			// Open takes the same path as Read, through a file.
			p := filepath.Join(dir, "model.tar.gz")
			if err := os.WriteFile(p, flipped, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = Open(p)
		} else {
			_, err = Read(bytes.NewReader(flipped), Limits{})
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Errorf("bit %d (byte %d): error %v is neither ErrInvalid nor ErrTooLarge", i, i/8, err)
			}
			continue
		}
		inTrailer := i >= bits-8*8
		switch {
		case inTrailer:
			t.Errorf("bit %d of the gzip trailer flipped, and the bundle was accepted", i-(bits-8*8))
		case gzipInformational(i):
			informational++
		case i >= 10*8 && bytes.Equal(inflate(flipped), content):
			harmless = append(harmless, i)
		default:
			t.Errorf("bit %d (byte %d of %d) flipped, and the bundle was accepted", i, i/8, len(data))
		}
	}
	// Alignment padding is a few bits per stored block; many more accepted
	// flips would mean the check is not doing its work.
	if len(harmless) > len(sample)/100 {
		t.Errorf("%d accepted flips in the compressed data (bits %v)", len(harmless), harmless)
	}
	t.Logf("%d bits flipped; accepted %d in the header's informational fields and %d deflate padding bits %v", len(sample), informational, len(harmless), harmless)
}

// TestReadTrailerMessage: a bad CRC-32 or ISIZE, on the real bundle, is
// refused as a corrupt bundle to download again.
func TestReadTrailerMessage(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "apsmodels", "aps-failure-v1.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{len(data)*8 - 64, len(data)*8 - 33, len(data)*8 - 32, len(data)*8 - 1} {
		_, err := Read(bytes.NewReader(flipBit(data, i)), Limits{})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "download it again") {
			t.Errorf("trailer bit %d: err = %v, want ErrInvalid saying the bundle is corrupt and to download it again", i, err)
		}
	}
}

// TestReadMultipleMembers: a gzip file may hold several members (as from
// concatenated gzip outputs); their content is one stream, and each
// member's trailer is checked.
func TestReadMultipleMembers(t *testing.T) {
	var tarball bytes.Buffer
	zw := gzip.NewWriter(&tarball)
	if err := Write(zw, testMeta(), []byte("onnx")); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	// Write's own output, decompressed, is the tar; compress it again in
	// two members split mid-file.
	zr, _ := gzip.NewReader(bytes.NewReader(tarball.Bytes()))
	inner, _ := io.ReadAll(zr)
	zr2, _ := gzip.NewReader(bytes.NewReader(inner))
	raw, err := io.ReadAll(zr2)
	if err != nil {
		t.Fatal(err)
	}
	var two bytes.Buffer
	for _, part := range [][]byte{raw[:700], raw[700:]} {
		w := gzip.NewWriter(&two)
		w.Write(part)
		w.Close()
	}
	b, err := Read(bytes.NewReader(two.Bytes()), Limits{})
	if err != nil || string(b.ONNX) != "onnx" {
		t.Fatalf("two members: %v", err)
	}
	firstEnd := bytes.Index(two.Bytes()[10:], []byte{0x1f, 0x8b, 8}) + 10
	if _, err := Read(bytes.NewReader(flipBit(two.Bytes(), (firstEnd-1)*8)), Limits{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a flip in the first member's trailer: err = %v, want ErrInvalid", err)
	}
}

// A pipeline builds the bundle before the registry gives it a version, so
// metadata.json may leave the version out; it stays out when written
// again, and a bundle that has one keeps it.
func TestMetadataWithoutVersion(t *testing.T) {
	m := testMeta()
	m.Version = 0
	data, err := EncodeMetadata(m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"version"`)) {
		t.Fatalf("a bundle without a version was written with one:\n%s", data)
	}
	got, err := DecodeMetadata(data)
	if err != nil {
		t.Fatalf("metadata.json without a version refused: %v", err)
	}
	if got.Version != 0 {
		t.Fatalf("version %d, want 0 (none)", got.Version)
	}
	var buf bytes.Buffer
	if err := Write(&buf, m, []byte("onnx-bytes")); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader(buf.Bytes()), Limits{}); err != nil {
		t.Fatalf("bundle without a version: %v", err)
	}
	m.Version = 3
	if data, _ = EncodeMetadata(m); !bytes.Contains(data, []byte(`"version": 3`)) {
		t.Fatalf("a bundle's own version was dropped:\n%s", data)
	}
}
