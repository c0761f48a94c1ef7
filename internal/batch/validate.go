package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// attrLogAppendTime and attrControl are the attributes bits of a batch
// stamped with the broker's append time and of a transaction marker.
const (
	attrLogAppendTime = 0x08
	attrControl       = 0x20
)

// ErrTooManyRecords means a batch holds more records than the limit the
// caller set (see RecordLimit).
var ErrTooManyRecords = errors.New("batch: too many records")

// RecordLimit is the most records a batch may hold when batches may be up to
// maxBatchBytes long: as many as an uncompressed batch of that size can
// frame at the smallest record size. Compression then saves bytes on the
// wire but never lets a batch carry more records than its size allows
// uncompressed, so a small compressed batch cannot expand into millions of
// records (1 M empty records fit in an 836 KB zstd batch; decoding them
// costs about 90 bytes each). With Kafka's 1 MiB max.message.bytes the
// limit is 149,789 records.
func RecordLimit(maxBatchBytes int) int {
	return max(1, (maxBatchBytes-HeaderSize)/minRecordSize)
}

// HeaderLimit is the most record headers (all records together) a batch
// may hold when batches may be up to maxBatchBytes long: as many as an
// uncompressed batch of that size can frame at two bytes a header. Like
// RecordLimit it stops a small compressed batch from expanding into
// millions of headers: a header of two bytes decodes to about 40, so 32 M
// of them in a 64 MiB records section made a decoded fetch of one record
// allocate over a gigabyte. With Kafka's 1 MiB max.message.bytes the limit
// is 524,263 headers.
func HeaderLimit(maxBatchBytes int) int {
	return max(1, (maxBatchBytes-HeaderSize)/2)
}

// ProduceOptions say what a leader accepts from a producer. The zero value
// applies only the decompression limit's default.
type ProduceOptions struct {
	// MaxUncompressed caps a compressed records section after
	// decompression; zero or less means DefaultMaxUncompressed.
	MaxUncompressed int
	// MaxRecords caps the batch's record count (see RecordLimit); zero or
	// less means no cap beyond what the bytes allow.
	MaxRecords int
	// MaxHeaders caps the record headers of the whole batch (see
	// HeaderLimit); zero or less means no cap beyond what the bytes allow.
	MaxHeaders int
}

// Produced is what CheckProduced learned about a valid batch.
type Produced struct {
	Header
	// CreateMaxTimestamp is the largest record timestamp read as create
	// time (first timestamp + delta): the max timestamp a CreateTime batch
	// carries.
	CreateMaxTimestamp int64
}

// CheckProduced validates the batch at the start of b the way Kafka's log
// validator checks a client's append, so that nothing a consumer cannot read
// is ever stored: everything Validate checks; the offsets dense (last offset
// delta = record count - 1, record i at offset delta i, which is what keeps
// a batch from claiming offsets it holds no records for); not a control
// batch (only the broker writes transaction markers); a base sequence for a
// producer id; the record count within MaxRecords; the records section
// decompressed within MaxUncompressed; and every record parsed, its fields
// within their lengths. Failures wrap ErrCorrupt, ErrShortBatch,
// ErrTooManyRecords or ErrTooLarge (decompressed size).
func (o ProduceOptions) CheckProduced(b []byte) (Produced, error) {
	h, err := Validate(b)
	if err != nil {
		return Produced{Header: h}, err
	}
	p := Produced{Header: h}
	switch {
	case h.LastOffsetDelta != h.NumRecords-1:
		return p, fmt.Errorf("%w: last offset delta %d with %d records: a producer's batch numbers its records densely, so it must be %d", ErrCorrupt, h.LastOffsetDelta, h.NumRecords, h.NumRecords-1)
	case h.Control():
		return p, fmt.Errorf("%w: control batch (attributes bit 0x20): transaction markers are written by the broker, producers may not send them", ErrCorrupt)
	case h.ProducerID >= 0 && h.BaseSequence < 0:
		return p, fmt.Errorf("%w: base sequence %d with producer id %d: an idempotent producer's batch needs a sequence of 0 or more", ErrCorrupt, h.BaseSequence, h.ProducerID)
	case o.MaxRecords > 0 && int(h.NumRecords) > o.MaxRecords:
		return p, fmt.Errorf("%w: %d in one batch, at most %d are accepted (as many as an uncompressed batch of the size limit can hold); split the batch", ErrTooManyRecords, h.NumRecords, o.MaxRecords)
	}
	// A compressed section is checked as it streams out of the decoder,
	// as Each decodes it, rather than decompressed whole first: an append
	// holds the decoder's window, not up to MaxUncompressed bytes.
	raw := b[HeaderSize:h.Size()]
	var src recordSource = &sectionSource{raw: raw}
	if c := h.Codec(); c != None {
		r, done, err := openStream(c, raw, o.MaxUncompressed)
		if err != nil {
			return p, err
		}
		defer done()
		src = &streamSource{r: r}
	}
	maxDelta, err := walkRecords(h, src, true, o.MaxHeaders, nil)
	if err != nil {
		return p, err
	}
	if (maxDelta > 0 && h.FirstTimestamp > math.MaxInt64-maxDelta) || (maxDelta < 0 && h.FirstTimestamp < math.MinInt64-maxDelta) {
		return p, fmt.Errorf("%w: first timestamp %d + timestamp delta %d overflows int64", ErrCorrupt, h.FirstTimestamp, maxDelta)
	}
	p.CreateMaxTimestamp = h.FirstTimestamp + maxDelta
	return p, nil
}

// SetMaxTimestamp sets the batch's timestamp type (the LogAppendTime
// attribute bit) and max timestamp, as Kafka's setMaxTimestamp does, and
// recomputes the CRC, which covers both. It does nothing when both already
// hold, so the producer's bytes are kept whenever they can be. b must hold
// a whole batch that has been validated.
func SetMaxTimestamp(b []byte, logAppendTime bool, ts int64) {
	be := binary.BigEndian
	attrs := be.Uint16(b[attributesPos:])
	want := attrs &^ attrLogAppendTime
	if logAppendTime {
		want |= attrLogAppendTime
	}
	if attrs == want && int64(be.Uint64(b[maxTimestampPos:])) == ts {
		return
	}
	be.PutUint16(b[attributesPos:], want)
	be.PutUint64(b[maxTimestampPos:], uint64(ts))
	size := LengthFieldEnd + int(int32(be.Uint32(b[lengthPos:])))
	be.PutUint32(b[crcPos:], crc32.Checksum(b[attributesPos:size], castagnoli))
}
