package cold

import (
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Decoders are pooled (their tables are large) and run with concurrency 1,
// so DecodeAll starts no goroutines and a pooled decoder can simply be
// dropped. The memory cap is a backstop: DecodeChunk has already checked
// that the frame declares exactly the chunk's raw size, if it declares one.
var decoderPool = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(maxChunkRaw),
		zstd.WithDecoderMaxWindow(1<<30),
	)
	if err != nil {
		return (*zstd.Decoder)(nil)
	}
	return d
}}

// DecodeChunk checks a chunk's stored bytes against its table entry and
// returns its raw bytes (the batches). The stored CRC-32C is checked before
// decompressing, so a flipped bit never reaches the decoder, and the raw
// CRC-32C after, so a decoder fault never reaches a consumer. For a raw
// chunk the result aliases stored. Errors are *CorruptObjectError naming
// chunk c.Index; the caller fills in the object key.
func DecodeChunk(stored []byte, c ChunkInfo) ([]byte, error) {
	fail := func(err error, format string, args ...any) ([]byte, error) {
		return nil, &CorruptObjectError{Chunk: c.Index, Reason: fmt.Sprintf(format, args...), Err: err}
	}
	if int64(len(stored)) != c.StoredSize {
		return fail(nil, "%d stored bytes, the chunk table says %d (truncated object?)", len(stored), c.StoredSize)
	}
	if got := crc32.Checksum(stored, castagnoli); got != c.StoredCRC {
		return fail(nil, "stored crc32c mismatch: table says %08x, bytes give %08x", c.StoredCRC, got)
	}
	switch c.Codec {
	case ChunkRaw:
		if c.RawSize != c.StoredSize {
			return fail(nil, "raw chunk of %d stored bytes, the chunk table says %d raw", c.StoredSize, c.RawSize)
		}
		return stored, nil // the stored CRC is the raw CRC
	case ChunkZstd:
	default:
		return fail(nil, "unknown codec %d (valid: 0 raw, 1 zstd)", c.Codec)
	}
	var h zstd.Header
	if err := h.Decode(stored); err != nil {
		return fail(err, "zstd frame header")
	}
	// The frame content size is optional (RFC 8878), and klauspost/compress
	// leaves it out below 256 bytes: a tiny segment's chunk has none. Then
	// the decoder's memory cap bounds the output and the raw size and CRC
	// are checked after.
	if h.HasFCS && h.FrameContentSize != uint64(c.RawSize) {
		return fail(nil, "zstd frame declares %d bytes, the chunk table says %d", h.FrameContentSize, c.RawSize)
	}
	d, _ := decoderPool.Get().(*zstd.Decoder)
	if d == nil {
		return nil, errors.New("cold: zstd decoder could not be built")
	}
	raw, err := d.DecodeAll(stored, make([]byte, 0, c.RawSize))
	decoderPool.Put(d)
	if err != nil {
		return fail(err, "zstd decode")
	}
	if int64(len(raw)) != c.RawSize {
		return fail(nil, "decoded %d bytes, the chunk table says %d", len(raw), c.RawSize)
	}
	if got := crc32.Checksum(raw, castagnoli); got != c.RawCRC {
		return fail(nil, "raw crc32c mismatch after decompression: table says %08x, bytes give %08x", c.RawCRC, got)
	}
	return raw, nil
}
