package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// DefaultMaxUncompressed is the decompressed size limit used when a caller
// passes none. Kafka caps a produced batch at message.max.bytes (about 1 MiB by
// default); 64 MiB leaves room for very compressible payloads while keeping a
// crafted batch from expanding into gigabytes.
const DefaultMaxUncompressed = 64 << 20

// ErrTooLarge means a compressed records section expands beyond the size limit
// the caller allowed. It is not wrapped in ErrCorrupt: the bytes may be a
// perfectly valid batch that this reader was configured not to accept.
var ErrTooLarge = errors.New("batch: decompressed records exceed the size limit")

// maxZstdWindow bounds the zstd window a frame may ask for. Kafka producers
// use windows of a few MiB at most; a frame asking for more is either hostile
// or not from a Kafka client, and would make the decoder allocate that much.
const maxZstdWindow = 64 << 20

// xerialMagic opens a snappy payload framed by the xerial snappy-java stream
// that the Java producer writes: the magic, a 4-byte version and a 4-byte
// minimum compatible version, then blocks of [4-byte big-endian length][raw
// snappy block].
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

const (
	xerialHeaderLen = 16
	// xerialBlockSize is how much uncompressed input goes into one block,
	// the block size snappy-java's output stream uses by default.
	xerialBlockSize = 32 << 10
)

// Decoders and encoders are pooled because building them is costly (zstd most
// of all: its tables run to hundreds of KiB). The pools hold codec state, not
// configuration. zstd decoders run with concurrency 1 so they start no
// goroutines and can simply be dropped.
var (
	gzipReaders = sync.Pool{New: func() any { return new(gzip.Reader) }}
	gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}
	lz4Readers  = sync.Pool{New: func() any { return lz4.NewReader(nil) }}
	lz4Writers  = sync.Pool{New: func() any { return newLZ4Writer() }}
	zstdReaders = sync.Pool{New: func() any { return newZstdReader() }}
	// zstdEncoder is shared: EncodeAll is safe for concurrent use.
	zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(0), zstd.WithZeroFrames(true))
	})
)

func newLZ4Writer() *lz4.Writer {
	w := lz4.NewWriter(nil)
	// 64 KiB blocks, as Kafka's Java producer writes them; a failure here
	// would only leave the library default (4 MiB), which readers accept too.
	_ = w.Apply(lz4.BlockSizeOption(lz4.Block64Kb))
	return w
}

// newZstdReader returns a streaming decoder, or nil if the options are
// rejected (they are constants, so that would be a programming error that
// Decompress reports instead of panicking).
func newZstdReader() any {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(maxZstdWindow),
	)
	if err != nil {
		return (*zstd.Decoder)(nil)
	}
	return d
}

// Compress compresses a records section with codec c the way Kafka producers
// do: a gzip stream, xerial-framed snappy (what the Java producer writes and
// every Kafka client reads), an LZ4 frame, or a zstd frame. None returns raw
// unchanged.
func Compress(c Codec, raw []byte) ([]byte, error) {
	switch c {
	case None:
		return raw, nil
	case Gzip:
		var buf bytes.Buffer
		w := gzipWriters.Get().(*gzip.Writer)
		defer gzipWriters.Put(w)
		w.Reset(&buf)
		if _, err := w.Write(raw); err != nil {
			return nil, fmt.Errorf("batch: gzip compress: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("batch: gzip compress: %w", err)
		}
		return buf.Bytes(), nil
	case Snappy:
		return appendXerial(nil, raw), nil
	case LZ4:
		var buf bytes.Buffer
		w := lz4Writers.Get().(*lz4.Writer)
		defer lz4Writers.Put(w)
		w.Reset(&buf)
		if _, err := w.Write(raw); err != nil {
			return nil, fmt.Errorf("batch: lz4 compress: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("batch: lz4 compress: %w", err)
		}
		return buf.Bytes(), nil
	case Zstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, fmt.Errorf("batch: zstd encoder: %w", err)
		}
		return enc.EncodeAll(raw, make([]byte, 0, len(raw)/2+64)), nil
	}
	return nil, errUnknownCodec(c)
}

func errUnknownCodec(c Codec) error {
	return fmt.Errorf("batch: unknown compression codec %d (valid: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)", int8(c))
}

// appendXerial appends raw as an xerial snappy stream: the header, then one
// raw snappy block per xerialBlockSize bytes of input.
func appendXerial(dst, raw []byte) []byte {
	dst = append(dst, xerialMagic...)
	dst = binary.BigEndian.AppendUint32(dst, 1) // stream version
	dst = binary.BigEndian.AppendUint32(dst, 1) // minimum compatible version
	for len(raw) > 0 {
		n := min(len(raw), xerialBlockSize)
		lenPos := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		dst = slices.Grow(dst, s2.MaxEncodedLen(n))
		block := s2.EncodeSnappy(dst[len(dst):cap(dst)], raw[:n])
		binary.BigEndian.PutUint32(dst[lenPos:], uint32(len(block)))
		dst = dst[:len(dst)+len(block)]
		raw = raw[n:]
	}
	return dst
}

// Decompress reverses Compress for any Kafka producer's output: gzip (also
// multi-member), snappy as a raw block or xerial-framed, LZ4 frames, and zstd
// frames. The output may not exceed limit bytes (limit <= 0 means
// DefaultMaxUncompressed); a larger result fails with ErrTooLarge before more
// than limit+1 bytes are produced. Malformed input fails with an error
// wrapping ErrCorrupt.
func Decompress(c Codec, data []byte, limit int) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultMaxUncompressed
	}
	if c != None && len(data) == 0 {
		// No codec's stream is empty; treating it as zero bytes of
		// output would hide a payload lost in transit.
		return nil, fmt.Errorf("%w: %s payload is empty", ErrCorrupt, c)
	}
	var (
		out []byte
		err error
	)
	switch c {
	case None:
		out = data
	case Gzip:
		out, err = gunzip(data, limit)
	case Snappy:
		out, err = unsnappy(data, limit)
	case LZ4:
		out, err = unlz4(data, limit)
	case Zstd:
		out, err = unzstd(data, limit)
	default:
		return nil, errUnknownCodec(c)
	}
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%w: %s records section expands past %d bytes", ErrTooLarge, c, limit)
	}
	return out, nil
}

func corruptf(c Codec, err error) error {
	return fmt.Errorf("%w: %s payload does not decompress: %v", ErrCorrupt, c, err)
}

func gunzip(data []byte, limit int) ([]byte, error) {
	r := gzipReaders.Get().(*gzip.Reader)
	defer gzipReaders.Put(r)
	if err := r.Reset(bytes.NewReader(data)); err != nil {
		return nil, corruptf(Gzip, err)
	}
	out, err := readLimited(r, limit, len(data))
	if err != nil {
		return nil, corruptf(Gzip, err)
	}
	return out, nil
}

func unlz4(data []byte, limit int) ([]byte, error) {
	r := lz4Readers.Get().(*lz4.Reader)
	defer lz4Readers.Put(r)
	r.Reset(bytes.NewReader(data))
	defer r.Reset(nil)
	out, err := readLimited(r, limit, len(data))
	if err != nil {
		return nil, corruptf(LZ4, err)
	}
	return out, nil
}

func unzstd(data []byte, limit int) ([]byte, error) {
	if err := zstdFramesFit(data, limit); err != nil {
		return nil, err
	}
	d := zstdReaders.Get().(*zstd.Decoder)
	if d == nil {
		return nil, errors.New("batch: zstd decoder could not be built")
	}
	if err := d.Reset(bytes.NewReader(data)); err != nil {
		return nil, corruptf(Zstd, err)
	}
	out, err := readLimited(d, limit, len(data))
	// Drop the reference to data before pooling; a decoder that failed is
	// dropped rather than trusted again.
	if rerr := d.Reset(nil); err == nil && (rerr == nil || errors.Is(rerr, zstd.ErrDecoderNilInput)) {
		zstdReaders.Put(d)
	}
	if err != nil {
		return nil, corruptf(Zstd, err)
	}
	return out, nil
}

// readLimited reads r to EOF but stops once it has read more than limit
// bytes, returning what it has: the caller reports ErrTooLarge. hint is the
// compressed size, from which the first buffer is sized.
func readLimited(r io.Reader, limit, hint int) ([]byte, error) {
	buf := make([]byte, 0, min(max(4*hint, 512), limit+1))
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), limit+1-len(buf)))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return buf, nil
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// unsnappy decodes a raw snappy block or an xerial stream. A first pass
// over an xerial stream checks its framing and adds up the blocks' declared
// sizes, so the limit is enforced before anything is decoded and the output
// is allocated once.
func unsnappy(data []byte, limit int) ([]byte, error) {
	if len(data) < xerialHeaderLen || !bytes.HasPrefix(data, xerialMagic) {
		return snappyBlock(nil, data, limit)
	}
	total := 0
	for i, rest := 0, data[xerialHeaderLen:]; len(rest) > 0; i++ {
		block, next, err := xerialBlock(rest, i)
		if err != nil {
			return nil, err
		}
		n, err := s2.DecodedLen(block)
		if err != nil {
			return nil, corruptf(Snappy, err)
		}
		if n > limit-total {
			return nil, fmt.Errorf("%w: snappy records section expands past %d bytes", ErrTooLarge, limit)
		}
		total += n
		rest = next
	}
	out := make([]byte, 0, total)
	for i, rest := 0, data[xerialHeaderLen:]; len(rest) > 0; i++ {
		block, next, _ := xerialBlock(rest, i) // checked above
		var err error
		if out, err = snappyBlock(out, block, limit); err != nil {
			return nil, err
		}
		rest = next
	}
	return out, nil
}

// xerialBlock splits the next [length][block] off an xerial stream.
func xerialBlock(rest []byte, i int) (block, next []byte, err error) {
	if len(rest) < 4 {
		return nil, nil, fmt.Errorf("%w: xerial snappy block %d: %d bytes left, a block length needs 4", ErrCorrupt, i, len(rest))
	}
	n := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	if uint64(n) > uint64(len(rest)) {
		return nil, nil, fmt.Errorf("%w: xerial snappy block %d: length %d, only %d bytes left", ErrCorrupt, i, n, len(rest))
	}
	return rest[:n], rest[n:], nil
}

// snappyBlock decodes one raw snappy block and appends it to dst.
func snappyBlock(dst, block []byte, limit int) ([]byte, error) {
	n, err := s2.DecodedLen(block)
	if err != nil {
		return nil, corruptf(Snappy, err)
	}
	if n > limit-len(dst) {
		return nil, fmt.Errorf("%w: snappy records section expands past %d bytes", ErrTooLarge, limit)
	}
	dst = slices.Grow(dst, n)
	if _, err := s2.Decode(dst[len(dst):len(dst)+n], block); err != nil {
		return nil, corruptf(Snappy, err)
	}
	return dst[:len(dst)+n], nil
}

// zstdFramesFit walks the frame and block headers of a zstd payload without
// decoding anything and checks that the content sizes the frames declare add
// up to at most limit. The streaming decoder sizes its buffers from a
// frame's declared content size (a single-segment frame's window is its
// content size), so without this a 100-byte frame declaring 64 MiB costs a
// 64 MiB allocation before the limit or the frame's real length can fail it
// - tens of milliseconds per batch, which stalled FuzzDecode and let a
// producer make every append allocate that much. Malformed framing is left
// to the decoder, which reports it.
func zstdFramesFit(data []byte, limit int) error {
	if declared, _ := zstdFrames(data); declared > uint64(limit) {
		return fmt.Errorf("%w: zstd frames declare %d bytes of content, more than the %d allowed", ErrTooLarge, declared, limit)
	}
	return nil
}

// zstdFrames walks the frame headers of a zstd payload and returns the sum
// of the content sizes they declare (saturating) and the largest window a
// decoder needs for them (a single-segment frame's window is its content
// size). It stops at the first malformed frame: the decoder reports that.
func zstdFrames(data []byte) (declared, window uint64) {
	for rest := data; len(rest) > 0; {
		var h zstd.Header
		body, err := h.DecodeAndStrip(rest)
		if err != nil {
			return declared, window
		}
		if h.Skippable {
			if uint64(h.SkippableSize) > uint64(len(body)) {
				return declared, window
			}
			rest = body[h.SkippableSize:]
			continue
		}
		if h.HasFCS {
			if h.FrameContentSize > math.MaxUint64-declared {
				declared = math.MaxUint64
			} else {
				declared += h.FrameContentSize
			}
		}
		if h.SingleSegment {
			window = max(window, h.FrameContentSize)
		} else {
			window = max(window, h.WindowSize)
		}
		if rest = skipZstdBlocks(body, h.HasCheckSum); rest == nil {
			return declared, window
		}
	}
	return declared, window
}

// skipZstdBlocks returns what follows the blocks (and checksum) of the frame
// whose blocks start body, or nil if the blocks run past the end.
func skipZstdBlocks(body []byte, checksum bool) []byte {
	for len(body) >= 3 {
		bh := uint32(body[0]) | uint32(body[1])<<8 | uint32(body[2])<<16
		body = body[3:]
		size := int(bh >> 3)
		if (bh>>1)&3 == 1 { // RLE block: one byte repeated size times
			size = 1
		}
		if size > len(body) {
			return nil
		}
		body = body[size:]
		if bh&1 != 0 { // last block
			if checksum {
				if len(body) < 4 {
					return nil
				}
				body = body[4:]
			}
			return body
		}
	}
	return nil
}
