package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Limits bound what Read accepts, so a hostile or broken archive cannot
// exhaust memory. Zero fields take the defaults below.
type Limits struct {
	// MaxModelBytes bounds model.onnx. Default 1 GiB.
	MaxModelBytes int64
	// MaxMetadataBytes bounds metadata.json. Default 16 MiB.
	MaxMetadataBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxModelBytes <= 0 {
		l.MaxModelBytes = 1 << 30
	}
	if l.MaxMetadataBytes <= 0 {
		l.MaxMetadataBytes = 16 << 20
	}
	return l
}

// Bundle is a model and its metadata, held in memory.
type Bundle struct {
	// Meta is nil for a bare model.onnx opened without metadata.
	Meta *Metadata
	// ONNX is the model file's bytes.
	ONNX []byte
	// Source is where the bundle was read from, for messages.
	Source string
}

// Open reads a bundle from path: a model.tar.gz, a folder holding model.onnx
// and metadata.json, or a bare .onnx file (then Meta is nil, or read from a
// metadata.json beside it when there is one).
func Open(p string) (*Bundle, error) {
	return OpenWithLimits(p, Limits{})
}

// OpenWithLimits is Open with explicit limits.
func OpenWithLimits(p string, lim Limits) (*Bundle, error) {
	lim = lim.withDefaults()
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	if st.IsDir() {
		return openDir(p, lim)
	}
	if strings.HasSuffix(p, ".onnx") {
		b, err := readFileLimited(p, lim.MaxModelBytes)
		if err != nil {
			return nil, err
		}
		bun := &Bundle{ONNX: b, Source: p}
		side := filepath.Join(filepath.Dir(p), MetadataFile)
		if data, err := readFileLimited(side, lim.MaxMetadataBytes); err == nil {
			if bun.Meta, err = DecodeMetadata(data); err != nil {
				return nil, fmt.Errorf("%s: %w", side, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return bun, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	defer f.Close()
	bun, err := Read(f, lim)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	bun.Source = p
	return bun, nil
}

func openDir(dir string, lim Limits) (*Bundle, error) {
	model, err := readFileLimited(filepath.Join(dir, ModelFile), lim.MaxModelBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: folder %s: %w", ErrInvalid, dir, err)
	}
	data, err := readFileLimited(filepath.Join(dir, MetadataFile), lim.MaxMetadataBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: folder %s: %w", ErrInvalid, dir, err)
	}
	meta, err := DecodeMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &Bundle{Meta: meta, ONNX: model, Source: dir}, nil
}

func readFileLimited(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrTooLarge, p, limit)
	}
	return b, nil
}

// Read parses a model.tar.gz stream. Both model.onnx and metadata.json must
// sit at the archive root (a leading "./" is fine); anything else is skipped.
//
// Read consumes the whole stream, not only the two files it keeps: gzip
// checks a member's CRC-32 and length only in the trailer after its last
// compressed byte, so a reader that stopped at the end of the tar would let
// a flipped bit in the rest of the compressed data, or in the trailer, pass
// unnoticed. Reserved bits in the gzip header are refused. Bytes after the
// last gzip member that do not start another member are ignored, as
// gzip(1) does: some tools pad files, and the release's sha256 covers them
// anyway. The
// header's MTIME, XFL, OS and FTEXT fields are informational and covered by
// no check; a change to them changes nothing that Read returns.
func Read(r io.Reader, lim Limits) (*Bundle, error) {
	lim = lim.withDefaults()
	br := bufio.NewReader(r)
	// Reserved flags are checked behind the magic only, so that a file that
	// is no gzip at all is reported as such.
	if hdr, err := br.Peek(4); err == nil && bytes.Equal(hdr[:3], []byte{0x1f, 0x8b, 8}) && hdr[3]&gzipReservedFlags != 0 {
		return nil, corrupt("gzip header", fmt.Errorf("reserved flags %#x are set", hdr[3]&gzipReservedFlags))
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("%w: not a gzip stream: %w", ErrInvalid, err)
	}
	defer zr.Close()
	zr.Multistream(false)
	ms := &members{br: br, zr: zr}
	tr := tar.NewReader(ms)
	var model, meta []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, corrupt("reading tar", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		var limit int64
		var dst *[]byte
		switch name {
		case ModelFile:
			limit, dst = lim.MaxModelBytes, &model
		case MetadataFile:
			limit, dst = lim.MaxMetadataBytes, &meta
		default:
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, name)
		}
		if *dst != nil {
			return nil, fmt.Errorf("%w: %s appears twice", ErrInvalid, name)
		}
		if h.Size > limit {
			return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, name, h.Size, limit)
		}
		b, err := io.ReadAll(io.LimitReader(tr, limit+1))
		if err != nil {
			return nil, corrupt("reading "+name, err)
		}
		*dst = b
	}
	// The tar ends at its end-of-archive blocks; what follows (padding to a
	// tar record, further gzip members) is read and dropped, in constant
	// memory, for the trailers' checks to run.
	if _, err := io.Copy(io.Discard, ms); err != nil {
		return nil, corrupt("reading past the end of the tar", err)
	}
	if model == nil {
		return nil, fmt.Errorf("%w: no %s at the archive root", ErrInvalid, ModelFile)
	}
	if meta == nil {
		return nil, fmt.Errorf("%w: no %s at the archive root", ErrInvalid, MetadataFile)
	}
	m, err := DecodeMetadata(meta)
	if err != nil {
		return nil, err
	}
	return &Bundle{Meta: m, ONNX: model}, nil
}

// members reads the gzip members of br one after the other, each checked
// against its own trailer, and stops at the first byte after a member that
// does not start another one.
type members struct {
	br *bufio.Reader
	zr *gzip.Reader
}

func (m *members) Read(p []byte) (int, error) {
	for {
		n, err := m.zr.Read(p)
		if err != io.EOF {
			return n, err
		}
		// The member ended and its CRC-32 and length matched.
		if next, _ := m.br.Peek(3); !bytes.Equal(next, []byte{0x1f, 0x8b, 8}) {
			return n, io.EOF
		}
		if hdr, _ := m.br.Peek(4); len(hdr) == 4 && hdr[3]&gzipReservedFlags != 0 {
			return n, corrupt("gzip header", fmt.Errorf("reserved flags %#x are set", hdr[3]&gzipReservedFlags))
		}
		if err := m.zr.Reset(m.br); err != nil {
			return n, err
		}
		m.zr.Multistream(false)
		if n > 0 {
			return n, nil
		}
	}
}

// gzipReservedFlags are the FLG bits RFC 1952 reserves; a decoder must
// refuse a member that sets one. Go's gzip ignores them.
const gzipReservedFlags = 0xe0

// corrupt wraps an error met while decompressing or unpacking: a checksum
// that does not match, a truncated stream, a broken tar header, data after
// the last gzip member. The bytes are not the bundle that was published.
func corrupt(what string, err error) error {
	return fmt.Errorf("%w: the bundle is corrupt or incomplete (%s: %w); download it again", ErrInvalid, what, err)
}

// Write writes a model.tar.gz holding meta and model. The output depends only
// on its inputs (fixed times, owners and modes), so the same model always
// gives the same bytes and the same sha256.
func Write(w io.Writer, meta *Metadata, model []byte) error {
	metaJSON, err := EncodeMetadata(meta)
	if err != nil {
		return err
	}
	if len(model) == 0 {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, ModelFile)
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	epoch := time.Unix(0, 0).UTC()
	for _, f := range []struct {
		name string
		data []byte
	}{{MetadataFile, metaJSON}, {ModelFile, model}} {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// WriteFile writes a bundle to path atomically (temp file, sync, rename) and
// returns its sha256 in hex and its size.
func WriteFile(p string, meta *Metadata, model []byte) (sha string, size int64, err error) {
	var buf bytes.Buffer
	if err := Write(&buf, meta, model); err != nil {
		return "", 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".bundle-*")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return "", 0, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", 0, err
	}
	if err := tmp.Close(); err != nil {
		return "", 0, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", 0, err
	}
	sum := sha256.Sum256(buf.Bytes())
	return hex.EncodeToString(sum[:]), int64(buf.Len()), nil
}

// Unpack writes the bundle's two files into dir (created if needed), as a
// SageMaker container expects them under /opt/ml/model.
func (b *Bundle) Unpack(dir string) error {
	if b.Meta == nil {
		return fmt.Errorf("%w: bundle has no metadata to unpack", ErrInvalid)
	}
	meta, err := EncodeMetadata(b.Meta)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ModelFile), b.ONNX, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, MetadataFile), meta, 0o644)
}
