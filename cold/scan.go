package cold

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
)

// ScanObject reads the object seg names - its recorded version, if any, of
// seg.Size bytes, footer f as ReadFooter returned it - whole, in one GET,
// and calls fn with each chunk's batches in chunk order (checked and
// decoded by DecodeChunk; raw is only valid during the call). It returns the SHA-256 of every byte the GET returned,
// for a verifier to compare with the digest the manifest recorded: the
// digest and the batches come from the same bytes. The chunks must follow
// each other from the header on, and the footer the stream ends with must
// be f's; a stream shorter or longer than size is a *CorruptObjectError.
// It does not retry: a caller that may see transient errors reads again.
func ScanObject(ctx context.Context, b Bucket, seg SegmentRef, f *Footer, fn func(c ChunkInfo, raw []byte) error) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	key, size := seg.Key, seg.Size
	rc, err := GetRangeVersion(ctx, b, key, seg.VersionID, 0, -1)
	if err != nil {
		return sum, fmt.Errorf("cold: get %s: %w", key, err)
	}
	defer rc.Close()
	s := &scanner{r: rc, h: sha256.New(), key: key, size: size}
	if _, err := s.read(SegmentHeaderSize); err != nil {
		return sum, err
	}
	var buf []byte
	for _, c := range f.Chunks {
		if c.StoredPos != s.pos {
			return sum, &CorruptObjectError{Key: key, Chunk: c.Index, Reason: fmt.Sprintf("the chunk table places the chunk at byte %d, the previous one ends at %d", c.StoredPos, s.pos)}
		}
		if buf, err = s.readInto(buf, c.StoredSize); err != nil {
			return sum, err
		}
		raw, err := DecodeChunk(buf, c)
		if err != nil {
			return sum, withKey(err, key)
		}
		if err := fn(c, raw); err != nil {
			return sum, err
		}
	}
	tail, err := s.read(size - s.pos)
	if err != nil {
		return sum, err
	}
	if n, _ := io.ReadFull(rc, make([]byte, 1)); n > 0 {
		return sum, &CorruptObjectError{Key: key, Chunk: -1, Reason: fmt.Sprintf("the object is longer than the %d bytes the manifest records", size)}
	}
	got, err := ParseFooter(tail, size)
	if err != nil {
		return sum, withKey(err, key)
	}
	if got.BaseOffset != f.BaseOffset || got.NextOffset != f.NextOffset || !slices.Equal(got.Chunks, f.Chunks) {
		return sum, &CorruptObjectError{Key: key, Chunk: -1, Reason: "the footer read whole differs from the one read by range (the object changed while it was read)"}
	}
	s.h.Sum(sum[:0])
	return sum, nil
}

// scanner reads an object's stream in order, hashing every byte.
type scanner struct {
	r    io.Reader
	h    hash.Hash
	key  string
	size int64
	pos  int64
}

func (s *scanner) read(n int64) ([]byte, error) { return s.readInto(nil, n) }

// readInto reads the next n bytes into buf (grown as needed).
func (s *scanner) readInto(buf []byte, n int64) ([]byte, error) {
	if n < 0 || s.pos+n > s.size {
		return nil, &CorruptObjectError{Key: s.key, Chunk: -1, Reason: fmt.Sprintf("the chunk table reaches past the object's %d bytes", s.size)}
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	got, err := io.ReadFull(s.r, buf)
	s.pos += int64(got)
	s.h.Write(buf[:got])
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, &CorruptObjectError{Key: s.key, Chunk: -1, Err: io.ErrUnexpectedEOF,
			Reason: fmt.Sprintf("object ends after %d bytes, the manifest records %d (truncated)", s.pos, s.size)}
	}
	if err != nil {
		return nil, fmt.Errorf("cold: get %s: %w", s.key, err)
	}
	return buf, nil
}
