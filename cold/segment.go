package cold

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sort"

	"github.com/tierlog/tierlog/internal/batch"
)

// A remote segment is one object: a small header, the segment's batches cut
// into independently compressed chunks, a footer describing every chunk, and a
// fixed-size trailer that locates the footer. docs/format.md has the byte
// layout; this file is its single implementation.
//
//	┌────────┬─────────┬─────────┬─────┬───────────┬────────┬─────────┐
//	│ header │ chunk 0 │ chunk 1 │ ... │ chunk n-1 │ footer │ trailer │
//	│  8 B   │         │         │     │           │        │  16 B   │
//	└────────┴─────────┴─────────┴─────┴───────────┴────────┴─────────┘
//
// All integers are big-endian, as in the Kafka batches the chunks hold.

// FormatVersion is the remote segment format this build writes and the
// highest it reads. It changes only when a reader of the previous version
// would misread an object; fields appended to the footer, its chunk entries
// or epoch entries keep the version (their lengths are recorded, and readers
// skip what they do not know).
const FormatVersion = 1

const (
	// SegmentHeaderSize is the object header: magic, version, reserved.
	SegmentHeaderSize = 8
	// SegmentTrailerSize is the fixed trailer at the object's end: footer
	// length, footer CRC-32C, version, flags, magic.
	SegmentTrailerSize = 16
	// segMagic is "TLSG", at the start and the very end of every object.
	segMagic uint32 = 0x544c5347

	footerFixedLenV1 = 72 // fixed footer fields of version 1
	chunkEntryLenV1  = 72 // one chunk table entry of version 1
	epochEntryLenV1  = 12 // one leader-epoch entry of version 1

	// maxChunkRaw bounds one chunk's uncompressed size: the chunk table
	// stores sizes as uint32, and a single batch can be up to 2 GiB.
	maxChunkRaw = math.MaxUint32
)

// castagnoli is the CRC-32C table, the checksum Kafka batches use too.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ChunkCodec says how a chunk's bytes are stored in the object.
type ChunkCodec uint8

const (
	// ChunkRaw stores the batches as they are: compression did not shrink
	// them (typically producer-compressed batches).
	ChunkRaw ChunkCodec = 0
	// ChunkZstd stores one zstd frame of the batches (with its content
	// size, except below 256 bytes: see DecodeChunk).
	ChunkZstd ChunkCodec = 1
)

func (c ChunkCodec) String() string {
	switch c {
	case ChunkRaw:
		return "raw"
	case ChunkZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// ChunkInfo is one entry of the chunk table: a run of whole batches.
type ChunkInfo struct {
	Index          int   // position in the chunk table (not encoded)
	FirstOffset    int64 // base offset of the chunk's first batch
	NextOffset     int64 // offset after the chunk's last batch
	FirstTimestamp int64 // first timestamp of the chunk's first batch
	MaxTimestamp   int64 // largest max timestamp of the chunk's batches
	RawPos         int64 // position of the first batch in the original .log
	RawSize        int64 // uncompressed size: the batches' bytes
	StoredPos      int64 // position of the stored bytes in the object
	StoredSize     int64 // size of the stored bytes
	StoredCRC      uint32
	RawCRC         uint32
	Batches        int64
	Codec          ChunkCodec
}

// EpochStart says that from StartOffset on, batches carry leader epoch Epoch
// (until the next entry). It is the segment's slice of the leader-epoch
// history, which tiering compares with the partition's to decide what was
// copied under which leader.
type EpochStart struct {
	Epoch       int32
	StartOffset int64
}

// Footer describes a remote segment object.
type Footer struct {
	Version        int
	BaseOffset     int64 // base offset of the first batch
	NextOffset     int64 // offset after the last batch
	FirstTimestamp int64 // first timestamp of the first batch
	MaxTimestamp   int64 // largest max timestamp of all batches
	RawSize        int64 // size of the original segment (.log) bytes
	Batches        int64
	Records        int64 // sum of the batches' record counts
	Chunks         []ChunkInfo
	Epochs         []EpochStart

	// Not encoded in the footer (they describe the object around it):
	// ObjectSize is the whole object's size; SHA256 its digest, set only by
	// WriteSegment, for the manifest.
	ObjectSize int64
	SHA256     [32]byte
}

// StoredSize is the size of the chunks in the object.
func (f *Footer) StoredSize() int64 {
	if len(f.Chunks) == 0 {
		return 0
	}
	last := f.Chunks[len(f.Chunks)-1]
	return last.StoredPos + last.StoredSize - SegmentHeaderSize
}

// ChunkForOffset returns the index of the chunk holding the batch that
// contains offset, or, if offset falls in a gap between batches, the chunk
// of the first batch after it; -1 if offset is outside [BaseOffset,
// NextOffset).
func (f *Footer) ChunkForOffset(offset int64) int {
	if offset < f.BaseOffset || offset >= f.NextOffset {
		return -1
	}
	// First chunk whose NextOffset is past offset.
	return sort.Search(len(f.Chunks), func(i int) bool { return f.Chunks[i].NextOffset > offset })
}

// ChunkForTime returns the index of the first chunk with a batch whose max
// timestamp is >= ts, or -1 if there is none. Batch timestamps need not
// increase, so this is the first chunk whose MaxTimestamp qualifies (a
// linear scan: chunk tables are short).
func (f *Footer) ChunkForTime(ts int64) int {
	if f.MaxTimestamp < ts {
		return -1
	}
	for i := range f.Chunks {
		if f.Chunks[i].MaxTimestamp >= ts {
			return i
		}
	}
	return -1
}

// EpochAt returns the leader epoch of the batch at offset, or -1 when no
// epoch entry covers it.
func (f *Footer) EpochAt(offset int64) int32 {
	i := sort.Search(len(f.Epochs), func(i int) bool { return f.Epochs[i].StartOffset > offset })
	if i == 0 {
		return -1
	}
	return f.Epochs[i-1].Epoch
}

// ErrCorruptObject is wrapped by every error about an object whose bytes
// are not what the writer wrote: a checksum mismatch, a truncated object, a
// footer that does not add up. Such bytes are never served or cached.
var ErrCorruptObject = errors.New("cold: corrupt remote segment")

// ErrFormatVersion means an object was written in a format version this
// build cannot read (a newer tierlog wrote it). It is not corruption.
var ErrFormatVersion = errors.New("cold: unsupported remote segment format version")

// CorruptObjectError names the object and the part of it that failed.
type CorruptObjectError struct {
	Key    string // object key; empty when the caller did not say
	Chunk  int    // chunk index, or -1 for the header, footer or trailer
	Reason string // what did not match
	Err    error  // underlying error, if any (a zstd error)
}

func (e *CorruptObjectError) Error() string {
	what := "footer"
	if e.Chunk >= 0 {
		what = fmt.Sprintf("chunk %d", e.Chunk)
	}
	key := e.Key
	if key == "" {
		key = "(unnamed)"
	}
	msg := fmt.Sprintf("cold: corrupt remote segment %s: %s: %s", key, what, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap lets errors.Is find ErrCorruptObject and the underlying error.
func (e *CorruptObjectError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrCorruptObject, e.Err}
	}
	return []error{ErrCorruptObject}
}

func corruptFooter(format string, args ...any) error {
	return &CorruptObjectError{Chunk: -1, Reason: fmt.Sprintf(format, args...)}
}

// withKey fills in the object key of a *CorruptObjectError inside err.
func withKey(err error, key string) error {
	var ce *CorruptObjectError
	if errors.As(err, &ce) && ce.Key == "" {
		c := *ce
		c.Key = key
		return &c
	}
	return err
}

// appendHeader appends the object header.
func appendHeader(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, segMagic)
	b = binary.BigEndian.AppendUint16(b, FormatVersion)
	return binary.BigEndian.AppendUint16(b, 0)
}

// appendFooter appends the encoded footer and the trailer.
func appendFooter(b []byte, f *Footer) []byte {
	be := binary.BigEndian
	start := len(b)
	b = be.AppendUint16(b, footerFixedLenV1)
	b = be.AppendUint16(b, chunkEntryLenV1)
	b = be.AppendUint16(b, epochEntryLenV1)
	b = be.AppendUint16(b, 0) // reserved
	b = be.AppendUint32(b, uint32(len(f.Chunks)))
	b = be.AppendUint32(b, uint32(len(f.Epochs)))
	for _, v := range []int64{f.BaseOffset, f.NextOffset, f.FirstTimestamp, f.MaxTimestamp, f.RawSize, f.Batches, f.Records} {
		b = be.AppendUint64(b, uint64(v))
	}
	for _, c := range f.Chunks {
		for _, v := range []int64{c.FirstOffset, c.NextOffset, c.FirstTimestamp, c.MaxTimestamp, c.RawPos, c.StoredPos} {
			b = be.AppendUint64(b, uint64(v))
		}
		b = be.AppendUint32(b, uint32(c.RawSize))
		b = be.AppendUint32(b, uint32(c.StoredSize))
		b = be.AppendUint32(b, c.StoredCRC)
		b = be.AppendUint32(b, c.RawCRC)
		b = be.AppendUint32(b, uint32(c.Batches))
		b = append(b, byte(c.Codec), 0, 0, 0)
	}
	for _, e := range f.Epochs {
		b = be.AppendUint32(b, uint32(e.Epoch))
		b = be.AppendUint64(b, uint64(e.StartOffset))
	}
	footer := b[start:]
	crc := crc32.Checksum(footer, castagnoli)
	b = be.AppendUint32(b, uint32(len(footer)))
	b = be.AppendUint32(b, crc)
	b = be.AppendUint16(b, FormatVersion)
	b = be.AppendUint16(b, 0) // flags
	return be.AppendUint32(b, segMagic)
}

// trailer is the decoded fixed trailer.
type trailer struct {
	footerLen int64
	footerCRC uint32
	version   int
}

// parseTrailer decodes the trailer at the end of tail and checks that the
// footer it announces fits in an object of objectSize bytes.
func parseTrailer(tail []byte, objectSize int64) (trailer, error) {
	if objectSize < SegmentHeaderSize+SegmentTrailerSize {
		return trailer{}, corruptFooter("object of %d bytes is smaller than header and trailer (%d)", objectSize, SegmentHeaderSize+SegmentTrailerSize)
	}
	if len(tail) < SegmentTrailerSize {
		return trailer{}, corruptFooter("tail of %d bytes holds no %d-byte trailer", len(tail), SegmentTrailerSize)
	}
	if int64(len(tail)) > objectSize {
		return trailer{}, corruptFooter("tail of %d bytes is longer than the object (%d)", len(tail), objectSize)
	}
	t := tail[len(tail)-SegmentTrailerSize:]
	be := binary.BigEndian
	if m := be.Uint32(t[12:]); m != segMagic {
		return trailer{}, corruptFooter("trailer magic %08x, want %08x (not a tierlog segment, or truncated)", m, segMagic)
	}
	tr := trailer{footerLen: int64(be.Uint32(t[0:])), footerCRC: be.Uint32(t[4:]), version: int(be.Uint16(t[8:]))}
	if tr.version < 1 || tr.version > FormatVersion {
		return tr, fmt.Errorf("%w: version %d, this build reads 1 to %d", ErrFormatVersion, tr.version, FormatVersion)
	}
	if limit := objectSize - SegmentHeaderSize - SegmentTrailerSize; tr.footerLen < footerFixedLenV1 || tr.footerLen > limit {
		return tr, corruptFooter("footer length %d is outside [%d, %d] for an object of %d bytes", tr.footerLen, footerFixedLenV1, limit, objectSize)
	}
	return tr, nil
}

// ParseFooter decodes the footer from tail, the last len(tail) bytes of an
// object of objectSize bytes; tail must cover the footer and trailer (64 KiB
// covers the footer of any segment of up to about 900 chunks). It checks
// the footer's CRC and that the chunk table, offsets and sizes are
// consistent with each other and with objectSize, so a reader can trust
// every position it takes from the result.
func ParseFooter(tail []byte, objectSize int64) (*Footer, error) {
	tr, err := parseTrailer(tail, objectSize)
	if err != nil {
		return nil, err
	}
	if need := tr.footerLen + SegmentTrailerSize; int64(len(tail)) < need {
		return nil, fmt.Errorf("cold: tail of %d bytes does not cover the %d-byte footer and trailer", len(tail), need)
	}
	fb := tail[int64(len(tail))-SegmentTrailerSize-tr.footerLen : len(tail)-SegmentTrailerSize]
	if got := crc32.Checksum(fb, castagnoli); got != tr.footerCRC {
		return nil, corruptFooter("footer crc32c mismatch: trailer says %08x, bytes give %08x", tr.footerCRC, got)
	}
	f, err := decodeFooter(fb)
	if err != nil {
		return nil, err
	}
	f.Version = tr.version
	f.ObjectSize = objectSize
	if err := f.check(objectSize - SegmentTrailerSize - tr.footerLen); err != nil {
		return nil, err
	}
	return f, nil
}

// decodeFooter decodes the footer's fields; check validates them.
func decodeFooter(fb []byte) (*Footer, error) {
	be := binary.BigEndian
	fixed, chunkLen, epochLen := int64(be.Uint16(fb[0:])), int64(be.Uint16(fb[2:])), int64(be.Uint16(fb[4:]))
	nChunks, nEpochs := int64(be.Uint32(fb[8:])), int64(be.Uint32(fb[12:]))
	if fixed < footerFixedLenV1 || chunkLen < chunkEntryLenV1 || epochLen < epochEntryLenV1 {
		return nil, corruptFooter("entry sizes %d/%d/%d are below version 1's %d/%d/%d", fixed, chunkLen, epochLen, footerFixedLenV1, chunkEntryLenV1, epochEntryLenV1)
	}
	// All terms are below 2^32·2^16, so the sum cannot overflow int64.
	if need := fixed + nChunks*chunkLen + nEpochs*epochLen; need > int64(len(fb)) {
		return nil, corruptFooter("%d chunks and %d epochs need %d footer bytes, footer has %d", nChunks, nEpochs, need, len(fb))
	}
	i64 := func(b []byte, at int) int64 { return int64(be.Uint64(b[at:])) }
	f := &Footer{
		BaseOffset: i64(fb, 16), NextOffset: i64(fb, 24),
		FirstTimestamp: i64(fb, 32), MaxTimestamp: i64(fb, 40),
		RawSize: i64(fb, 48), Batches: i64(fb, 56), Records: i64(fb, 64),
		Chunks: make([]ChunkInfo, nChunks),
		Epochs: make([]EpochStart, nEpochs),
	}
	p := fb[fixed:]
	for i := range f.Chunks {
		e := p[:chunkLen]
		f.Chunks[i] = ChunkInfo{
			Index:       i,
			FirstOffset: i64(e, 0), NextOffset: i64(e, 8),
			FirstTimestamp: i64(e, 16), MaxTimestamp: i64(e, 24),
			RawPos: i64(e, 32), StoredPos: i64(e, 40),
			RawSize:    int64(be.Uint32(e[48:])),
			StoredSize: int64(be.Uint32(e[52:])),
			StoredCRC:  be.Uint32(e[56:]),
			RawCRC:     be.Uint32(e[60:]),
			Batches:    int64(be.Uint32(e[64:])),
			Codec:      ChunkCodec(e[68]),
		}
		p = p[chunkLen:]
	}
	for i := range f.Epochs {
		f.Epochs[i] = EpochStart{Epoch: int32(be.Uint32(p[0:])), StartOffset: i64(p, 4)}
		p = p[epochLen:]
	}
	return f, nil
}

// check verifies that the footer describes chunks packed back to back from
// the header to chunksEnd, batches in offset order, and totals that add up.
func (f *Footer) check(chunksEnd int64) error {
	if len(f.Chunks) == 0 {
		return corruptFooter("no chunks; a segment holds at least one batch")
	}
	if f.BaseOffset < 0 || f.NextOffset <= f.BaseOffset {
		return corruptFooter("offset range [%d, %d) is empty or negative", f.BaseOffset, f.NextOffset)
	}
	pos, raw, batches, maxTS := int64(SegmentHeaderSize), int64(0), int64(0), int64(math.MinInt64)
	prevNext := f.BaseOffset
	for i, c := range f.Chunks {
		switch {
		case c.StoredPos != pos:
			return corruptFooter("chunk %d stored at %d, the previous chunk ends at %d", i, c.StoredPos, pos)
		case c.RawPos != raw:
			return corruptFooter("chunk %d raw position %d, the previous chunk ends at %d", i, c.RawPos, raw)
		case c.RawSize < 1 || c.StoredSize < 1:
			return corruptFooter("chunk %d has size %d stored, %d raw", i, c.StoredSize, c.RawSize)
		case c.Codec != ChunkRaw && c.Codec != ChunkZstd:
			return corruptFooter("chunk %d has unknown codec %d (valid: 0 raw, 1 zstd)", i, c.Codec)
		case c.Codec == ChunkRaw && c.StoredSize != c.RawSize:
			return corruptFooter("raw chunk %d stores %d bytes of %d", i, c.StoredSize, c.RawSize)
		case c.Batches < 1 || c.Batches > c.RawSize/batch.HeaderSize:
			return corruptFooter("chunk %d claims %d batches in %d bytes", i, c.Batches, c.RawSize)
		case c.FirstOffset < prevNext || c.NextOffset <= c.FirstOffset || (i == 0 && c.FirstOffset != f.BaseOffset):
			return corruptFooter("chunk %d offsets [%d, %d) do not follow %d", i, c.FirstOffset, c.NextOffset, prevNext)
		}
		pos += c.StoredSize
		raw += c.RawSize
		batches += c.Batches
		maxTS = max(maxTS, c.MaxTimestamp)
		prevNext = c.NextOffset
	}
	switch {
	case pos != chunksEnd:
		return corruptFooter("chunks end at %d, the footer starts at %d", pos, chunksEnd)
	case raw != f.RawSize:
		return corruptFooter("chunks hold %d raw bytes, footer says %d", raw, f.RawSize)
	case batches != f.Batches:
		return corruptFooter("chunks hold %d batches, footer says %d", batches, f.Batches)
	case prevNext != f.NextOffset:
		return corruptFooter("last chunk ends at offset %d, footer says %d", prevNext, f.NextOffset)
	case maxTS != f.MaxTimestamp || f.FirstTimestamp != f.Chunks[0].FirstTimestamp:
		return corruptFooter("timestamps do not match the chunk table")
	case f.Records < f.Batches || f.Records > f.NextOffset-f.BaseOffset:
		return corruptFooter("%d records in %d batches over offsets [%d, %d)", f.Records, f.Batches, f.BaseOffset, f.NextOffset)
	case len(f.Epochs) == 0 || f.Epochs[0].StartOffset != f.BaseOffset:
		return corruptFooter("leader epoch table does not start at the base offset")
	}
	for i := 1; i < len(f.Epochs); i++ {
		if s := f.Epochs[i].StartOffset; s <= f.Epochs[i-1].StartOffset || s >= f.NextOffset {
			return corruptFooter("leader epoch entry %d starts at %d, out of order", i, s)
		}
	}
	return nil
}
