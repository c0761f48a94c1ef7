package cold_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// segSpec describes a hot segment to build: nBatches batches of recs
// records of size bytes each, from offset base, with the given codec.
type segSpec struct {
	base     int64
	nBatches int
	recs     int
	size     int
	codec    batch.Codec
	random   bool  // incompressible values
	ts       int64 // first timestamp; batch k starts at ts + 1000k
	epochs   int   // leader epoch changes every nBatches/epochs batches
}

// buildLog returns the .log bytes of a segment and its batches' headers.
func buildLog(t testing.TB, s segSpec) ([]byte, []batch.Header) {
	t.Helper()
	var log []byte
	var hs []batch.Header
	rng := rand.New(rand.NewPCG(uint64(s.base), uint64(s.nBatches)))
	off := s.base
	for k := range s.nBatches {
		ts := s.ts + int64(k)*1000
		var b []byte
		if s.codec == batch.None && !s.random {
			b = testutil.Batch(t, off, s.recs, s.size, ts)
		} else {
			recs := make([]batch.Record, s.recs)
			for j := range recs {
				v := testutil.Value(off+int64(j), s.size)
				if s.random {
					v = make([]byte, s.size)
					for x := range v {
						v[x] = byte(rng.Uint32())
					}
				}
				// Timestamps jump around inside a batch, as CreateTime does.
				recs[j] = batch.Record{Timestamp: ts + int64((j*7)%5), Key: fmt.Appendf(nil, "k%d", off+int64(j)), Value: v}
			}
			var err error
			if b, err = batch.Build(recs, batch.BuildOptions{Codec: s.codec}); err != nil {
				t.Fatal(err)
			}
		}
		batch.SetBaseOffset(b, off)
		epoch := int32(0)
		if s.epochs > 0 {
			epoch = int32(k * s.epochs / s.nBatches)
		}
		batch.SetLeaderEpoch(b, epoch)
		h, err := batch.Validate(b)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
		log = append(log, b...)
		off = h.NextOffset()
	}
	return log, hs
}

// writeObject runs WriteSegment and returns the object bytes.
func writeObject(t testing.TB, log []byte, opts cold.SegmentOptions) ([]byte, *cold.Footer) {
	t.Helper()
	var obj bytes.Buffer
	f, err := cold.WriteSegment(&obj, bytes.NewReader(log), opts)
	if err != nil {
		t.Fatal(err)
	}
	return obj.Bytes(), f
}

// decodeAll checks the object's footer and chunks and returns the batches.
func decodeAll(t testing.TB, obj []byte) ([]byte, *cold.Footer) {
	t.Helper()
	f, err := cold.ParseFooter(obj[max(0, len(obj)-cold.FooterTailBytes):], int64(len(obj)))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, c := range f.Chunks {
		raw, err := cold.DecodeChunk(obj[c.StoredPos:c.StoredPos+c.StoredSize], c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw...)
	}
	return out, f
}

func TestWriteSegmentRoundTripAllCodecs(t *testing.T) {
	for _, codec := range []batch.Codec{batch.None, batch.Gzip, batch.Snappy, batch.LZ4, batch.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			log, hs := buildLog(t, segSpec{base: 1000, nBatches: 60, recs: 20, size: 300, codec: codec, ts: 1_700_000_000_000, epochs: 3})
			chunkBytes := len(log) / 5
			obj, wf := writeObject(t, log, cold.SegmentOptions{ChunkBytes: chunkBytes})
			got, f := decodeAll(t, obj)
			if !bytes.Equal(got, log) {
				t.Fatalf("decoded %d bytes differ from the %d-byte segment", len(got), len(log))
			}
			if wf.ObjectSize != int64(len(obj)) || wf.SHA256 != sha256.Sum256(obj) {
				t.Fatalf("writer reports size %d sha %x, object is %d bytes sha %x", wf.ObjectSize, wf.SHA256, len(obj), sha256.Sum256(obj))
			}
			last := hs[len(hs)-1]
			var records, maxTS int64
			for _, h := range hs {
				records += int64(h.NumRecords)
				maxTS = max(maxTS, h.MaxTimestamp)
			}
			want := cold.Footer{Version: cold.FormatVersion, BaseOffset: 1000, NextOffset: last.NextOffset(),
				FirstTimestamp: hs[0].FirstTimestamp, MaxTimestamp: maxTS, RawSize: int64(len(log)),
				Batches: int64(len(hs)), Records: records}
			gotHead := *f
			gotHead.Chunks, gotHead.Epochs, gotHead.ObjectSize, gotHead.SHA256 = nil, nil, 0, [32]byte{}
			if fmt.Sprintf("%+v", gotHead) != fmt.Sprintf("%+v", want) {
				t.Fatalf("footer\n got %+v\nwant %+v", gotHead, want)
			}
			if len(f.Chunks) < 2 {
				t.Fatalf("%d chunks; the test wants several", len(f.Chunks))
			}
			wantEpochs := []cold.EpochStart{{0, hs[0].BaseOffset}, {1, hs[20].BaseOffset}, {2, hs[40].BaseOffset}}
			if fmt.Sprint(f.Epochs) != fmt.Sprint(wantEpochs) {
				t.Fatalf("epochs %v, want %v", f.Epochs, wantEpochs)
			}
			if e := f.EpochAt(hs[25].BaseOffset + 1); e != 1 {
				t.Fatalf("EpochAt in the second third: %d, want 1", e)
			}
			checkChunkTable(t, f, log, hs, chunkBytes)
		})
	}
}

// checkChunkTable checks every chunk entry against the batches it covers:
// chunks start at batch boundaries, stay within chunkBytes unless a single
// batch is larger, and carry the right offsets and timestamps.
func checkChunkTable(t *testing.T, f *cold.Footer, log []byte, hs []batch.Header, chunkBytes int) {
	t.Helper()
	pos, k := int64(0), 0
	for i, c := range f.Chunks {
		if c.Index != i || c.RawPos != pos {
			t.Fatalf("chunk %d: index %d raw pos %d, want %d", i, c.Index, c.RawPos, pos)
		}
		first := hs[k]
		var n, maxTS int64
		var next int64
		for n < c.RawSize {
			h := hs[k]
			n += int64(h.Size())
			maxTS, next = max(maxTS, h.MaxTimestamp), h.NextOffset()
			k++
		}
		if n != c.RawSize {
			t.Fatalf("chunk %d of %d bytes does not end at a batch boundary", i, c.RawSize)
		}
		if c.RawSize > int64(chunkBytes) && c.Batches != 1 {
			t.Fatalf("chunk %d has %d bytes in %d batches, over the %d target", i, c.RawSize, c.Batches, chunkBytes)
		}
		if i+1 < len(f.Chunks) && c.RawSize+int64(hs[k].Size()) <= int64(chunkBytes) {
			t.Fatalf("chunk %d was cut early: %d bytes, the next batch of %d fits in %d", i, c.RawSize, hs[k].Size(), chunkBytes)
		}
		if c.FirstOffset != first.BaseOffset || c.NextOffset != next || c.FirstTimestamp != first.FirstTimestamp || c.MaxTimestamp != maxTS {
			t.Fatalf("chunk %d: %+v does not match its batches", i, c)
		}
		pos += c.RawSize
	}
	if k != len(hs) || pos != int64(len(log)) {
		t.Fatalf("chunks cover %d batches and %d bytes of %d and %d", k, pos, len(hs), len(log))
	}
}

func TestBatchLargerThanChunk(t *testing.T) {
	small, _ := buildLog(t, segSpec{base: 0, nBatches: 3, recs: 2, size: 100})
	big, _ := buildLog(t, segSpec{base: 6, nBatches: 1, recs: 4, size: 20 << 10})
	tail, _ := buildLog(t, segSpec{base: 10, nBatches: 2, recs: 2, size: 100})
	log := append(append(append([]byte{}, small...), big...), tail...)
	obj, _ := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 8 << 10})
	got, f := decodeAll(t, obj)
	if !bytes.Equal(got, log) {
		t.Fatal("round trip differs")
	}
	if len(f.Chunks) != 3 || f.Chunks[1].Batches != 1 || f.Chunks[1].RawSize != int64(len(big)) {
		t.Fatalf("want chunks [3 small batches] [the big one] [2 small]; got %+v", f.Chunks)
	}
}

func TestIncompressibleChunksStoredRaw(t *testing.T) {
	random, _ := buildLog(t, segSpec{nBatches: 8, recs: 4, size: 1000, random: true})
	obj, f := writeObject(t, random, cold.SegmentOptions{ChunkBytes: 8 << 10})
	for _, c := range f.Chunks {
		if c.Codec != cold.ChunkRaw || c.StoredSize != c.RawSize {
			t.Fatalf("random chunk stored as %v, %d of %d bytes", c.Codec, c.StoredSize, c.RawSize)
		}
	}
	if got, _ := decodeAll(t, obj); !bytes.Equal(got, random) {
		t.Fatal("round trip differs")
	}
	text, _ := buildLog(t, segSpec{nBatches: 8, recs: 4, size: 1000})
	_, f = writeObject(t, text, cold.SegmentOptions{ChunkBytes: 8 << 10})
	for _, c := range f.Chunks {
		if c.Codec != cold.ChunkZstd || c.StoredSize*2 > c.RawSize {
			t.Fatalf("text chunk stored as %v, %d of %d bytes", c.Codec, c.StoredSize, c.RawSize)
		}
	}
	_, f = writeObject(t, text, cold.SegmentOptions{ChunkBytes: 8 << 10, NoCompression: true})
	if f.StoredSize() != int64(len(text)) || f.Chunks[0].Codec != cold.ChunkRaw {
		t.Fatal("NoCompression compressed")
	}
}

// TestTinySegmentRoundTrip: a segment of one small batch (a single audit
// event rolled by segment.ms) is a chunk under 256 bytes, for which the
// zstd encoder writes no frame content size (RFC 8878 makes it optional).
// Such a chunk reads back; it was refused as corrupt, so the record was
// unreadable from the bucket and verify reported the object as altered.
func TestTinySegmentRoundTrip(t *testing.T) {
	for _, size := range []int{1, 50, 150} {
		log, _ := buildLog(t, segSpec{nBatches: 1, recs: 1, size: size})
		obj, f := writeObject(t, log, cold.SegmentOptions{})
		if len(log) >= 256 || f.Chunks[0].Codec != cold.ChunkZstd {
			t.Fatalf("a %d-byte log stored as %v: the test needs a zstd chunk under 256 bytes", len(log), f.Chunks[0].Codec)
		}
		if got, _ := decodeAll(t, obj); !bytes.Equal(got, log) {
			t.Fatalf("a %d-byte log: round trip differs", len(log))
		}
	}
}

func TestWriteSegmentRejectsBadLogs(t *testing.T) {
	good, hs := buildLog(t, segSpec{base: 50, nBatches: 4, recs: 3, size: 50})
	second := hs[0].Size()
	cases := []struct {
		name string
		log  func() []byte
		want error
	}{
		{"empty", func() []byte { return nil }, nil},
		{"flipped byte", func() []byte { b := bytes.Clone(good); b[second+70] ^= 1; return b }, batch.ErrCorrupt},
		{"torn last batch", func() []byte { return good[:len(good)-5] }, batch.ErrShortBatch},
		{"torn prefix", func() []byte { return append(bytes.Clone(good), 0, 0, 0) }, batch.ErrShortBatch},
		{"bad length", func() []byte {
			b := bytes.Clone(good)
			binary.BigEndian.PutUint32(b[second+8:], 3)
			return b
		}, batch.ErrCorrupt},
		{"offsets go back", func() []byte {
			b := bytes.Clone(good)
			batch.SetBaseOffset(b[second:], 50)
			return b
		}, batch.ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var obj bytes.Buffer
			_, err := cold.WriteSegment(&obj, bytes.NewReader(c.log()), cold.SegmentOptions{})
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if c.want != nil && !strings.Contains(err.Error(), fmt.Sprintf("position %d", second)) && c.name != "torn last batch" && c.name != "torn prefix" {
				t.Fatalf("error %q does not name position %d", err, second)
			}
		})
	}
}

func TestWriteSegmentOptionsChecked(t *testing.T) {
	log, _ := buildLog(t, segSpec{nBatches: 1, recs: 1, size: 10})
	for _, o := range []cold.SegmentOptions{{ChunkBytes: 10}, {ChunkBytes: -1}, {Level: 9}} {
		if _, err := cold.WriteSegment(&bytes.Buffer{}, bytes.NewReader(log), o); err == nil {
			t.Fatalf("options %+v accepted", o)
		}
	}
}

func TestParseFooterRejectsDamage(t *testing.T) {
	log, _ := buildLog(t, segSpec{base: 7, nBatches: 20, recs: 5, size: 200})
	obj, f := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 4 << 10})
	footerStart := len(obj) - cold.SegmentTrailerSize - int(binary.BigEndian.Uint32(obj[len(obj)-16:]))
	cases := []struct {
		name string
		tail func() ([]byte, int64)
		want error
	}{
		{"flipped footer byte", func() ([]byte, int64) { b := bytes.Clone(obj); b[footerStart+30] ^= 4; return b, int64(len(b)) }, cold.ErrCorruptObject},
		{"flipped trailer crc", func() ([]byte, int64) { b := bytes.Clone(obj); b[len(b)-12] ^= 4; return b, int64(len(b)) }, cold.ErrCorruptObject},
		{"bad magic", func() ([]byte, int64) { b := bytes.Clone(obj); b[len(b)-1] ^= 4; return b, int64(len(b)) }, cold.ErrCorruptObject},
		{"truncated", func() ([]byte, int64) { return obj[:len(obj)-100], int64(len(obj) - 100) }, cold.ErrCorruptObject},
		{"size larger than object", func() ([]byte, int64) { return obj, int64(len(obj) + 10) }, cold.ErrCorruptObject},
		{"footer length past object", func() ([]byte, int64) {
			b := bytes.Clone(obj)
			binary.BigEndian.PutUint32(b[len(b)-16:], uint32(len(b)))
			return b, int64(len(b))
		}, cold.ErrCorruptObject},
		{"newer version", func() ([]byte, int64) {
			b := bytes.Clone(obj)
			binary.BigEndian.PutUint16(b[len(b)-8:], cold.FormatVersion+1)
			return b, int64(len(b))
		}, cold.ErrFormatVersion},
		{"tiny", func() ([]byte, int64) { return obj[len(obj)-10:], 10 }, cold.ErrCorruptObject},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tail, size := c.tail()
			_, err := cold.ParseFooter(tail, size)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
	// A chunk flipped in storage is caught by its stored CRC.
	c := f.Chunks[2]
	bad := bytes.Clone(obj[c.StoredPos : c.StoredPos+c.StoredSize])
	bad[len(bad)/2] ^= 0x10
	_, err := cold.DecodeChunk(bad, c)
	var ce *cold.CorruptObjectError
	if !errors.As(err, &ce) || ce.Chunk != 2 || !errors.Is(err, cold.ErrCorruptObject) {
		t.Fatalf("flipped chunk: %v", err)
	}
}

func TestFooterLookups(t *testing.T) {
	log, hs := buildLog(t, segSpec{base: 100, nBatches: 30, recs: 4, size: 300, ts: 5000})
	_, f := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 4 << 10})
	if f.ChunkForOffset(99) != -1 || f.ChunkForOffset(f.NextOffset) != -1 || f.ChunkForTime(f.MaxTimestamp+1) != -1 {
		t.Fatal("lookups outside the segment found a chunk")
	}
	for _, h := range hs {
		for o := h.BaseOffset; o < h.NextOffset(); o++ {
			i := f.ChunkForOffset(o)
			if c := f.Chunks[i]; o < c.FirstOffset || o >= c.NextOffset {
				t.Fatalf("offset %d: chunk %d covers [%d, %d)", o, i, c.FirstOffset, c.NextOffset)
			}
		}
		i := f.ChunkForTime(h.MaxTimestamp)
		if c := f.Chunks[i]; h.BaseOffset >= c.NextOffset || c.MaxTimestamp < h.MaxTimestamp {
			t.Fatalf("time %d: chunk %d %+v is not the one holding batch %d", h.MaxTimestamp, i, c, h.BaseOffset)
		}
	}
}

// rewriteFooter applies edit to obj's footer bytes and fixes the footer
// CRC in the trailer, so only the footer's own consistency checks stand
// between the edit and a reader.
func rewriteFooter(obj []byte, edit func(fb []byte)) []byte {
	b := bytes.Clone(obj)
	n := int(binary.BigEndian.Uint32(b[len(b)-cold.SegmentTrailerSize:]))
	fb := b[len(b)-cold.SegmentTrailerSize-n : len(b)-cold.SegmentTrailerSize]
	edit(fb)
	binary.BigEndian.PutUint32(b[len(b)-12:], crc32.Checksum(fb, castagnoli))
	return b
}

// Footer layout positions (docs/format.md): fixed part, then 72-byte chunk
// entries, then 12-byte epoch entries.
const (
	fixedLen = 72
	entryLen = 72
)

func chunkField(i, at int) int { return fixedLen + i*entryLen + at }

func TestParseFooterChecksConsistency(t *testing.T) {
	log, _ := buildLog(t, segSpec{base: 40, nBatches: 20, recs: 5, size: 200, epochs: 2})
	obj, f := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 4 << 10})
	if _, err := cold.ParseFooter(rewriteFooter(obj, func([]byte) {}), int64(len(obj))); err != nil {
		t.Fatalf("unedited footer: %v", err)
	}
	n := len(f.Chunks)
	epochs := fixedLen + n*entryLen
	put64 := func(at int, v int64) func([]byte) {
		return func(fb []byte) { binary.BigEndian.PutUint64(fb[at:], uint64(v)) }
	}
	put32 := func(at int, v uint32) func([]byte) {
		return func(fb []byte) { binary.BigEndian.PutUint32(fb[at:], v) }
	}
	add64 := func(at int, d int64) func([]byte) {
		return func(fb []byte) { binary.BigEndian.PutUint64(fb[at:], binary.BigEndian.Uint64(fb[at:])+uint64(d)) }
	}
	cases := map[string]func([]byte){
		"no chunks":                put32(8, 0),
		"too many chunks":          put32(8, uint32(n+5)),
		"entry length below v1":    func(fb []byte) { binary.BigEndian.PutUint16(fb[2:], 10) },
		"base offset":              add64(16, 1),
		"next offset":              add64(24, 1),
		"max timestamp":            add64(40, 1),
		"first timestamp":          add64(32, -1),
		"raw size":                 add64(48, 1),
		"batch count":              add64(56, 1),
		"records beyond offsets":   put64(64, 1<<40),
		"chunk stored position":    add64(chunkField(1, 40), 1),
		"chunk raw position":       add64(chunkField(1, 32), 1),
		"chunk offsets overlap":    put64(chunkField(1, 0), f.Chunks[0].FirstOffset),
		"chunk empty offsets":      put64(chunkField(1, 8), f.Chunks[1].FirstOffset),
		"chunk size zero":          put32(chunkField(1, 48), 0),
		"chunk unknown codec":      func(fb []byte) { fb[chunkField(1, 68)] = 9 },
		"raw chunk shorter stored": func(fb []byte) { fb[chunkField(1, 68)] = byte(cold.ChunkRaw) },
		"chunk batches zero":       put32(chunkField(1, 64), 0),
		"chunks end before footer": add64(chunkField(n-1, 40), -1),
		"epoch not at base":        add64(epochs+4, 1),
		"epochs out of order":      put64(epochs+12+4, 0),
		"epoch beyond next offset": put64(epochs+12+4, f.NextOffset),
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			bad := rewriteFooter(obj, edit)
			_, err := cold.ParseFooter(bad, int64(len(bad)))
			if !errors.Is(err, cold.ErrCorruptObject) {
				t.Fatalf("err %v, want ErrCorruptObject", err)
			}
		})
	}
}

func TestReadFooterOneShot(t *testing.T) {
	b := newFileBucket(t)
	log, _ := buildLog(t, segSpec{nBatches: 5, recs: 2, size: 50})
	seg, want := putSegment(t, b, "one", log, cold.SegmentOptions{})
	f, err := cold.ReadFooter(context.Background(), b, seg)
	if err != nil || f.NextOffset != want.NextOffset || f.ObjectSize != seg.Size || b.gets.Load() != 1 {
		t.Fatalf("footer %+v, err %v, %d GETs", f, err, b.gets.Load())
	}
	if _, err := cold.ReadFooter(context.Background(), b, cold.SegmentRef{Key: "missing", Size: seg.Size}); !errors.Is(err, cold.ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
	if _, err := cold.ReadFooter(context.Background(), b, cold.SegmentRef{Key: seg.Key, Size: 10}); !errors.Is(err, cold.ErrCorruptObject) {
		t.Fatalf("size below any segment: %v", err)
	}
	if cold.ChunkZstd.String() != "zstd" || cold.ChunkRaw.String() != "raw" || cold.ChunkCodec(7).String() != "codec(7)" {
		t.Fatal("codec names")
	}
}

// A chunk whose checksums match but whose batches disagree with the chunk
// table (a writer bug, or an attacker who recomputed the CRCs) is reported,
// not served.
func TestReaderChunkDisagreesWithTable(t *testing.T) {
	log, _ := buildLog(t, segSpec{base: 0, nBatches: 20, recs: 5, size: 200})
	obj, f := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 4 << 10, NoCompression: true})
	c := f.Chunks[1]
	obj = bytes.Clone(obj)
	binary.BigEndian.PutUint32(obj[c.StoredPos+8:], 5) // first batch's length
	crc := crc32.Checksum(obj[c.StoredPos:c.StoredPos+c.StoredSize], castagnoli)
	obj = rewriteFooter(obj, func(fb []byte) {
		binary.BigEndian.PutUint32(fb[chunkField(1, 56):], crc)
		binary.BigEndian.PutUint32(fb[chunkField(1, 60):], crc)
	})
	b := newFileBucket(t)
	if _, err := b.Upload(context.Background(), "k", bytes.NewReader(obj), int64(len(obj))); err != nil {
		t.Fatal(err)
	}
	r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{})
	seg := cold.SegmentRef{Key: "k", Size: int64(len(obj))}
	got, err := r.Read(context.Background(), seg, c.FirstOffset, 1<<20)
	var ce *cold.CorruptObjectError
	if got != nil || !errors.As(err, &ce) || ce.Chunk != 1 || ce.Key != "k" {
		t.Fatalf("read: %d bytes, %v", len(got), err)
	}
	if _, _, err := r.OffsetForTime(context.Background(), seg, f.Chunks[1].MaxTimestamp); !errors.Is(err, cold.ErrCorruptObject) {
		t.Fatalf("by time: %v", err)
	}
}
