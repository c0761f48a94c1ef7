package batch

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"
)

// cloneRec copies r's bytes out of the buffer Each lends them from,
// keeping nil and empty apart.
func cloneRec(r Record) Record {
	r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
	if r.Headers != nil {
		hs := make([]RecordHeader, len(r.Headers))
		for i, h := range r.Headers {
			hs[i] = RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)}
		}
		r.Headers = hs
	}
	return r
}

// checkEach: Each, walking the whole batch, accepts what Decode accepts and
// yields the same records.
func checkEach(t *testing.T, opts DecodeOptions, data []byte, want []Record, decodeErr error) {
	t.Helper()
	var got []Record
	_, err := opts.Each(data, func(r Record) bool {
		got = append(got, cloneRec(r))
		return true
	})
	if (err == nil) != (decodeErr == nil) {
		t.Fatalf("Each: %v, Decode: %v", err, decodeErr)
	}
	if err != nil {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("Each yielded %d records, Decode %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("record %d: Each %s, Decode %s", i, describe(got[i]), describe(want[i]))
		}
	}
}

// TestEachStreamsCompressedBatches: Each reads a compressed batch as a
// stream, with records larger than its read buffer, and gives the records
// Decode gives; a limit or a corrupt payload fails it as it fails Decode.
func TestEachStreamsCompressedBatches(t *testing.T) {
	recs := sampleRecords()
	big := bytes.Repeat([]byte("0123456789abcdef"), 20_000) // 320 KiB: past the read buffer
	recs = append(recs, Record{Timestamp: 5, Key: []byte("big"), Value: big}, Record{Timestamp: 6, Value: []byte("after")})
	for _, c := range allCodecs {
		b := mustBuild(t, recs, BuildOptions{Codec: c, BaseOffset: 7})
		_, want, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		checkEach(t, DecodeOptions{}, b, want, nil)
		if c == None {
			continue
		}
		if _, err := (DecodeOptions{MaxUncompressed: 64 << 10}).Each(b, func(Record) bool { return true }); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s with a 64 KiB limit: %v, want ErrTooLarge", c, err)
		}
		// Cut the compressed payload short and fix the batch's framing and
		// CRC: the stream ends early.
		cut := craftRawBatch(c, b[HeaderSize:HeaderSize+(len(b)-HeaderSize)*2/3], int32(len(recs)), int32(len(recs)-1))
		if _, err := (DecodeOptions{}).Each(cut, func(Record) bool { return true }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s cut short: %v, want ErrCorrupt", c, err)
		}
	}
}

// TestEachStopsEarly: a caller that takes one record of a large compressed
// batch does not pay for decompressing all of it, and allocates within
// what EachMemory says it holds.
func TestEachStopsEarly(t *testing.T) {
	const n, size = 100_000, 500
	recs := make([]Record, n)
	v := bytes.Repeat([]byte{'x'}, size)
	for i := range recs {
		recs[i] = Record{Timestamp: 1, Value: v}
	}
	for _, c := range allCodecs[1:] {
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			b := mustBuild(t, recs, BuildOptions{Codec: c})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got := 0
			_, err := DecodeOptions{}.Each(b, func(r Record) bool {
				got++
				return false
			})
			runtime.ReadMemStats(&after)
			if err != nil || got != 1 {
				t.Fatalf("Each: %d records, %v", got, err)
			}
			alloc, charged := after.TotalAlloc-before.TotalAlloc, uint64(EachMemory(b))
			t.Logf("%s: %d bytes compressed, %d decompressed; one record allocated %d KiB, EachMemory %d KiB", c, len(b), n*(size+10), alloc>>10, charged>>10)
			if alloc > charged {
				t.Errorf("one record of a %s batch of %d MB allocated %d KiB, more than EachMemory's %d KiB", c, n*size>>20, alloc>>10, charged>>10)
			}
			if charged > 16<<20 {
				t.Errorf("EachMemory of a %s batch: %d MiB, more than its codec's state needs", c, charged>>20)
			}
		})
	}
}
