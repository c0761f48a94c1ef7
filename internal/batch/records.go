package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// RecordHeader is one user header of a record. Kafka forbids a null header
// key, so Key is a plain string; a nil Value is a null value.
type RecordHeader struct {
	Key   string
	Value []byte
}

// Record is one decoded record with its absolute offset and timestamp.
type Record struct {
	Offset    int64
	Timestamp int64  // Unix milliseconds
	Key       []byte // nil is a null key, distinct from an empty one
	Value     []byte // nil is a null value (a tombstone)
	Headers   []RecordHeader
}

// minRecordSize is the smallest framed record: length, attributes, timestamp
// delta, offset delta, key length, value length and header count, one byte
// each. It bounds how many records a records section of n bytes can hold, so
// a lying record count cannot make Decode allocate more than the input
// justifies.
const minRecordSize = 7

// headerArenaChunk is how many record headers Decode allocates at a time.
const headerArenaChunk = 256

// DecodeOptions tunes decoding. The zero value is ready to use.
type DecodeOptions struct {
	// MaxUncompressed caps the size of a compressed batch's records section
	// after decompression; zero or less means DefaultMaxUncompressed. A
	// larger section fails with ErrTooLarge.
	MaxUncompressed int
}

// Decode decodes the one batch at the start of b with default options. See
// DecodeOptions.Decode.
func Decode(b []byte) (Header, []Record, error) { return DecodeOptions{}.Decode(b) }

// DecodeAll decodes concatenated batches with default options. See
// DecodeOptions.DecodeAll.
func DecodeAll(b []byte) ([]Record, error) { return DecodeOptions{}.DecodeAll(b) }

// Decode validates the batch at the start of b (see Validate), decompresses
// its records section and decodes every record. Records carry absolute
// offsets (base offset + delta) and timestamps (first timestamp + delta, or
// the batch's max timestamp for every record when the batch is stamped with
// LogAppendTime). Bytes after the batch are ignored.
//
// For an uncompressed batch, keys, values and header values alias b; copy
// them if b will be reused. Every failure wraps ErrShortBatch, ErrCorrupt or
// ErrTooLarge.
func (o DecodeOptions) Decode(b []byte) (Header, []Record, error) {
	h, err := Validate(b)
	if err != nil {
		return h, nil, err
	}
	if h.BaseOffset > math.MaxInt64-int64(h.LastOffsetDelta) {
		// The base offset is outside the CRC, so only this check stands
		// between a flipped bit there and offsets that wrap negative.
		return h, nil, fmt.Errorf("%w: base offset %d + last offset delta %d overflows int64", ErrCorrupt, h.BaseOffset, h.LastOffsetDelta)
	}
	raw := b[HeaderSize:h.Size()]
	if c := h.Codec(); c != None {
		raw, err = Decompress(c, raw, o.MaxUncompressed)
		if err != nil {
			return h, nil, err
		}
	}
	recs, err := parseRecords(h, raw)
	if err != nil {
		return h, nil, err
	}
	return h, recs, nil
}

// DecodeAll decodes the concatenated batches in b, as a fetch response or a
// segment file holds them, and returns all their records in order. If b ends
// in a partial batch (a fetch response may, when the broker cut it at the
// byte limit), DecodeAll returns the records of the whole batches before it
// together with an error wrapping ErrShortBatch; any other failure returns
// the records decoded so far and an error naming the batch's position.
func (o DecodeOptions) DecodeAll(b []byte) ([]Record, error) {
	var all []Record
	for pos := 0; pos < len(b); {
		h, recs, err := o.Decode(b[pos:])
		if err != nil {
			return all, fmt.Errorf("batch at byte %d: %w", pos, err)
		}
		all = append(all, recs...)
		pos += h.Size()
	}
	return all, nil
}

// parseRecords decodes the h.NumRecords records framed in raw, the
// uncompressed records section. See walkRecords for what it checks.
func parseRecords(h Header, raw []byte) ([]Record, error) {
	recs := make([]Record, 0, min(int(h.NumRecords), len(raw)/minRecordSize))
	_, err := walkRecords(h, &sectionSource{raw: raw}, false, 0, func(r Record) bool {
		recs = append(recs, r)
		return true
	})
	if err != nil {
		return nil, err
	}
	return recs, nil
}

// recordSource hands walkRecords the framed records of a records section
// one at a time: an uncompressed section in memory (sectionSource) or a
// compressed one decompressed as it is read (streamSource).
type recordSource interface {
	// next returns the body of the next record (the bytes after its
	// length) and the width of its length varint, or io.EOF at the end of
	// the section. A length that runs past the section is errOverrun. The
	// body stays valid until the next call.
	next() (body []byte, w int, err error)
}

// errOverrun is a record length that runs past the records section.
var errOverrun = errors.New("length overruns the records section")

// sectionSource is a recordSource over an uncompressed records section.
type sectionSource struct{ raw []byte }

func (s *sectionSource) next() ([]byte, int, error) {
	if len(s.raw) == 0 {
		return nil, 0, io.EOF
	}
	l, w := binary.Varint(s.raw)
	if w <= 0 || l < 0 || l > int64(len(s.raw)-w) {
		return nil, w, errOverrun
	}
	body := s.raw[w : w+int(l)]
	s.raw = s.raw[w+int(l):]
	return body, w, nil
}

// walkRecords walks the h.NumRecords records that src frames, the
// uncompressed records section, and checks what Kafka's own reader checks: each record's
// fields fill exactly its declared length, lengths are in range, header keys
// are not null, and the section holds exactly the records the header counts.
// It also requires offset deltas to increase and stay within the batch's
// last offset delta, so offsets increase and stay inside the range the
// header promises; gaps, as compaction leaves them, are allowed unless dense
// is set, when record i must have offset delta i (a producer's batch). With
// dense it also applies Kafka's reader rule that a 32-bit varint takes at
// most 5 bytes: Kafka (ByteUtils.readVarint) and franz-go refuse longer
// encodings, which Go's binary.Varint accepts, so a batch holding one would
// be stored and then unreadable by every Kafka client.
//
// Each decoded record goes to yield, and the walk stops early (without the
// checks that need the whole section) when yield returns false. With a nil
// yield it only checks, allocating nothing per record (the append path).
// It returns the largest timestamp delta, from which the batch's
// create-time max timestamp follows. maxHeaders > 0 caps the headers of
// all records together (a producer's batch, see HeaderLimit).
func walkRecords(h Header, src recordSource, dense bool, maxHeaders int, yield func(Record) bool) (int64, error) {
	var arena *[]RecordHeader
	if yield != nil {
		arena = new([]RecordHeader)
	}
	lastDelta, maxTsDelta := int64(-1), int64(math.MinInt64)
	n, headers := 0, 0
	for ; ; n++ {
		body, w, err := src.next()
		if err == io.EOF {
			break
		}
		if n == int(h.NumRecords) {
			return 0, fmt.Errorf("%w: records section holds more than the %d records the header counts", ErrCorrupt, h.NumRecords)
		}
		if dense && w > maxVarint32Len {
			return 0, fmt.Errorf("%w: record %d: length takes %d varint bytes, Kafka reads at most %d", ErrCorrupt, n, w, maxVarint32Len)
		}
		if errors.Is(err, errOverrun) {
			return 0, fmt.Errorf("%w: record %d: %v", ErrCorrupt, n, err)
		}
		if err != nil {
			return 0, err // the codec's stream failed: already says what and why
		}
		r, delta, nh, err := parseRecord(body, arena, dense)
		if err != nil {
			return 0, fmt.Errorf("%w: record %d: %s", ErrCorrupt, n, err)
		}
		if headers += nh; maxHeaders > 0 && headers > maxHeaders {
			return 0, fmt.Errorf("%w: more than %d record headers in one batch (as many as an uncompressed batch of the size limit can hold); split the batch", ErrTooManyRecords, maxHeaders)
		}
		if dense && delta != int64(n) {
			return 0, fmt.Errorf("%w: record %d: offset delta %d, a producer numbers the records of a batch 0, 1, 2, ... so it must be %d", ErrCorrupt, n, delta, n)
		}
		if delta <= lastDelta || delta > int64(h.LastOffsetDelta) {
			return 0, fmt.Errorf("%w: record %d: offset delta %d, want above %d and at most the last offset delta %d", ErrCorrupt, n, delta, lastDelta, h.LastOffsetDelta)
		}
		lastDelta = delta
		maxTsDelta = max(maxTsDelta, r.Timestamp)
		if yield == nil {
			continue
		}
		r.Offset = h.BaseOffset + delta
		if h.LogAppendTime() {
			r.Timestamp = h.MaxTimestamp
		} else {
			r.Timestamp += h.FirstTimestamp
		}
		if !yield(r) {
			return maxTsDelta, nil
		}
	}
	if n != int(h.NumRecords) {
		return 0, fmt.Errorf("%w: header counts %d records, records section holds %d", ErrCorrupt, h.NumRecords, n)
	}
	return maxTsDelta, nil
}

// parseRecord decodes one record body (everything after its length). The
// returned record holds the raw timestamp delta; the caller makes it
// absolute. Headers are carved from *arena, refilled in chunks, so a batch
// costs a few header allocations rather than one per record; a nil arena
// checks the headers without keeping them. Errors are plain descriptions
// for the caller to wrap.
func parseRecord(b []byte, arena *[]RecordHeader, strict bool) (Record, int64, int, error) {
	d := recordReader{b: b, strict: strict}
	var r Record
	if len(d.b) < 1 {
		return r, 0, 0, fmt.Errorf("attributes missing")
	}
	d.b = d.b[1:] // record attributes: unused by Kafka so far
	r.Timestamp = d.varint(math.MinInt64, math.MaxInt64, "timestamp delta")
	delta := d.varint(0, math.MaxInt32, "offset delta")
	r.Key = d.bytes("key length", true)
	r.Value = d.bytes("value length", true)
	nh := d.varint(0, math.MaxInt32, "header count")
	if d.err == nil && nh > int64(len(d.b)/2) {
		// A header takes at least two bytes (two lengths).
		d.err = fmt.Errorf("header count %d does not fit in the %d bytes left", nh, len(d.b))
	}
	if d.err == nil && nh > 0 && arena == nil {
		for range nh {
			d.bytes("header key length", false)
			d.bytes("header value length", true)
		}
	} else if d.err == nil && nh > 0 {
		if int64(cap(*arena)-len(*arena)) < nh {
			*arena = make([]RecordHeader, 0, max(nh, headerArenaChunk))
		}
		n := len(*arena)
		*arena = (*arena)[:n+int(nh)]
		r.Headers = (*arena)[n : n+int(nh) : n+int(nh)]
		for i := range r.Headers {
			k := d.bytes("header key length", false)
			r.Headers[i] = RecordHeader{Key: string(k), Value: d.bytes("header value length", true)}
		}
	}
	if d.err != nil {
		return r, 0, 0, d.err
	}
	if len(d.b) != 0 {
		return r, 0, 0, fmt.Errorf("%d bytes left over after the headers", len(d.b))
	}
	return r, delta, int(nh), nil
}

// maxVarint32Len is the most bytes Kafka reads for a 32-bit varint.
const maxVarint32Len = 5

// recordReader reads the zigzag varints and varint-length byte strings of
// a record body. The first failure sticks and later reads return zero
// values, so parseRecord checks once at the end. With strict, a 32-bit
// field (every one but the timestamp delta) may take at most
// maxVarint32Len bytes, as Kafka's reader requires.
type recordReader struct {
	b      []byte
	err    error
	strict bool
}

func (d *recordReader) varint(lo, hi int64, what string) int64 {
	if d.err != nil {
		return 0
	}
	v, w := binary.Varint(d.b)
	if w <= 0 {
		d.err = fmt.Errorf("%s: truncated or overlong varint", what)
		return 0
	}
	if d.strict && hi <= math.MaxInt32 && w > maxVarint32Len {
		d.err = fmt.Errorf("%s takes %d varint bytes, Kafka reads at most %d", what, w, maxVarint32Len)
		return 0
	}
	if v < lo || v > hi {
		d.err = fmt.Errorf("%s %d out of range [%d, %d]", what, v, lo, hi)
		return 0
	}
	d.b = d.b[w:]
	return v
}

// bytes reads a varint length and that many bytes; length -1 is null (nil)
// when nullable. what names the length field in errors; it is passed whole
// rather than built here so the happy path does not allocate. The result's capacity is clipped so a caller appending to
// it cannot overwrite the bytes that follow.
func (d *recordReader) bytes(what string, nullable bool) []byte {
	lo := int64(0)
	if nullable {
		lo = -1
	}
	n := d.varint(lo, math.MaxInt32, what)
	if d.err != nil || n < 0 {
		return nil
	}
	if n > int64(len(d.b)) {
		d.err = fmt.Errorf("%s %d overruns the record (%d bytes left)", what, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}
