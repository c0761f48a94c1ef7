package batch

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"reflect"
	"testing"
)

// fuzzRecords are small so that seeds stay short and mutations reach the
// record fields instead of the middle of a large value.
func fuzzRecords() []Record {
	return []Record{
		{Timestamp: 1000, Key: []byte("k"), Value: []byte("value value value")},
		{Timestamp: 990, Key: nil, Value: nil, Headers: []RecordHeader{{Key: "h", Value: nil}, {Key: "", Value: []byte("x")}}},
		{Timestamp: 1010, Key: []byte{}, Value: []byte("value value value")},
	}
}

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic, and
// whatever it accepts must be a batch that validates and whose records
// survive Build and Decode again. Most mutations break the CRC, so each
// input is also tried with its CRC recomputed, which lets the fuzzer reach
// decompression and record parsing.
func FuzzDecode(f *testing.F) {
	for _, c := range allCodecs {
		b, err := Build(fuzzRecords(), BuildOptions{Codec: c, BaseOffset: 100})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	// A batch with a gap in its offsets, as compaction leaves them, and
	// LogAppendTime set.
	gap := append(rec(vi(5), vi(0), vi(1), []byte("a"), vi(-1), vi(0)), rec(vi(-5), vi(3), vi(-1), vi(1), []byte("b"), vi(0))...)
	g := craftBatch(Zstd, gap, 2, 4)
	g[attributesPos+1] |= 0x08
	fixCRC(g)
	f.Add(g)

	// Base offsets are outside the CRC: one near the top of int64.
	top, err := Build(fuzzRecords(), BuildOptions{BaseOffset: math.MaxInt64 - 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(top)

	opts := DecodeOptions{MaxUncompressed: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, opts, data)
		if len(data) >= HeaderSize {
			fixed := append([]byte(nil), data...)
			end := min(len(fixed), LengthFieldEnd+max(int(int32(binary.BigEndian.Uint32(fixed[lengthPos:]))), 0))
			if end > attributesPos {
				binary.BigEndian.PutUint32(fixed[crcPos:], crc32.Checksum(fixed[attributesPos:end], castagnoli))
			}
			checkDecode(t, opts, fixed)
		}
	})
}

func checkDecode(t *testing.T, opts DecodeOptions, data []byte) {
	h, recs, err := opts.Decode(data)
	if err != nil {
		if recs != nil {
			t.Fatalf("records returned with error %v", err)
		}
		return
	}
	vh, err := Validate(data)
	if err != nil {
		t.Fatalf("Decode accepted a batch Validate rejects: %v", err)
	}
	if vh != h {
		t.Fatalf("Decode header %+v, Validate header %+v", h, vh)
	}
	if len(recs) != int(h.NumRecords) {
		t.Fatalf("%d records, header counts %d", len(recs), h.NumRecords)
	}
	dense := true
	for i, r := range recs {
		if r.Offset < h.BaseOffset || r.Offset > h.LastOffset() || (i > 0 && r.Offset <= recs[i-1].Offset) {
			t.Fatalf("record %d offset %d outside [%d, %d] or not increasing", i, r.Offset, h.BaseOffset, h.LastOffset())
		}
		dense = dense && r.Offset == h.BaseOffset+int64(i)
	}

	again, err := Build(recs, BuildOptions{Codec: h.Codec(), BaseOffset: h.BaseOffset})
	if err != nil {
		t.Fatalf("Build of decoded records: %v", err)
	}
	h2, recs2, err := opts.Decode(again)
	if err != nil {
		t.Fatalf("rebuilt batch does not decode: %v", err)
	}
	if h2.NumRecords != h.NumRecords || h2.BaseOffset != h.BaseOffset {
		t.Fatalf("rebuilt header %+v, original %+v", h2, h)
	}
	for i := range recs {
		want := recs[i]
		if !dense {
			// Build numbers records densely.
			want.Offset = h.BaseOffset + int64(i)
		}
		if !reflect.DeepEqual(recs2[i], want) {
			t.Fatalf("record %d after rebuild:\n got %s\nwant %s", i, describe(recs2[i]), describe(want))
		}
	}
}

// craftBatch is craft without a *testing.T, for fuzz seeding; nil if
// compression fails.
func craftBatch(c Codec, raw []byte, n, lastDelta int32) []byte {
	body, err := Compress(c, raw)
	if err != nil {
		return nil
	}
	b := make([]byte, HeaderSize, HeaderSize+len(body))
	b[magicPos] = Magic
	binary.BigEndian.PutUint16(b[attributesPos:], uint16(c))
	binary.BigEndian.PutUint32(b[lastOffsetDeltaPos:], uint32(lastDelta))
	binary.BigEndian.PutUint32(b[numRecordsPos:], uint32(n))
	b = append(b, body...)
	setLength(b)
	fixCRC(b)
	return b
}
