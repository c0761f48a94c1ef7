package hot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"testing"

	"github.com/tierlog/tierlog/internal/batch"
)

// Byte positions of the RecordBatch v2 header fields the tests below forge
// (internal/batch/doc.go has the layout).
const (
	crcAt             = 17
	attributesAt      = 21
	lastOffsetDeltaAt = 23
	maxTimestampAt    = 35
)

// refixCRC recomputes the CRC-32C of a batch a test edited, so the log's
// deeper checks are what refuse it.
func refixCRC(b []byte) []byte {
	binary.BigEndian.PutUint32(b[crcAt:], crc32.Checksum(b[attributesAt:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// producerBatch builds a batch of n records whose values are "<tag>-<i>",
// timestamps ts, ts+1, ...
func producerBatch(t testing.TB, tag string, n int, codec batch.Codec, ts int64) []byte {
	t.Helper()
	recs := make([]batch.Record, n)
	for i := range recs {
		recs[i] = batch.Record{Timestamp: ts + int64(i), Key: []byte(tag), Value: fmt.Appendf(nil, "%s-%d", tag, i)}
	}
	b, err := batch.Build(recs, batch.BuildOptions{Codec: codec})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withBody replaces the records section of a built batch and fixes its
// length and CRC: a batch whose header is right and whose records are not.
func withBody(b, body []byte) []byte {
	out := append(append([]byte(nil), b[:batch.HeaderSize]...), body...)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-batch.LengthFieldEnd))
	return refixCRC(out)
}

// readOne returns the record at offset off, or fails.
func readOne(t *testing.T, l *Log, off int64) (batch.Record, error) {
	t.Helper()
	res, err := l.Read(off, 1)
	if err != nil {
		return batch.Record{}, err
	}
	recs, err := batch.DecodeAll(res.Records)
	if err != nil {
		return batch.Record{}, err
	}
	for _, r := range recs {
		if r.Offset == off {
			return r, nil
		}
	}
	return batch.Record{}, fmt.Errorf("read at %d returned offsets %d..%d", off, recs[0].Offset, recs[len(recs)-1].Offset)
}

// The cross-producer corruption: one client sends batches whose last
// offset delta claims ~2^31 offsets for one record, another sends normal
// batches. The gaps overflowed the segment's 32-bit relative index and
// reads at the normal client's acknowledged offsets came back with other
// records. Now the gap batches are refused and every normal record reads
// back at its offset.
func TestGapBatchesCannotCorruptAnotherProducersReads(t *testing.T) {
	cfg := testConfig(FlushOS)
	cfg.SegmentBytes = 1 << 20 // everything in one segment
	cfg.IndexIntervalBytes = 100
	l := openLog(t, t.TempDir(), cfg, Options{})
	defer l.Close()

	// The two clients take turns: four normal batches, then a gap batch.
	var gapErrs []error
	acked := make(map[int64]string)
	for i := range 200 {
		tag := fmt.Sprintf("good%03d", i)
		res, err := l.Append(producerBatch(t, tag, 1, batch.None, 1000))
		if err != nil {
			t.Fatalf("normal append %d: %v", i, err)
		}
		acked[res.BaseOffset] = tag + "-0"
		if i%4 == 3 {
			b := producerBatch(t, "gap", 1, batch.None, 1000)
			binary.BigEndian.PutUint32(b[lastOffsetDeltaAt:], math.MaxInt32-uint32(i))
			if _, err := l.Append(refixCRC(b)); err != nil {
				gapErrs = append(gapErrs, err)
			}
		}
	}

	wrong := 0
	for off, want := range acked {
		r, err := readOne(t, l, off)
		if err != nil || string(r.Value) != want {
			wrong++
			if wrong <= 3 {
				t.Errorf("offset %d: got %q (err %v), want %q", off, r.Value, err, want)
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d acknowledged records read back wrong", wrong, len(acked))
	}
	if len(gapErrs) != 50 {
		t.Errorf("%d of 50 gap batches refused, want all", len(gapErrs))
	}
	for _, err := range gapErrs[:min(1, len(gapErrs))] {
		if !errors.Is(err, ErrCorruptBatch) {
			t.Errorf("gap batch refused with %v, want ErrCorruptBatch", err)
		}
		t.Logf("gap batch: %v", err)
	}
}

// Poison pills: batches whose CRC is right but whose records no consumer
// can read. Each is refused with an error naming the problem, nothing is
// stored, and the log goes on taking good batches.
func TestUnreadableBatchesRefused(t *testing.T) {
	good := func(c batch.Codec) []byte { return producerBatch(t, "ok", 3, c, 1000) }
	compress := func(c batch.Codec, raw []byte) []byte {
		out, err := batch.Compress(c, raw)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// A record whose key length (40) overruns its 6-byte body.
	badRecord := []byte{12, 0, 0, 0, 80, 'a', 'b'}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"zstd payload does not decompress", withBody(good(batch.Zstd), []byte("this is not zstd at all")), "does not decompress"},
		{"gzip payload cut short", func() []byte {
			b := good(batch.Gzip)
			return withBody(b, b[batch.HeaderSize:len(b)-6])
		}(), "does not decompress"},
		{"lz4 garbage", withBody(good(batch.LZ4), []byte{1, 2, 3, 4, 5, 6, 7, 8}), "does not decompress"},
		{"snappy block overruns", withBody(good(batch.Snappy), append([]byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1}, 0, 0, 0, 50, 'a')), "xerial snappy block 0"},
		{"malformed record, gzip", withBody(producerBatch(t, "x", 1, batch.Gzip, 1), compress(batch.Gzip, badRecord)), "key length"},
		{"malformed record, none", withBody(producerBatch(t, "x", 1, batch.None, 1), badRecord), "key length"},
		{"fewer records than counted, zstd", withBody(good(batch.Zstd), compress(batch.Zstd, rawRecord(0, "a"))), "records section holds 1"},
		{"record offset deltas not dense, zstd", func() []byte {
			b := withBody(producerBatch(t, "x", 2, batch.Zstd, 1), compress(batch.Zstd, append(rawRecord(0, "a"), rawRecord(2, "b")...)))
			return b
		}(), "offset delta 2"},
		{"control batch", func() []byte {
			b := good(batch.None)
			b[attributesAt+1] |= 0x20
			return refixCRC(b)
		}(), "control batch"},
	}
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()
	want := int64(0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.Append(c.b)
			if !errors.Is(err, ErrCorruptBatch) {
				t.Fatalf("append: %v, want ErrCorruptBatch", err)
			}
			if !contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			t.Logf("refused: %v", err)
			if end := l.EndOffset(); end != want {
				t.Fatalf("end offset %d after a refused batch, want %d (nothing stored)", end, want)
			}
			res, err := l.Append(good(batch.Zstd))
			if err != nil || res.BaseOffset != want {
				t.Fatalf("good append after the refusal: %+v, %v", res, err)
			}
			want = res.LastOffset + 1
		})
	}
	// Everything stored decodes.
	if recs := readAll(t, l, 0); int64(len(recs)) != want {
		t.Fatalf("read %d records back, want %d", len(recs), want)
	}
}

// rawRecord frames one record at offset delta d with value v, timestamp
// delta 0, a null key and no headers.
func rawRecord(d int64, v string) []byte {
	body := binary.AppendVarint([]byte{0, 0}, d) // attributes, timestamp delta
	body = binary.AppendVarint(body, -1)         // null key
	body = binary.AppendVarint(body, int64(len(v)))
	body = append(body, v...)
	body = append(body, 0) // no headers
	return append(binary.AppendVarint(nil, int64(len(body))), body...)
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// Item 15: a small compressed batch may not expand into more records than
// an uncompressed batch of max.message.bytes could hold.
func TestRecordsPerBatchBounded(t *testing.T) {
	for _, maxBytes := range []int{4096, DefaultConfig().MaxMessageBytes} {
		t.Run(fmt.Sprint(maxBytes), func(t *testing.T) {
			cfg := testConfig(FlushOS)
			cfg.MaxMessageBytes = maxBytes
			cfg.SegmentBytes = 4 << 20
			l := openLog(t, t.TempDir(), cfg, Options{})
			defer l.Close()
			limit := batch.RecordLimit(maxBytes)
			empty := func(n int) []byte {
				recs := make([]batch.Record, n)
				for i := range recs {
					recs[i] = batch.Record{Timestamp: 1000, Value: []byte{}}
				}
				b, err := batch.Build(recs, batch.BuildOptions{Codec: batch.Zstd})
				if err != nil {
					t.Fatal(err)
				}
				if len(b) > maxBytes {
					t.Fatalf("%d empty records compress to %d bytes, over max.message.bytes %d", n, len(b), maxBytes)
				}
				return b
			}
			_, err := l.Append(empty(limit + 1))
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%d records (limit %d): %v, want ErrTooLarge", limit+1, limit, err)
			}
			t.Logf("refused: %v", err)
			if l.EndOffset() != 0 {
				t.Fatalf("end offset %d after the refusal, want 0", l.EndOffset())
			}
			res, err := l.Append(empty(limit))
			if err != nil || res.LastOffset != int64(limit-1) {
				t.Fatalf("%d records (the limit): %+v, %v", limit, res, err)
			}
		})
	}
}

// Item 4: the stored epoch is the log's, whatever the producer sent.
func TestLeaderEpochStampedByTheLog(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushOS), Options{})
	defer l.Close()
	for i := range 40 {
		b := producerBatch(t, "e", 2, batch.Zstd, 1000)
		batch.SetLeaderEpoch(b, int32(3+6*(i%2))) // 3, 9, 3, 9 ...
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
	}
	res, err := l.Read(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for buf := res.Records; len(buf) > 0; n++ {
		h, err := batch.Validate(buf)
		if err != nil {
			t.Fatal(err)
		}
		if h.PartitionLeaderEpoch != 0 {
			t.Fatalf("batch at %d stored with the producer's epoch %d, want the log's 0", h.BaseOffset, h.PartitionLeaderEpoch)
		}
		buf = buf[h.Size():]
	}
	if n != 40 {
		t.Fatalf("read %d batches, want 40", n)
	}
}

// Item 13: a producer's batch with the LogAppendTime bit on a CreateTime
// topic is stored as Kafka stores it - a CreateTime batch whose max
// timestamp is its records' largest - and a CreateTime batch with a wrong
// max timestamp gets the right one (Kafka overwrites it too). Readers then
// see the producer's timestamps and the time index the records' real max.
func TestCreateTimeBatchesKeepProducerTimestamps(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushOS), Options{})
	defer l.Close()

	lat := producerBatch(t, "lat", 3, batch.LZ4, 5000) // records at 5000, 5001, 5002
	lat[attributesAt+1] |= 0x08
	binary.BigEndian.PutUint64(lat[maxTimestampAt:], 9999)
	if _, err := l.Append(refixCRC(lat)); err != nil {
		t.Fatal(err)
	}
	skew := producerBatch(t, "skew", 2, batch.None, 7000) // records at 7000, 7001
	binary.BigEndian.PutUint64(skew[maxTimestampAt:], 1)
	if _, err := l.Append(refixCRC(skew)); err != nil {
		t.Fatal(err)
	}
	noTime := producerBatch(t, "nt", 1, batch.None, -1)
	noTime[attributesAt+1] |= 0x08
	binary.BigEndian.PutUint64(noTime[maxTimestampAt:], math.MaxUint64) // -1
	if _, err := l.Append(refixCRC(noTime)); !errors.Is(err, ErrCorruptBatch) {
		t.Fatalf("LogAppendTime batch without a time: %v, want ErrCorruptBatch (Kafka: INVALID_TIMESTAMP)", err)
	}

	res, err := l.Read(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	h0, err := batch.Validate(res.Records)
	if err != nil {
		t.Fatal(err)
	}
	if h0.LogAppendTime() || h0.MaxTimestamp != 5002 {
		t.Errorf("stored batch: LogAppendTime %v, max timestamp %d; want CreateTime and 5002", h0.LogAppendTime(), h0.MaxTimestamp)
	}
	h1, err := batch.Validate(res.Records[h0.Size():])
	if err != nil {
		t.Fatal(err)
	}
	if h1.MaxTimestamp != 7001 {
		t.Errorf("stored batch max timestamp %d, want the records' 7001", h1.MaxTimestamp)
	}
	recs, err := batch.DecodeAll(res.Records)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{5000, 5001, 5002, 7000, 7001} {
		if recs[i].Timestamp != want {
			t.Errorf("record %d timestamp %d, want the producer's %d", i, recs[i].Timestamp, want)
		}
	}
	if off, err := l.OffsetForTime(7000); err != nil || off != 3 {
		t.Errorf("offset for time 7000: %d, %v; want 3", off, err)
	}
}
