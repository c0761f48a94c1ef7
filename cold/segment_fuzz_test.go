package cold_test

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fuzzObjects are valid objects of a few shapes, to seed the fuzzers.
func fuzzObjects(t testing.TB) [][]byte {
	var out [][]byte
	for _, s := range []segSpec{
		{base: 0, nBatches: 1, recs: 1, size: 10},
		{base: 1 << 40, nBatches: 6, recs: 3, size: 50, epochs: 3},
		{base: 5, nBatches: 4, recs: 2, size: 200, random: true},
		{base: 9, nBatches: 4, recs: 4, size: 100, codec: batch.Zstd},
	} {
		log, _ := buildLog(t, s)
		obj, _ := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 512})
		out = append(out, obj)
	}
	return out
}

// maxFooterFuzzTail bounds the tails FuzzParseFooter parses. The fuzzer
// minimizes every input that finds new coverage before it goes on, and
// minimizing a []byte of n bytes takes about n²/2 + 32n executions: a
// 690-byte tail (the footer of an 8-chunk object, as the seeds once were)
// took ~250,000 executions, tens of seconds at the few thousand per second
// a loaded machine runs, and the run sat at "0/sec" meanwhile. ParseFooter
// itself takes about a microsecond on every input. 272 bytes hold a footer
// of two chunks and two epochs, which reaches every check, with a few
// bytes of the object before it; minimizing one takes ~45,000 executions.
const maxFooterFuzzTail = 272

// footerSeed is one FuzzParseFooter input.
type footerSeed struct {
	tail   []byte
	before uint16
	fix    bool
}

// footerSeeds are the tails of small objects (one or two chunks, one or
// two epochs, raw and zstd chunks): footer and trailer only, the rest of
// the object counted in before. Each comes twice: as is, and with three
// bytes of the object before it and the CRC to be recomputed.
func footerSeeds(t testing.TB) []footerSeed {
	var out []footerSeed
	for _, s := range []segSpec{
		{base: 0, nBatches: 1, recs: 1, size: 10},
		{base: 1 << 40, nBatches: 2, recs: 3, size: 50, epochs: 2},
		{base: 5, nBatches: 2, recs: 2, size: 200, random: true},
		{base: 9, nBatches: 2, recs: 4, size: 100, codec: batch.Zstd},
	} {
		log, _ := buildLog(t, s)
		obj, _ := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 512})
		n := int(binary.BigEndian.Uint32(obj[len(obj)-cold.SegmentTrailerSize:])) + cold.SegmentTrailerSize
		out = append(out,
			footerSeed{obj[len(obj)-n:], uint16(len(obj) - n), false},
			footerSeed{obj[len(obj)-n-3:], uint16(len(obj) - n - 3), true})
	}
	return out
}

// The seeds stay small enough for quick minimization, and still reach
// the footer's shapes: several chunks, several epochs, zstd chunks.
func TestFooterFuzzSeedsAreSmall(t *testing.T) {
	var chunks, epochs, zstd bool
	for i, s := range footerSeeds(t) {
		if len(s.tail) > maxFooterFuzzTail {
			t.Errorf("seed %d is %d bytes, more than the %d the fuzz target parses", i, len(s.tail), maxFooterFuzzTail)
		}
		f, err := cold.ParseFooter(s.tail, int64(len(s.tail))+int64(s.before))
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		chunks = chunks || len(f.Chunks) > 1
		epochs = epochs || len(f.Epochs) > 1
		for _, c := range f.Chunks {
			zstd = zstd || c.Codec == cold.ChunkZstd
		}
	}
	if !chunks || !epochs || !zstd {
		t.Errorf("the seeds lack a footer shape: several chunks %v, several epochs %v, a zstd chunk %v", chunks, epochs, zstd)
	}
}

// FuzzParseFooter feeds ParseFooter object tails. With fix set, the
// harness recomputes the footer CRC in the trailer, so mutations reach the
// structural checks behind it. Whatever it accepts must describe chunks
// that lie inside the object.
func FuzzParseFooter(f *testing.F) {
	for _, s := range footerSeeds(f) {
		f.Add(s.tail, s.before, s.fix)
	}
	f.Fuzz(func(t *testing.T, tail []byte, before uint16, fix bool) {
		if len(tail) > maxFooterFuzzTail {
			return // see maxFooterFuzzTail
		}
		size := int64(len(tail)) + int64(before)
		if fix && len(tail) >= cold.SegmentTrailerSize {
			tr := tail[len(tail)-cold.SegmentTrailerSize:]
			if n := int(binary.BigEndian.Uint32(tr)); n <= len(tail)-cold.SegmentTrailerSize {
				footer := tail[len(tail)-cold.SegmentTrailerSize-n : len(tail)-cold.SegmentTrailerSize]
				binary.BigEndian.PutUint32(tr[4:], crc32.Checksum(footer, castagnoli))
			}
		}
		ft, err := cold.ParseFooter(tail, size)
		if err != nil {
			return
		}
		end := int64(cold.SegmentHeaderSize)
		for i, c := range ft.Chunks {
			if c.Index != i || c.StoredPos != end || c.StoredSize <= 0 || c.RawSize <= 0 {
				t.Fatalf("chunk %d accepted with %+v", i, c)
			}
			end += c.StoredSize
		}
		if end > size-cold.SegmentTrailerSize || ft.NextOffset <= ft.BaseOffset {
			t.Fatalf("footer accepted with chunks ending at %d of %d, offsets [%d, %d)", end, size, ft.BaseOffset, ft.NextOffset)
		}
		if i := ft.ChunkForOffset(ft.NextOffset - 1); i < 0 || i >= len(ft.Chunks) {
			t.Fatalf("last offset maps to chunk %d of %d", i, len(ft.Chunks))
		}
	})
}

// FuzzDecodeChunk feeds DecodeChunk stored bytes under a chunk entry whose
// stored CRC the harness computes (so the decoder itself is exercised).
// Whatever it returns must have the entry's raw size and raw CRC.
func FuzzDecodeChunk(f *testing.F) {
	for _, obj := range fuzzObjects(f) {
		ft, err := cold.ParseFooter(obj, int64(len(obj)))
		if err != nil {
			f.Fatal(err)
		}
		for _, c := range ft.Chunks {
			f.Add(obj[c.StoredPos:c.StoredPos+c.StoredSize], uint32(c.RawSize), uint8(c.Codec), c.RawCRC)
		}
	}
	f.Fuzz(func(t *testing.T, stored []byte, rawSize uint32, codec uint8, rawCRC uint32) {
		c := cold.ChunkInfo{
			Index:      3,
			StoredSize: int64(len(stored)),
			StoredCRC:  crc32.Checksum(stored, castagnoli),
			RawSize:    int64(rawSize % (4 << 20)),
			RawCRC:     rawCRC,
			Codec:      cold.ChunkCodec(codec % 3),
		}
		raw, err := cold.DecodeChunk(stored, c)
		if err != nil {
			return
		}
		if c.Codec == cold.ChunkRaw {
			return // raw chunks are their stored bytes, covered by the stored CRC
		}
		if int64(len(raw)) != c.RawSize || crc32.Checksum(raw, castagnoli) != c.RawCRC {
			t.Fatalf("decoded %d bytes (crc %08x) for an entry of %d bytes (crc %08x)", len(raw), crc32.Checksum(raw, castagnoli), c.RawSize, c.RawCRC)
		}
	})
}
