package cold

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/tierlog/tierlog/internal/batch"
)

// DefaultChunkBytes is the default chunk size: large enough that a ranged
// GET's latency is amortized over megabytes and the chunk table stays short,
// small enough that a reader at a random offset fetches little it does not
// need.
const DefaultChunkBytes = 4 << 20

// DefaultLevel is the default zstd level for chunks. On JSON audit events
// (BenchmarkCompressAudit) SpeedFastest already compresses several-fold at
// several hundred MB/s per core, which keeps the upload path faster than the
// network; SpeedDefault gains a little ratio for about half the speed.
const DefaultLevel = zstd.SpeedFastest

// SegmentOptions say how WriteSegment cuts and compresses chunks. The zero
// value uses the defaults.
type SegmentOptions struct {
	// ChunkBytes is the target uncompressed chunk size; a chunk is cut at
	// the batch boundary before it would exceed this. A single larger batch
	// is a chunk of its own. Default DefaultChunkBytes.
	ChunkBytes int
	// Level is the zstd encoder level (zstd.SpeedFastest ...
	// zstd.SpeedBestCompression). Default DefaultLevel.
	Level zstd.EncoderLevel
	// NoCompression stores every chunk raw (for benchmarks that need the
	// object to be the segment's size).
	NoCompression bool
}

func (o SegmentOptions) withDefaults() (SegmentOptions, error) {
	if o.ChunkBytes == 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.ChunkBytes < batch.HeaderSize || int64(o.ChunkBytes) > maxChunkRaw {
		return o, fmt.Errorf("cold: chunk size %d is outside [%d, %d]", o.ChunkBytes, batch.HeaderSize, int64(maxChunkRaw))
	}
	if o.Level == 0 {
		o.Level = DefaultLevel
	}
	if o.Level < zstd.SpeedFastest || o.Level > zstd.SpeedBestCompression {
		return o, fmt.Errorf("cold: zstd level %d is outside [%d, %d]", o.Level, zstd.SpeedFastest, zstd.SpeedBestCompression)
	}
	return o, nil
}

// Encoders are pooled per level because building one costs hundreds of KiB
// of tables. Concurrency 1: EncodeAll then starts no goroutines; chunks are
// compressed in parallel by taking one encoder each.
var encoderPools [zstd.SpeedBestCompression + 1]sync.Pool

func getEncoder(l zstd.EncoderLevel) (*zstd.Encoder, error) {
	if e, ok := encoderPools[l].Get().(*zstd.Encoder); ok {
		return e, nil
	}
	// No zstd checksum: every chunk carries CRC-32C of both forms already.
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
}

// WriteSegment reads a hot segment's .log bytes (RecordBatch v2 batches back
// to back) from log and writes the remote segment object to w. Every batch
// is validated (length, magic, CRC-32C, record count) before it is written:
// a corrupt or torn batch fails the write, so corrupt data never reaches the
// bucket. The returned footer carries the object's size and SHA-256, which
// the manifest records.
func WriteSegment(w io.Writer, log io.Reader, opts SegmentOptions) (*Footer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	sw := &segWriter{opts: opts, out: &hashWriter{w: w, h: sha256.New()}, sem: make(chan struct{}, compressWorkers())}
	sw.chunk = getBuf(opts.ChunkBytes)
	defer sw.release()
	if err := sw.out.write(appendHeader(nil)); err != nil {
		return nil, err
	}
	br, ok := log.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(log, 256<<10)
	}
	if err := sw.readBatches(br); err != nil {
		return nil, err
	}
	f := &sw.footer
	f.Version = FormatVersion
	if err := sw.out.write(appendFooter(nil, f)); err != nil {
		return nil, err
	}
	f.ObjectSize = sw.out.n
	sw.out.h.Sum(f.SHA256[:0])
	return f, nil
}

// segWriter accumulates one chunk of batches at a time and hands each full
// chunk to a compression job; jobs run in parallel (one per core) and their
// results are written in chunk order.
type segWriter struct {
	opts   SegmentOptions
	out    *hashWriter
	footer Footer
	chunk  []byte    // the current chunk's batches
	cur    ChunkInfo // the current chunk's entry, being filled
	rawPos int64
	jobs   []*chunkJob   // submitted, not yet written, in chunk order
	sem    chan struct{} // bounds jobs compressing at once
}

func (sw *segWriter) readBatches(r *bufio.Reader) error {
	f := &sw.footer
	var prefix [batch.LengthFieldEnd]byte
	for {
		n, err := io.ReadFull(r, prefix[:])
		if n == 0 && errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sw.batchErr(len(sw.chunk), fmt.Errorf("%w: segment ends inside a batch prefix", batch.ErrShortBatch))
		}
		length := int64(int32(binary.BigEndian.Uint32(prefix[8:])))
		if length < batch.HeaderSize-batch.LengthFieldEnd {
			return sw.batchErr(len(sw.chunk), fmt.Errorf("%w: length %d is below the header size", batch.ErrCorrupt, length))
		}
		size := batch.LengthFieldEnd + length
		if len(sw.chunk) > 0 && int64(len(sw.chunk))+size > int64(sw.opts.ChunkBytes) {
			if err := sw.flush(); err != nil {
				return err
			}
		}
		start := len(sw.chunk)
		sw.chunk = append(sw.chunk, prefix[:]...)
		if sw.chunk, err = readAppend(r, sw.chunk, length); err != nil {
			return sw.batchErr(start, fmt.Errorf("%w: segment ends inside a batch of %d bytes", batch.ErrShortBatch, size))
		}
		h, err := batch.Validate(sw.chunk[start:])
		if err != nil {
			return sw.batchErr(start, err)
		}
		if f.Batches > 0 && h.BaseOffset < f.NextOffset {
			return sw.batchErr(start, fmt.Errorf("%w: base offset %d is below the previous batch's next offset %d", batch.ErrCorrupt, h.BaseOffset, f.NextOffset))
		}
		sw.addBatch(h)
	}
	if f.Batches == 0 {
		return errors.New("cold: write segment: the segment holds no batches")
	}
	if err := sw.flush(); err != nil {
		return err
	}
	for len(sw.jobs) > 0 {
		if err := sw.writeDone(true); err != nil {
			return err
		}
	}
	return nil
}

// addBatch records a validated batch in the chunk and segment totals.
func (sw *segWriter) addBatch(h batch.Header) {
	f, c := &sw.footer, &sw.cur
	if f.Batches == 0 {
		f.BaseOffset, f.FirstTimestamp, f.MaxTimestamp = h.BaseOffset, h.FirstTimestamp, h.MaxTimestamp
	}
	if c.Batches == 0 {
		c.FirstOffset, c.FirstTimestamp, c.MaxTimestamp = h.BaseOffset, h.FirstTimestamp, h.MaxTimestamp
	}
	if n := len(f.Epochs); n == 0 || f.Epochs[n-1].Epoch != h.PartitionLeaderEpoch {
		f.Epochs = append(f.Epochs, EpochStart{Epoch: h.PartitionLeaderEpoch, StartOffset: h.BaseOffset})
	}
	c.NextOffset = h.NextOffset()
	c.MaxTimestamp = max(c.MaxTimestamp, h.MaxTimestamp)
	c.Batches++
	f.NextOffset = h.NextOffset()
	f.MaxTimestamp = max(f.MaxTimestamp, h.MaxTimestamp)
	f.Batches++
	f.Records += int64(h.NumRecords)
}

// batchErr reports a bad batch starting at position start of the chunk.
func (sw *segWriter) batchErr(start int, err error) error {
	return fmt.Errorf("cold: write segment: batch at position %d: %w", sw.rawPos+int64(start), err)
}

// flush hands the current chunk to a compression job and writes out the
// jobs that have finished, in order.
func (sw *segWriter) flush() error {
	if len(sw.chunk) == 0 {
		return nil
	}
	c := sw.cur
	c.Index = len(sw.footer.Chunks) + len(sw.jobs)
	c.RawPos, c.RawSize = sw.rawPos, int64(len(sw.chunk))
	sw.rawPos += c.RawSize
	sw.submit(&chunkJob{info: c, raw: sw.chunk, done: make(chan struct{})})
	sw.chunk, sw.cur = getBuf(sw.opts.ChunkBytes), ChunkInfo{}
	// Keep at most one job per worker queued behind the running ones, so
	// memory stays a few chunks whatever the segment's size.
	return sw.writeDone(len(sw.jobs) > cap(sw.sem))
}

// readAppend appends n bytes from r to b, growing b as the bytes arrive so
// that a corrupt length field cannot make it allocate gigabytes up front.
func readAppend(r io.Reader, b []byte, n int64) ([]byte, error) {
	const step = 1 << 20
	for n > 0 {
		k := min(n, step)
		if int64(cap(b)-len(b)) < k {
			nb := make([]byte, len(b), len(b)+int(min(max(int64(cap(b)), k), math.MaxInt32)))
			copy(nb, b)
			b = nb
		}
		m, err := io.ReadFull(r, b[len(b):len(b)+int(k)])
		b = b[:len(b)+m]
		if err != nil {
			return b, err
		}
		n -= k
	}
	return b, nil
}

// hashWriter counts and hashes what it writes.
type hashWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (hw *hashWriter) write(p []byte) error {
	if _, err := hw.w.Write(p); err != nil {
		return fmt.Errorf("cold: write segment: %w", err)
	}
	hw.h.Write(p)
	hw.n += int64(len(p))
	return nil
}
