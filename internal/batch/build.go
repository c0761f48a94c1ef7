package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Producer identifies an idempotent or transactional producer in a batch.
type Producer struct {
	ID           int64
	Epoch        int16
	BaseSequence int32 // sequence number of the batch's first record
}

// BuildOptions says how Build frames a batch. The zero value builds an
// uncompressed batch at offset 0 from a non-idempotent producer.
type BuildOptions struct {
	// Codec compresses the records section.
	Codec Codec
	// BaseOffset is the first record's offset; records are numbered densely
	// from it. A leader assigning offsets can instead call SetBaseOffset on
	// the built batch, which keeps the CRC valid.
	BaseOffset int64
	// Producer stamps the batch with a producer id, epoch and base sequence.
	// Nil writes -1 for all three, as a non-idempotent Kafka producer does;
	// a pointer rather than a value because 0 is a valid producer id.
	Producer *Producer
	// Transactional marks the batch as part of a transaction; it needs a
	// Producer.
	Transactional bool
}

// attrTransactional is the attributes bit of a transactional batch.
const attrTransactional = 0x10

// Build frames recs as one RecordBatch v2 the way a Kafka producer does:
// offsets numbered from opts.BaseOffset (each Record.Offset is ignored),
// timestamps delta-encoded from the first record's, MaxTimestamp the largest
// timestamp, partition leader epoch -1 (the leader stamps it with
// SetLeaderEpoch), the records section compressed with opts.Codec, and the
// CRC-32C computed. It needs at least one record.
func Build(recs []Record, opts BuildOptions) ([]byte, error) {
	if len(recs) == 0 {
		return nil, errors.New("batch: build: no records, a batch holds at least one")
	}
	if len(recs) > math.MaxInt32 {
		return nil, fmt.Errorf("batch: build: %d records, a batch holds at most %d", len(recs), math.MaxInt32)
	}
	if opts.Codec < None || opts.Codec > Zstd {
		return nil, fmt.Errorf("batch: build: %w", errUnknownCodec(opts.Codec))
	}
	if opts.BaseOffset > math.MaxInt64-int64(len(recs)-1) {
		return nil, fmt.Errorf("batch: build: base offset %d + %d records overflows int64", opts.BaseOffset, len(recs))
	}
	if opts.Transactional && opts.Producer == nil {
		return nil, errors.New("batch: build: a transactional batch needs a Producer")
	}

	first, maxTS := recs[0].Timestamp, recs[0].Timestamp
	var raw []byte
	if opts.Codec != None {
		raw = make([]byte, 0, recordsSize(recs, first))
	} else {
		raw = make([]byte, HeaderSize, HeaderSize+recordsSize(recs, first))
	}
	for i := range recs {
		maxTS = max(maxTS, recs[i].Timestamp)
		raw = appendRecord(raw, &recs[i], recs[i].Timestamp-first, int64(i))
	}

	b := raw
	if opts.Codec != None {
		body, err := Compress(opts.Codec, raw)
		if err != nil {
			return nil, fmt.Errorf("batch: build: %w", err)
		}
		b = make([]byte, HeaderSize, HeaderSize+len(body))
		b = append(b, body...)
	}
	if len(b)-LengthFieldEnd > math.MaxInt32 {
		return nil, fmt.Errorf("batch: build: batch of %d bytes exceeds the %d a batch length can state", len(b), math.MaxInt32)
	}

	attrs := uint16(opts.Codec)
	if opts.Transactional {
		attrs |= attrTransactional
	}
	pid, epoch, seq := int64(-1), int16(-1), int32(-1)
	if p := opts.Producer; p != nil {
		pid, epoch, seq = p.ID, p.Epoch, p.BaseSequence
	}
	be := binary.BigEndian
	be.PutUint64(b[baseOffsetPos:], uint64(opts.BaseOffset))
	be.PutUint32(b[lengthPos:], uint32(len(b)-LengthFieldEnd))
	be.PutUint32(b[leaderEpochPos:], math.MaxUint32) // -1: no leader has seen it yet
	b[magicPos] = Magic
	be.PutUint16(b[attributesPos:], attrs)
	be.PutUint32(b[lastOffsetDeltaPos:], uint32(len(recs)-1))
	be.PutUint64(b[firstTimestampPos:], uint64(first))
	be.PutUint64(b[maxTimestampPos:], uint64(maxTS))
	be.PutUint64(b[producerIDPos:], uint64(pid))
	be.PutUint16(b[producerEpochPos:], uint16(epoch))
	be.PutUint32(b[baseSequencePos:], uint32(seq))
	be.PutUint32(b[numRecordsPos:], uint32(len(recs)))
	be.PutUint32(b[crcPos:], crc32.Checksum(b[attributesPos:], castagnoli))
	return b, nil
}

// recordsSize is the exact size of the framed records, so Build allocates
// once.
func recordsSize(recs []Record, first int64) int {
	n := 0
	for i := range recs {
		body := recordBodySize(&recs[i], recs[i].Timestamp-first, int64(i))
		n += varintLen(int64(body)) + body
	}
	return n
}

// recordBodySize is the size of a record after its length varint.
func recordBodySize(r *Record, tsDelta, offDelta int64) int {
	n := 1 + varintLen(tsDelta) + varintLen(offDelta) + bytesLen(r.Key) + bytesLen(r.Value) + varintLen(int64(len(r.Headers)))
	for _, h := range r.Headers {
		n += varintLen(int64(len(h.Key))) + len(h.Key) + bytesLen(h.Value)
	}
	return n
}

// appendRecord appends one framed record: length, attributes (0), timestamp
// delta, offset delta, key, value, headers. Lengths are zigzag varints and
// -1 marks a null key or value.
func appendRecord(dst []byte, r *Record, tsDelta, offDelta int64) []byte {
	dst = binary.AppendVarint(dst, int64(recordBodySize(r, tsDelta, offDelta)))
	dst = append(dst, 0)
	dst = binary.AppendVarint(dst, tsDelta)
	dst = binary.AppendVarint(dst, offDelta)
	dst = appendBytes(dst, r.Key)
	dst = appendBytes(dst, r.Value)
	dst = binary.AppendVarint(dst, int64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendVarint(dst, int64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendBytes(dst, h.Value)
	}
	return dst
}

func appendBytes(dst, v []byte) []byte {
	if v == nil {
		return binary.AppendVarint(dst, -1)
	}
	return append(binary.AppendVarint(dst, int64(len(v))), v...)
}

func bytesLen(v []byte) int {
	if v == nil {
		return varintLen(-1)
	}
	return varintLen(int64(len(v))) + len(v)
}

// varintLen is the size of v as a zigzag varint.
func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}
