package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Byte positions of the RecordBatch v2 header fields. Everything before
// attributesPos (base offset, length, leader epoch, magic, crc) is outside the
// CRC, which is why the leader can assign the base offset and stamp its epoch
// without recomputing the checksum.
const (
	baseOffsetPos      = 0
	lengthPos          = 8
	leaderEpochPos     = 12
	magicPos           = 16
	crcPos             = 17
	attributesPos      = 21
	lastOffsetDeltaPos = 23
	firstTimestampPos  = 27
	maxTimestampPos    = 35
	producerIDPos      = 43
	producerEpochPos   = 51
	baseSequencePos    = 53
	numRecordsPos      = 57

	// HeaderSize is the size of the RecordBatch v2 header, up to the records.
	HeaderSize = 61
	// LengthFieldEnd is the number of bytes that precede the batch length's
	// coverage: a batch occupies LengthFieldEnd + Length bytes in total.
	LengthFieldEnd = 12
	// Magic is the only record batch format stored and served.
	Magic = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the decoded fixed header of one RecordBatch v2.
type Header struct {
	BaseOffset           int64
	Length               int32 // bytes after the length field
	PartitionLeaderEpoch int32
	Magic                int8
	CRC                  uint32
	Attributes           int16
	LastOffsetDelta      int32
	FirstTimestamp       int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	NumRecords           int32
}

// Size is the batch's total size in bytes, header included.
func (h Header) Size() int { return LengthFieldEnd + int(h.Length) }

// LastOffset is the offset of the batch's last record.
func (h Header) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// NextOffset is the offset that follows the batch.
func (h Header) NextOffset() int64 { return h.LastOffset() + 1 }

// Codec is the producer compression kept inside the batch.
func (h Header) Codec() Codec { return Codec(h.Attributes & 0x07) }

// LogAppendTime reports whether the batch's timestamps are the broker's
// append time rather than the producer's create time.
func (h Header) LogAppendTime() bool { return h.Attributes&attrLogAppendTime != 0 }

// Control reports whether the batch is a transaction control batch.
func (h Header) Control() bool { return h.Attributes&attrControl != 0 }

// Transactional reports whether the batch belongs to a transaction (its
// records count only once a commit marker follows).
func (h Header) Transactional() bool { return h.Attributes&attrTransactional != 0 }

// LastSequence is the sequence number of the batch's last record: the
// base sequence plus the last offset delta, wrapping past MaxInt32 to 0
// as Kafka's producers number them.
func (h Header) LastSequence() int32 {
	last := int64(h.BaseSequence) + int64(h.LastOffsetDelta)
	if last > math.MaxInt32 {
		last -= math.MaxInt32 + 1
	}
	return int32(last)
}

// ErrShortBatch means fewer bytes are present than a batch header or its
// declared length needs. At the tail of a segment it marks a torn write.
var ErrShortBatch = errors.New("batch: short batch")

// ErrCorrupt is wrapped by every validation failure other than ErrShortBatch.
var ErrCorrupt = errors.New("batch: corrupt batch")

// ParseHeader decodes the fixed header at the start of b. It checks only that
// the header is present; Validate checks the rest.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrShortBatch, len(b), HeaderSize)
	}
	be := binary.BigEndian
	return Header{
		BaseOffset:           int64(be.Uint64(b[baseOffsetPos:])),
		Length:               int32(be.Uint32(b[lengthPos:])),
		PartitionLeaderEpoch: int32(be.Uint32(b[leaderEpochPos:])),
		Magic:                int8(b[magicPos]),
		CRC:                  be.Uint32(b[crcPos:]),
		Attributes:           int16(be.Uint16(b[attributesPos:])),
		LastOffsetDelta:      int32(be.Uint32(b[lastOffsetDeltaPos:])),
		FirstTimestamp:       int64(be.Uint64(b[firstTimestampPos:])),
		MaxTimestamp:         int64(be.Uint64(b[maxTimestampPos:])),
		ProducerID:           int64(be.Uint64(b[producerIDPos:])),
		ProducerEpoch:        int16(be.Uint16(b[producerEpochPos:])),
		BaseSequence:         int32(be.Uint32(b[baseSequencePos:])),
		NumRecords:           int32(be.Uint32(b[numRecordsPos:])),
	}, nil
}

// Peek decodes the header of the batch at the start of b and checks that the
// declared length is sane and fully present, without checking the CRC. It is
// what a reader walking a segment needs to find the next batch.
func Peek(b []byte) (Header, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, err
	}
	if h.Length < HeaderSize-LengthFieldEnd {
		return h, fmt.Errorf("%w: length %d is below the header size %d", ErrCorrupt, h.Length, HeaderSize-LengthFieldEnd)
	}
	if h.Magic != Magic {
		return h, fmt.Errorf("%w: magic %d, only magic %d (RecordBatch v2) is accepted", ErrCorrupt, h.Magic, Magic)
	}
	if len(b) < h.Size() {
		return h, fmt.Errorf("%w: %d bytes present, batch length says %d", ErrShortBatch, len(b), h.Size())
	}
	return h, nil
}

// Validate checks the batch at the start of b: the length is present and
// sane, the magic is 2, the CRC-32C matches, and the record count agrees with
// the offset delta (and, for uncompressed batches, with the records actually
// framed in the body). It returns the header; b[:h.Size()] is the batch.
func Validate(b []byte) (Header, error) {
	h, err := Peek(b)
	if err != nil {
		return h, err
	}
	body := b[attributesPos:h.Size()]
	if got := crc32.Checksum(body, castagnoli); got != h.CRC {
		return h, fmt.Errorf("%w: crc32c mismatch: header says %08x, bytes give %08x", ErrCorrupt, h.CRC, got)
	}
	if h.NumRecords <= 0 {
		return h, fmt.Errorf("%w: record count %d, a batch holds at least one record", ErrCorrupt, h.NumRecords)
	}
	if h.LastOffsetDelta < h.NumRecords-1 {
		return h, fmt.Errorf("%w: last offset delta %d is below record count %d - 1", ErrCorrupt, h.LastOffsetDelta, h.NumRecords)
	}
	if h.Codec() == None {
		n, err := countFramed(b[HeaderSize:h.Size()])
		if err != nil {
			return h, err
		}
		if n != int(h.NumRecords) {
			return h, fmt.Errorf("%w: header says %d records, body frames %d", ErrCorrupt, h.NumRecords, n)
		}
	} else if h.Codec() > Zstd {
		return h, fmt.Errorf("%w: unknown compression codec %d (valid: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)", ErrCorrupt, h.Codec())
	}
	return h, nil
}

// countFramed counts the varint-length-prefixed records in an uncompressed
// records section and checks that they fill it exactly.
func countFramed(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		l, w := binary.Varint(b)
		if w <= 0 || l < 0 || int64(len(b)-w) < l {
			return n, fmt.Errorf("%w: record %d framing overruns the batch", ErrCorrupt, n)
		}
		b = b[w+int(l):]
		n++
	}
	return n, nil
}

// SetBaseOffset writes the base offset into the batch header. The base offset
// is outside the CRC, so the checksum stays valid.
func SetBaseOffset(b []byte, base int64) {
	binary.BigEndian.PutUint64(b[baseOffsetPos:], uint64(base))
}

// SetLeaderEpoch writes the partition leader epoch, also outside the CRC.
func SetLeaderEpoch(b []byte, epoch int32) {
	binary.BigEndian.PutUint32(b[leaderEpochPos:], uint32(epoch))
}
