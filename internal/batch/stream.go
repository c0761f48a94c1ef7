package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Each decodes a compressed batch as a stream: records are parsed from a
// read buffer that the decompressor fills, so a caller that stops after a
// few records decompresses little more than those, and the memory held is
// the codec's state and the buffer, not the whole records section (which
// may be up to DefaultMaxUncompressed, 64 times a typical batch).

// eachReadBuffer is the read buffer a streaming decode starts with; it
// grows only to hold a record larger than it. eachOverhead covers the
// decoding's small structures (readers, the header arena).
const (
	eachReadBuffer = 64 << 10
	eachOverhead   = 64 << 10
)

// Codec state a streaming decode holds beside its read buffer, by codec
// (see EachMemory). The figures are upper bounds of what the decoders in
// use allocate: flate's 32 KiB window with its tables; zstd's block
// buffers, on top of its window ring; LZ4 a decoded and a compressed block.
const (
	gzipStateBytes      = 64 << 10
	zstdBlockStateBytes = 512 << 10
	lz4MaxBlockBytes    = 8 << 20 // legacy frames' block; the frame format's largest is 4 MiB
)

// EachMemory is the most memory DecodeOptions.Each holds while decoding
// the batch at the start of b, beside b itself and what its yield keeps:
// 0 for an uncompressed batch (its records alias b); for a compressed one,
// the codec's state, learnt from the payload's headers without
// decompressing (the zstd window, the LZ4 block size, the largest xerial
// snappy block; a raw snappy block is decoded whole), plus the read buffer.
// A record larger than the read buffer grows it to that record's size. A
// batch that cannot be parsed costs nothing: Each fails it at once.
func EachMemory(b []byte) int {
	h, err := Peek(b)
	if err != nil || h.Size() > len(b) || h.Size() < HeaderSize {
		return 0
	}
	data := b[HeaderSize:h.Size()]
	state := 0
	switch h.Codec() {
	case None:
		return 0
	case Gzip:
		state = gzipStateBytes
	case Snappy:
		state = snappyState(data)
	case LZ4:
		state = lz4State(data)
	case Zstd:
		_, window := zstdFrames(data)
		// The decoder's history ring: the window and two blocks.
		state = int(min(window, maxZstdWindow)) + 2*(128<<10) + zstdBlockStateBytes
	}
	return state + eachReadBuffer + eachOverhead
}

// snappyState is what decoding a snappy payload holds: its largest xerial
// block decoded, or a raw block decoded whole.
func snappyState(data []byte) int {
	if len(data) < xerialHeaderLen || !bytes.HasPrefix(data, xerialMagic) {
		n, err := s2.DecodedLen(data)
		if err != nil {
			return 0
		}
		return min(n, DefaultMaxUncompressed)
	}
	largest := 0
	for i, rest := 0, data[xerialHeaderLen:]; len(rest) > 0; i++ {
		block, next, err := xerialBlock(rest, i)
		if err != nil {
			break
		}
		if n, err := s2.DecodedLen(block); err == nil {
			largest = max(largest, min(n, DefaultMaxUncompressed))
		}
		rest = next
	}
	return largest
}

// lz4State is two blocks (a decoded and a compressed one) of each block
// size the payload's LZ4 frames declare in their descriptors: a payload may
// hold several frames, and the decoder pools its blocks by size, so a
// 64 KiB frame followed by a 4 MiB one holds blocks of both. A payload whose
// first frame cannot be read is charged the largest block (legacy frames
// use 8 MiB); the walk stops at the first malformed frame, where the
// decoder fails too.
func lz4State(data []byte) int {
	var sizes [8]bool // by the descriptor's block size index, 4 to 7
	seen := false
	for rest := data; len(rest) > 0; {
		idx, next, ok := lz4Frame(rest)
		if idx > 0 {
			sizes[idx], seen = true, true
		}
		if !ok {
			break
		}
		rest = next
	}
	if !seen {
		return 2 * lz4MaxBlockBytes
	}
	state := 0
	for idx, used := range sizes {
		if used {
			state += 2 * (1 << (8 + 2*idx)) // index 4 is 64 KiB, 7 is 4 MiB
		}
	}
	return state
}

// lz4Frame reads the LZ4 frame at the start of data: its block size index
// (0 for a skippable frame or an unreadable descriptor) and what follows
// it, or ok false where the frame is malformed or cut short.
func lz4Frame(data []byte) (idx int, next []byte, ok bool) {
	const (
		frameMagic     = 0x184D2204
		skipMagic      = 0x184D2A50 // to 0x184D2A5F
		flagBlockSum   = 0x10
		flagContentLen = 0x08
		flagContentSum = 0x04
		flagDictID     = 0x01
	)
	le := binary.LittleEndian
	if len(data) < 8 {
		return 0, nil, false
	}
	if m := le.Uint32(data); m&^0xF == skipMagic {
		n := uint64(le.Uint32(data[4:]))
		if n > uint64(len(data)-8) {
			return 0, nil, false
		}
		return 0, data[8+n:], true
	} else if m != frameMagic {
		return 0, nil, false
	}
	flg, bd := data[4], data[5]
	idx = int(bd>>4) & 7
	if idx < 4 {
		return 0, nil, false
	}
	rest := data[6:]
	skip := 1 // header checksum
	if flg&flagContentLen != 0 {
		skip += 8
	}
	if flg&flagDictID != 0 {
		skip += 4
	}
	for len(rest) >= skip+4 {
		rest = rest[skip:]
		size := le.Uint32(rest)
		rest = rest[4:]
		if size == 0 { // end mark
			if flg&flagContentSum != 0 {
				if len(rest) < 4 {
					return idx, nil, false
				}
				rest = rest[4:]
			}
			return idx, rest, true
		}
		n := uint64(size &^ (1 << 31)) // the high bit marks a stored block
		if n > uint64(len(rest)) {
			return idx, nil, false
		}
		rest = rest[n:]
		skip = 0
		if flg&flagBlockSum != 0 {
			skip = 4
		}
	}
	return idx, nil, false
}

// openStream returns a reader of the decompressed records section of a
// payload compressed with c, and a function that returns its decoder to
// the pool. The reader fails with ErrTooLarge past limit bytes and with an
// error wrapping ErrCorrupt on a malformed payload.
func openStream(c Codec, data []byte, limit int) (io.Reader, func(), error) {
	if limit <= 0 {
		limit = DefaultMaxUncompressed
	}
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: %s payload is empty", ErrCorrupt, c)
	}
	var (
		r    io.Reader
		done = func() {}
	)
	switch c {
	case Gzip:
		z := gzipReaders.Get().(*gzip.Reader)
		if err := z.Reset(bytes.NewReader(data)); err != nil {
			gzipReaders.Put(z)
			return nil, nil, corruptf(Gzip, err)
		}
		r, done = z, func() { gzipReaders.Put(z) }
	case Snappy:
		if len(data) < xerialHeaderLen || !bytes.HasPrefix(data, xerialMagic) {
			out, err := snappyBlock(nil, data, limit)
			if err != nil {
				return nil, nil, err
			}
			r = bytes.NewReader(out)
		} else {
			r = &xerialReader{rest: data[xerialHeaderLen:]}
		}
	case LZ4:
		z := lz4Readers.Get().(*lz4.Reader)
		z.Reset(bytes.NewReader(data))
		r, done = z, func() { z.Reset(nil); lz4Readers.Put(z) }
	case Zstd:
		if err := zstdFramesFit(data, limit); err != nil {
			return nil, nil, err
		}
		d := zstdReaders.Get().(*zstd.Decoder)
		if d == nil {
			return nil, nil, errors.New("batch: zstd decoder could not be built")
		}
		if err := d.Reset(bytes.NewReader(data)); err != nil {
			return nil, nil, corruptf(Zstd, err)
		}
		r, done = d, func() {
			// Drop the reference to data before pooling; a decoder that
			// failed is dropped rather than trusted again.
			if err := d.Reset(nil); err == nil || errors.Is(err, zstd.ErrDecoderNilInput) {
				zstdReaders.Put(d)
			}
		}
	default:
		return nil, nil, errUnknownCodec(c)
	}
	return &limitedStream{r: r, c: c, left: limit}, done, nil
}

// limitedStream reads a decompressor, failing past the size limit and
// wrapping its errors as Decompress does.
type limitedStream struct {
	r    io.Reader
	c    Codec
	left int
	err  error
}

func (l *limitedStream) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	n, err := l.r.Read(p)
	l.left -= n
	switch {
	case l.left < 0:
		l.err = fmt.Errorf("%w: %s records section expands past the limit", ErrTooLarge, l.c)
		return 0, l.err
	case err == io.EOF:
		return n, err
	case err != nil:
		var tooLarge, corrupt = errors.Is(err, ErrTooLarge), errors.Is(err, ErrCorrupt)
		if tooLarge || corrupt {
			l.err = err
		} else {
			l.err = corruptf(l.c, err)
		}
		return n, l.err
	}
	return n, nil
}

// xerialReader decodes an xerial snappy stream one block at a time.
type xerialReader struct {
	rest  []byte
	block []byte // decoded, not yet read
	buf   []byte
	i     int
}

func (x *xerialReader) Read(p []byte) (int, error) {
	for len(x.block) == 0 {
		if len(x.rest) == 0 {
			return 0, io.EOF
		}
		block, next, err := xerialBlock(x.rest, x.i)
		if err != nil {
			return 0, err
		}
		if x.buf, err = snappyBlock(x.buf[:0], block, DefaultMaxUncompressed); err != nil {
			return 0, err
		}
		x.block, x.rest = x.buf, next
		x.i++
	}
	n := copy(p, x.block)
	x.block = x.block[n:]
	return n, nil
}

// streamSource is a recordSource over a decompressing reader. The bodies
// it returns alias its buffer, which the next call reuses.
type streamSource struct {
	r   io.Reader
	buf []byte // buf[pos:] is read but not yet consumed
	pos int
	eof bool
}

// fill reads until n bytes are buffered or the stream ends, and returns
// how many are.
func (s *streamSource) fill(n int) (int, error) {
	if len(s.buf)-s.pos >= n || s.eof {
		return len(s.buf) - s.pos, nil
	}
	// The caller is done with everything before pos: move the rest to the
	// front.
	if s.buf == nil {
		s.buf = make([]byte, 0, eachReadBuffer)
	}
	s.buf = s.buf[:copy(s.buf[:cap(s.buf)], s.buf[s.pos:])]
	s.pos = 0
	for len(s.buf) < n {
		if len(s.buf) == cap(s.buf) {
			// A record larger than the buffer: grow by doubling, so a
			// corrupt length costs at most twice the bytes really there.
			nb := make([]byte, len(s.buf), min(n, 2*cap(s.buf)))
			copy(nb, s.buf)
			s.buf = nb
		}
		m, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+m]
		if err == io.EOF {
			s.eof = true
			break
		}
		if err != nil {
			return 0, err
		}
	}
	return len(s.buf), nil
}

func (s *streamSource) next() ([]byte, int, error) {
	have, err := s.fill(binary.MaxVarintLen64)
	if err != nil {
		return nil, 0, err
	}
	if have == 0 {
		return nil, 0, io.EOF
	}
	l, w := binary.Varint(s.buf[s.pos : s.pos+have])
	if w <= 0 || l < 0 || l > math.MaxInt32 {
		return nil, w, errOverrun
	}
	if have, err = s.fill(w + int(l)); err != nil {
		return nil, w, err
	}
	if have < w+int(l) {
		return nil, w, errOverrun
	}
	body := s.buf[s.pos+w : s.pos+w+int(l)]
	s.pos += w + int(l)
	return body, w, nil
}
