package batch

import (
	"bytes"
	"errors"
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

// A record's headers decode to about 40 bytes each from 2 bytes on the
// wire, which EachMemory cannot see without decompressing: a tiny zstd
// batch of one record with 32 M empty headers made a decoded fetch of that
// one record allocate over a gigabyte, outside the fetch budget. Producers
// are now held to HeaderLimit (as many headers as an uncompressed batch of
// the size limit could frame), so what Each allocates for a record is
// bounded by that count, and a header bomb is refused before it is stored.
func TestR5EachMemoryHeaderHeavyRecord(t *testing.T) {
	const maxBatch = 1048588
	limit := HeaderLimit(maxBatch)
	opts := ProduceOptions{MaxRecords: RecordLimit(maxBatch), MaxHeaders: limit}

	bomb := mustBuild(t, []Record{{Timestamp: 1, Headers: make([]RecordHeader, limit+1)}}, BuildOptions{Codec: Zstd})
	if _, err := opts.CheckProduced(bomb); !errors.Is(err, ErrTooManyRecords) {
		t.Fatalf("a %d-byte zstd batch of %d headers: %v, want ErrTooManyRecords", len(bomb), limit+1, err)
	}

	hs := make([]RecordHeader, limit)
	rec := Record{Timestamp: 1, Value: []byte("v"), Headers: hs}
	for _, c := range []Codec{None, Gzip, Zstd} {
		b := mustBuild(t, []Record{rec}, BuildOptions{Codec: c})
		if _, err := opts.CheckProduced(b); err != nil {
			t.Fatalf("%s: a batch at the header limit refused: %v", c, err)
		}
		recordSize := uint64(2 * len(hs))
		alloc, charged := eachAlloc(t, b), uint64(EachMemory(b))
		bound := charged + 2*recordSize + 48*uint64(len(hs)) // a read buffer grown to the record, ~40 B a decoded header
		t.Logf("%s: record %d KiB, batch %d KiB: Each allocated %d KiB, EachMemory %d KiB, bound %d KiB", c, recordSize>>10, len(b)>>10, alloc>>10, charged>>10, bound>>10)
		if alloc > bound {
			t.Errorf("%s: one record of %d headers made Each allocate %d KiB, more than the %d KiB its headers account for", c, len(hs), alloc>>10, bound>>10)
		}
	}
}
