package tiering

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

// object is a remote segment built on local disk, ready to upload.
type object struct {
	path   string
	size   int64
	raw    int64 // segment bytes it holds
	sha256 string
	footer *cold.Footer
	leaves *audit.Leaves // its records' Merkle leaves; nil without a signer
}

// build writes the remote form of a sealed segment (chunked, compressed,
// with footer) to a temporary file. WriteSegment validates every batch's
// CRC on the way: corrupt local data is never uploaded.
func (d *Daemon) build(p *Partition, s hot.SegmentInfo, id string) (*object, error) {
	// The leaves are computed beside the object, reading the segment
	// again (from the page cache) on another core.
	type leavesResult struct {
		l   *audit.Leaves
		err error
	}
	var leaves chan leavesResult
	if d.opts.Signer != nil {
		leaves = make(chan leavesResult, 1)
		go func() {
			l, err := segmentLeaves(s.Path, s.BaseOffset, s.NextOffset)
			leaves <- leavesResult{l, err}
		}()
	}
	o, err := d.buildObject(s, id)
	if leaves != nil {
		r := <-leaves
		if err == nil && r.err != nil {
			os.Remove(o.path)
			err = fmt.Errorf("build remote segment of %s: %w", s.Path, r.err)
		}
		if err == nil {
			o.leaves = r.l
		}
	}
	return o, err
}

// buildObject writes the object of build.
func (d *Daemon) buildObject(s hot.SegmentInfo, id string) (*object, error) {
	src, err := os.Open(s.Path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	skipped, err := skipTo(src, s.BaseOffset)
	if err != nil {
		return nil, fmt.Errorf("build remote segment of %s: %w", s.Path, err)
	}
	path := d.tmpPath(id)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	dst, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(dst, 1<<20)
	f, err := cold.WriteSegment(w, bufio.NewReaderSize(src, 1<<20), cold.SegmentOptions{ChunkBytes: d.opts.ChunkBytes})
	if err == nil {
		err = w.Flush()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("build remote segment of %s: %w", s.Path, err)
	}
	if f.BaseOffset != s.BaseOffset || f.NextOffset != s.NextOffset {
		os.Remove(path)
		return nil, fmt.Errorf("build remote segment of %s: it holds offsets %d..%d, the log said %d..%d",
			s.Path, f.BaseOffset, f.NextOffset, s.BaseOffset, s.NextOffset)
	}
	if err := decodeBuilt(path, f); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("build remote segment of %s: the object does not read back: %w", s.Path, err)
	}
	return &object{path: path, size: f.ObjectSize, raw: s.Size - skipped, sha256: hex.EncodeToString(f.SHA256[:]), footer: f}, nil
}

// decodeBuilt decodes every chunk of a built object as the cold reader
// will (checksums, codec, sizes), before it is uploaded: the local copy is
// deleted once the bucket holds the object, and upload's read-back checks
// only the footer, so an object the reader refuses would make its records
// unreadable for good. Local CPU only, no requests; a tiny segment's zstd
// frame without a content size was such a case.
func decodeBuilt(path string, f *cold.Footer) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	var stored []byte
	for _, c := range f.Chunks {
		stored = slices.Grow(stored[:0], int(c.StoredSize))[:c.StoredSize]
		if _, err := src.ReadAt(stored, c.StoredPos); err != nil {
			return fmt.Errorf("chunk %d: %w", c.Index, err)
		}
		if _, err := cold.DecodeChunk(stored, c); err != nil {
			return err
		}
	}
	return nil
}

// skipTo positions src at the batch that starts at offset from, returning
// the bytes skipped. On a shared prefix a leader's local segment may begin
// before the manifest's end - replicas roll their segments at their own
// offsets, and the previous leader uploaded its own - and only the part
// past the end is uploaded. Replicas hold the same batches, so the end
// falls on a batch boundary; if it does not, the logs diverged and nothing
// is uploaded.
func skipTo(src *os.File, from int64) (int64, error) {
	hdr := make([]byte, batch.HeaderSize)
	for pos := int64(0); ; {
		if _, err := src.ReadAt(hdr, pos); err != nil {
			return 0, fmt.Errorf("find offset %d: %w", from, err)
		}
		h, err := batch.ParseHeader(hdr)
		if err != nil {
			return 0, fmt.Errorf("find offset %d: %w", from, err)
		}
		switch {
		case h.BaseOffset == from:
			_, err := src.Seek(pos, io.SeekStart)
			return pos, err
		case h.BaseOffset > from || h.NextOffset() > from:
			return 0, fmt.Errorf("no batch starts at offset %d (batch %d..%d): this log and the remote segments diverged", from, h.BaseOffset, h.LastOffset())
		}
		pos += int64(h.Size())
	}
}

// verifyFooter reads the stored object's footer back from the bucket and
// checks it describes what was built.
func (o *object) verifyFooter(ctx context.Context, b cold.Bucket, ref cold.SegmentRef) error {
	key := ref.Key
	f, err := cold.ReadFooter(ctx, b, ref)
	if err != nil {
		return fmt.Errorf("verify %s: %w", key, err)
	}
	if f.BaseOffset != o.footer.BaseOffset || f.NextOffset != o.footer.NextOffset || len(f.Chunks) != len(o.footer.Chunks) || f.RawSize != o.footer.RawSize {
		return fmt.Errorf("verify %s: stored footer (offsets %d..%d, %d chunks) differs from the one built (%d..%d, %d chunks)",
			key, f.BaseOffset, f.NextOffset, len(f.Chunks), o.footer.BaseOffset, o.footer.NextOffset, len(o.footer.Chunks))
	}
	return nil
}
