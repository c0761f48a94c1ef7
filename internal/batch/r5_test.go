package batch

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// eachAlloc runs Each over b, taking only its first record, and returns
// the bytes that allocated.
func eachAlloc(t *testing.T, b []byte) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC() // twice: empties the decoders' block pools too
	runtime.ReadMemStats(&before)
	got := 0
	_, err := DecodeOptions{}.Each(b, func(Record) bool { got++; return false })
	runtime.ReadMemStats(&after)
	if err != nil || got != 1 {
		t.Fatalf("Each: %d records, %v", got, err)
	}
	return after.TotalAlloc - before.TotalAlloc
}

func encodeLZ4Frame(t *testing.T, raw []byte, size lz4.BlockSize) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if err := w.Apply(lz4.BlockSizeOption(size)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestR5EachMemoryCountsEveryLZ4Frame: an LZ4 payload of two frames, the
// first with 64 KiB blocks and the second with 4 MiB blocks (both are
// valid LZ4 and Decode reads them), makes Each hold two 4 MiB blocks, but
// EachMemory reads only the first frame's descriptor and says 256 KiB.
func TestR5EachMemoryCountsEveryLZ4Frame(t *testing.T) {
	recs := make([]Record, 20_000)
	for i := range recs {
		recs[i] = Record{Timestamp: int64(i), Key: []byte("k"), Value: bytes.Repeat([]byte{byte(i)}, 100)}
	}
	raw := mustBuild(t, recs, BuildOptions{})[HeaderSize:]
	body := append(encodeLZ4Frame(t, raw[:1000], lz4.Block64Kb), encodeLZ4Frame(t, raw[1000:], lz4.Block4Mb)...)
	n := int32(len(recs))
	b := craftRawBatch(LZ4, body, n, n-1)
	_, want, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	checkEach(t, DecodeOptions{}, b, want, nil)
	alloc, charged := eachAlloc(t, b), uint64(EachMemory(b))
	if alloc > charged {
		t.Errorf("first record of a two-frame LZ4 batch (64 KiB then 4 MiB blocks) allocated %d KiB, EachMemory says %d KiB", alloc>>10, charged>>10)
	}
}

// TestR5EachMemoryHeaderHeavyRecord: Each of a batch whose one record
// carries many empty headers (2 bytes each in the record, 40 in the
// decoded []RecordHeader) allocates some 20 times the record's size,
// beyond both EachMemory and the record-sized read buffer it documents.
// A producer can send such a batch raw; at the 64 MiB decompression limit
// the one record decodes to over a gigabyte, none of it charged to the
// fetch budget.
func TestR5EachMemoryHeaderHeavyRecord(t *testing.T) {
	hs := make([]RecordHeader, 200_000)
	rec := Record{Timestamp: 1, Value: []byte("v"), Headers: hs}
	for _, c := range []Codec{None, Gzip, Zstd} {
		b := mustBuild(t, []Record{rec}, BuildOptions{Codec: c})
		recordSize := uint64(2 * len(hs))
		alloc, charged := eachAlloc(t, b), uint64(EachMemory(b))
		t.Logf("%s: record %d KiB, batch %d KiB: Each allocated %d KiB, EachMemory %d KiB", c, recordSize>>10, len(b)>>10, alloc>>10, charged>>10)
		// Allowed: EachMemory, plus a read buffer grown (by doubling) to the record.
		if alloc > charged+2*recordSize {
			t.Errorf("%s: one record of %d KiB (%d headers) made Each allocate %d KiB: more than EachMemory (%d KiB) plus twice the record", c, recordSize>>10, len(hs), alloc>>10, charged>>10)
		}
	}
}
