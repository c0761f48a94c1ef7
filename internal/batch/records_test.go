package batch

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines: the kgo client in kgo_test.go and
// the fake broker it talks to both start some.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var allCodecs = []Codec{None, Gzip, Snappy, LZ4, Zstd}

// sampleRecords covers what the record format can express: null and empty
// keys and values, headers with null and empty values, timestamps that go
// backwards from the first (negative deltas), and a value large enough to
// span several xerial snappy blocks and LZ4 blocks.
func sampleRecords() []Record {
	big := []byte(strings.Repeat("tiered storage keeps history cheap; ", 6000)) // ~210 KiB
	return []Record{
		{Timestamp: 1_700_000_000_000, Key: []byte("k0"), Value: []byte("v0")},
		{Timestamp: 1_700_000_000_005, Key: nil, Value: []byte("null key")},
		{Timestamp: 1_699_999_999_990, Key: []byte{}, Value: nil},
		{Timestamp: 1_700_000_000_100, Key: []byte("h"), Value: []byte{}, Headers: []RecordHeader{
			{Key: "trace", Value: []byte("abc")},
			{Key: "", Value: nil},
			{Key: "empty", Value: []byte{}},
		}},
		{Timestamp: 1_700_000_000_001, Key: []byte("big"), Value: big},
	}
}

// wantDecoded is what decoding a batch built from recs at base must give.
func wantDecoded(recs []Record, base int64) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		r.Offset = base + int64(i)
		out[i] = r
	}
	return out
}

// sameRecords compares records including the nil/empty distinction, which
// reflect.DeepEqual keeps.
func sameRecords(t *testing.T, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("record %d:\n got %s\nwant %s", i, describe(got[i]), describe(want[i]))
		}
	}
}

func describe(r Record) string {
	short := func(b []byte) string {
		if b == nil {
			return "null"
		}
		if len(b) > 20 {
			return fmt.Sprintf("%q…(%d bytes)", b[:20], len(b))
		}
		return fmt.Sprintf("%q", b)
	}
	s := fmt.Sprintf("off=%d ts=%d key=%s value=%s", r.Offset, r.Timestamp, short(r.Key), short(r.Value))
	for _, h := range r.Headers {
		s += fmt.Sprintf(" [%q=%s]", h.Key, short(h.Value))
	}
	return s
}

func mustBuild(t testing.TB, recs []Record, opts BuildOptions) []byte {
	t.Helper()
	b, err := Build(recs, opts)
	if err != nil {
		t.Fatalf("Build(%s): %v", opts.Codec, err)
	}
	return b
}

func TestRoundTripAllCodecs(t *testing.T) {
	recs := sampleRecords()
	for _, c := range allCodecs {
		t.Run(c.String(), func(t *testing.T) {
			b := mustBuild(t, recs, BuildOptions{Codec: c, BaseOffset: 1000})
			h, got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if h.Codec() != c {
				t.Errorf("codec %s, want %s", h.Codec(), c)
			}
			if h.BaseOffset != 1000 || h.LastOffset() != 1004 || h.NumRecords != 5 {
				t.Errorf("offsets: base %d last %d count %d, want 1000, 1004, 5", h.BaseOffset, h.LastOffset(), h.NumRecords)
			}
			if h.FirstTimestamp != recs[0].Timestamp || h.MaxTimestamp != 1_700_000_000_100 {
				t.Errorf("timestamps: first %d max %d, want %d and 1700000000100", h.FirstTimestamp, h.MaxTimestamp, recs[0].Timestamp)
			}
			if h.ProducerID != -1 || h.ProducerEpoch != -1 || h.BaseSequence != -1 || h.PartitionLeaderEpoch != -1 {
				t.Errorf("producer fields %d/%d/%d, leader epoch %d; want all -1", h.ProducerID, h.ProducerEpoch, h.BaseSequence, h.PartitionLeaderEpoch)
			}
			if h.Size() != len(b) {
				t.Errorf("header size %d, built %d bytes", h.Size(), len(b))
			}
			sameRecords(t, got, wantDecoded(recs, 1000))
		})
	}
}

func TestCompressionShrinks(t *testing.T) {
	recs := sampleRecords()
	plain := len(mustBuild(t, recs, BuildOptions{}))
	for _, c := range allCodecs[1:] {
		if n := len(mustBuild(t, recs, BuildOptions{Codec: c})); n >= plain/4 {
			t.Errorf("%s batch is %d bytes, uncompressed %d: the codec did not compress", c, n, plain)
		}
	}
}

func TestBuildProducerAndTransaction(t *testing.T) {
	b := mustBuild(t, sampleRecords()[:2], BuildOptions{
		Codec:         Zstd,
		Producer:      &Producer{ID: 0, Epoch: 3, BaseSequence: 42},
		Transactional: true,
	})
	h, _, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.ProducerID != 0 || h.ProducerEpoch != 3 || h.BaseSequence != 42 {
		t.Errorf("producer %d/%d/%d, want 0/3/42", h.ProducerID, h.ProducerEpoch, h.BaseSequence)
	}
	if h.Attributes&attrTransactional == 0 || h.Control() || h.LogAppendTime() {
		t.Errorf("attributes %#x, want transactional only (plus codec)", h.Attributes)
	}
}

func TestBuildRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		recs []Record
		opts BuildOptions
	}{
		"no records":              {nil, BuildOptions{}},
		"unknown codec":           {sampleRecords()[:1], BuildOptions{Codec: 5}},
		"negative codec":          {sampleRecords()[:1], BuildOptions{Codec: -1}},
		"transaction no producer": {sampleRecords()[:1], BuildOptions{Transactional: true}},
		"offsets overflow":        {sampleRecords()[:2], BuildOptions{BaseOffset: math.MaxInt64}},
	} {
		if _, err := Build(tc.recs, tc.opts); err == nil {
			t.Errorf("%s: Build succeeded, want an error", name)
		}
	}
}

// The leader rewrites the base offset and leader epoch of stored batches;
// both are outside the CRC, so a built batch must still decode afterwards.
func TestSetBaseOffsetKeepsBuiltBatchValid(t *testing.T) {
	recs := sampleRecords()
	b := mustBuild(t, recs, BuildOptions{Codec: LZ4})
	SetBaseOffset(b, 77)
	SetLeaderEpoch(b, 9)
	h, got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.PartitionLeaderEpoch != 9 {
		t.Errorf("leader epoch %d, want 9", h.PartitionLeaderEpoch)
	}
	sameRecords(t, got, wantDecoded(recs, 77))
}

func TestLogAppendTimeStampsEveryRecord(t *testing.T) {
	recs := sampleRecords()
	for _, c := range []Codec{None, Zstd} {
		b := mustBuild(t, recs, BuildOptions{Codec: c})
		// A broker with message.timestamp.type=LogAppendTime sets bit 3
		// and the max timestamp, then recomputes the CRC.
		const appendTime = 1_800_000_000_000
		b[attributesPos+1] |= 0x08
		putInt64(b[maxTimestampPos:], appendTime)
		fixCRC(b)
		_, got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		for i, r := range got {
			if r.Timestamp != appendTime {
				t.Errorf("%s record %d: timestamp %d, want the append time %d", c, i, r.Timestamp, appendTime)
			}
		}
	}
}

func TestDecodeAllConcatenated(t *testing.T) {
	recs := sampleRecords()
	var all []byte
	var want []Record
	next := int64(0)
	for _, c := range allCodecs {
		b := mustBuild(t, recs, BuildOptions{Codec: c, BaseOffset: next})
		all = append(all, b...)
		want = append(want, wantDecoded(recs, next)...)
		next += int64(len(recs))
	}
	got, err := DecodeAll(all)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, want)

	// A fetch response may end in a partial batch: the whole batches
	// before it still come back, with ErrShortBatch.
	got, err = DecodeAll(all[:len(all)-10])
	if !errors.Is(err, ErrShortBatch) {
		t.Fatalf("truncated tail: error %v, want ErrShortBatch", err)
	}
	sameRecords(t, got, want[:len(want)-len(recs)])

	if got, err := DecodeAll(nil); err != nil || len(got) != 0 {
		t.Errorf("DecodeAll(nil) = %d records, %v; want none, nil", len(got), err)
	}
}

// Keys and values of an uncompressed batch alias the input; appending to
// one must not overwrite the bytes that follow it.
func TestDecodedSlicesAreClipped(t *testing.T) {
	b := mustBuild(t, []Record{{Key: []byte("a"), Value: []byte("b")}}, BuildOptions{})
	orig := bytes.Clone(b)
	_, got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got[0].Key, 'X', 'X', 'X')
	if !bytes.Equal(b, orig) {
		t.Fatal("appending to a decoded key changed the batch bytes")
	}
}

func TestDecodeLimit(t *testing.T) {
	recs := sampleRecords() // ~210 KiB uncompressed
	for _, c := range allCodecs[1:] {
		b := mustBuild(t, recs, BuildOptions{Codec: c})
		_, _, err := DecodeOptions{MaxUncompressed: 64 << 10}.Decode(b)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s with a 64 KiB limit: error %v, want ErrTooLarge", c, err)
		}
		if _, _, err := (DecodeOptions{MaxUncompressed: 1 << 20}).Decode(b); err != nil {
			t.Errorf("%s with a 1 MiB limit: %v", c, err)
		}
	}
}

// A decompression bomb: zeros compress by a factor of hundreds or more
// with every codec. Decoding must stop at the default limit (64 MiB)
// instead of allocating whatever the payload expands to. 80 MiB keeps the
// test quick while still exceeding the limit.
func TestDecompressionBomb(t *testing.T) {
	zeros := make([]byte, 80<<20)
	for _, c := range allCodecs[1:] {
		comp, err := Compress(c, zeros)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decompress(c, comp, 0); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s bomb (%d bytes compressed): error %v, want ErrTooLarge", c, len(comp), err)
		}
	}
}

func putInt64(b []byte, v int64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (56 - 8*i))
	}
}
