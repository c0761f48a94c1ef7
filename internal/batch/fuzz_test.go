package batch

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"reflect"
	"runtime"
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

	// A zstd frame declaring far more content than the limit: it used to
	// cost a 64 MiB allocation per try (see TestZstdDeclaredSizeCheckedFirst).
	f.Add(craftRawBatch(Zstd, zstdFrameDeclaring(64<<20, 'x'), 1, 0))

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
	checkEach(t, opts, data, recs, err)
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

// zstdFrameDeclaring is a single-segment zstd frame whose header declares
// fcs bytes of content and whose one raw block holds the single byte c.
func zstdFrameDeclaring(fcs uint32, c byte) []byte {
	return []byte{0x28, 0xb5, 0x2f, 0xfd, 0xa0, // magic; single segment, 4-byte content size
		byte(fcs), byte(fcs >> 8), byte(fcs >> 16), byte(fcs >> 24),
		0x09, 0x00, 0x00, c} // last raw block of 1 byte
}

// TestZstdDeclaredSizeCheckedFirst is FuzzDecode's slow input: a 13-byte
// zstd frame whose header declares 64 MiB of content. The streaming decoder
// sized its window from that before finding the frame short, so each try
// allocated 64 MiB (tens of ms: the fuzzer sat at 0 execs/sec), and a
// producer could make every append do the same. Decompress must refuse it
// from the header, allocating next to nothing, also when the big frame
// follows a small valid one.
func TestZstdDeclaredSizeCheckedFirst(t *testing.T) {
	small, err := Compress(Zstd, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	for name, payload := range map[string][]byte{
		"one frame":          zstdFrameDeclaring(64<<20, 'x'),
		"after a good frame": append(small, zstdFrameDeclaring(64<<20, 'x')...),
		"frames adding up":   append(zstdFrameDeclaring(600<<10, 'x'), zstdFrameDeclaring(600<<10, 'y')...),
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Decompress(Zstd, payload, 1<<20)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("error %v, want ErrTooLarge (the frames declare more than the 1 MiB limit)", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 256<<10 {
				t.Errorf("refusing the frame allocated %d bytes, want under 256 KiB", n)
			}
		})
	}
	// A frame whose declared size fits still decodes.
	if out, err := Decompress(Zstd, append(small, zstdFrameDeclaring(1, 'x')...), 1<<20); err != nil || string(out) != "hellox" {
		t.Fatalf("two fitting frames: %q, %v", out, err)
	}
}

// craftRawBatch frames an already compressed records section.
func craftRawBatch(c Codec, body []byte, n, lastDelta int32) []byte {
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

// craftBatch is craft without a *testing.T, for fuzz seeding; nil if
// compression fails.
func craftBatch(c Codec, raw []byte, n, lastDelta int32) []byte {
	body, err := Compress(c, raw)
	if err != nil {
		return nil
	}
	return craftRawBatch(c, body, n, lastDelta)
}
