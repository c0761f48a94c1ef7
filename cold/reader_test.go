package cold_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// countingBucket wraps a real bucket, counting ranged GETs and the bytes
// they return; hook, if set, runs before each GetRange and can fail it or
// hold it (fault injection, not a fake: the bytes come from the real
// bucket).
type countingBucket struct {
	cold.Bucket
	gets, bytes atomic.Int64
	mu          sync.Mutex
	hook        func(ctx context.Context, key string, off, length int64) error
	bodyHook    func(io.ReadCloser) io.ReadCloser
}

func (c *countingBucket) GetRange(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	c.gets.Add(1)
	c.mu.Lock()
	hook, bodyHook := c.hook, c.bodyHook
	c.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, key, off, length); err != nil {
			return nil, err
		}
	}
	rc, err := c.Bucket.GetRange(ctx, key, off, length)
	if err != nil {
		return nil, err
	}
	if bodyHook != nil {
		rc = bodyHook(rc)
	}
	return &countingBody{ReadCloser: rc, n: &c.bytes}, nil
}

func (c *countingBucket) setHooks(hook func(context.Context, string, int64, int64) error, body func(io.ReadCloser) io.ReadCloser) {
	c.mu.Lock()
	c.hook, c.bodyHook = hook, body
	c.mu.Unlock()
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func newFileBucket(t testing.TB) *countingBucket {
	t.Helper()
	b, err := filebucket.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &countingBucket{Bucket: b}
}

// putSegment writes log as a remote segment under key.
func putSegment(t testing.TB, b cold.Bucket, key string, log []byte, opts cold.SegmentOptions) (cold.SegmentRef, *cold.Footer) {
	t.Helper()
	obj, f := writeObject(t, log, opts)
	if _, err := b.Upload(context.Background(), key, bytes.NewReader(obj), int64(len(obj))); err != nil {
		t.Fatal(err)
	}
	return cold.SegmentRef{Key: key, Size: int64(len(obj))}, f
}

// newReader builds a cache and a reader over b, closed at cleanup.
func newReader(t testing.TB, b cold.Bucket, co cold.ChunkCacheOptions, ro cold.ReaderOptions) (*cold.Reader, *cold.ChunkCache) {
	t.Helper()
	if co.Registerer == nil {
		co.Registerer = prometheus.NewRegistry()
	}
	cache, err := cold.NewChunkCache(co)
	if err != nil {
		t.Fatal(err)
	}
	if ro.Registerer == nil {
		ro.Registerer = prometheus.NewRegistry()
	}
	if ro.Logger == nil {
		ro.Logger = slog.New(slog.DiscardHandler)
	}
	r, err := cold.NewReader(b, cache, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); cache.Close() })
	return r, cache
}

// replay reads seg from its base offset to its end, maxBytes at a time,
// and returns the bytes.
func replay(t testing.TB, r *cold.Reader, seg cold.SegmentRef, f *cold.Footer, maxBytes int) []byte {
	t.Helper()
	var out []byte
	for off := f.BaseOffset; off < f.NextOffset; {
		b, err := r.Read(context.Background(), seg, off, maxBytes)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if len(b) == 0 {
			t.Fatalf("read at %d returned nothing", off)
		}
		out = append(out, b...)
		off = lastNext(t, b)
	}
	return out
}

// lastNext returns the offset after the last batch in b.
func lastNext(t testing.TB, b []byte) int64 {
	t.Helper()
	var next int64
	for len(b) > 0 {
		h, err := batch.Validate(b)
		if err != nil {
			t.Fatalf("reader returned a bad batch: %v", err)
		}
		next = h.NextOffset()
		b = b[h.Size():]
	}
	return next
}

// bucketMaker returns an empty bucket (or an empty prefix of one) for a
// test, wrapped for counting.
type bucketMaker func(t testing.TB) *countingBucket

func TestReaderEveryOffsetAllCodecs(t *testing.T) {
	testReaderEveryOffset(t, newFileBucket, []batch.Codec{batch.None, batch.Gzip, batch.Snappy, batch.LZ4, batch.Zstd})
}

func testReaderEveryOffset(t *testing.T, mk bucketMaker, codecs []batch.Codec) {
	for _, codec := range codecs {
		t.Run(codec.String(), func(t *testing.T) {
			b := mk(t)
			log, hs := buildLog(t, segSpec{base: 500, nBatches: 40, recs: 5, size: 200, codec: codec, ts: 1000})
			seg, f := putSegment(t, b, "t/0/500.seg", log, cold.SegmentOptions{ChunkBytes: len(log) / 6})
			r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{})
			for k, h := range hs {
				for off := h.BaseOffset; off < h.NextOffset(); off++ {
					got, err := r.Read(context.Background(), seg, off, 1)
					if err != nil {
						t.Fatal(err)
					}
					// One batch: the one holding off, even though it is
					// larger than maxBytes.
					if pos := batchPos(hs, k); !bytes.Equal(got, log[pos:pos+h.Size()]) {
						t.Fatalf("offset %d: got %d bytes, want batch %d", off, len(got), k)
					}
				}
			}
			for _, maxBytes := range []int{1, 1000, 5000, 1 << 20} {
				if got := replay(t, r, seg, f, maxBytes); !bytes.Equal(got, log) {
					t.Fatalf("replay with maxBytes %d differs", maxBytes)
				}
			}
			for _, off := range []int64{499, f.NextOffset, -1} {
				if _, err := r.Read(context.Background(), seg, off, 100); !errors.Is(err, cold.ErrOffsetOutOfRange) {
					t.Fatalf("read at %d: %v, want ErrOffsetOutOfRange", off, err)
				}
			}
		})
	}
}

func batchPos(hs []batch.Header, k int) int {
	pos := 0
	for _, h := range hs[:k] {
		pos += h.Size()
	}
	return pos
}

func TestReaderMaxBytesStaysInSegment(t *testing.T) {
	b := newFileBucket(t)
	log, hs := buildLog(t, segSpec{base: 0, nBatches: 30, recs: 4, size: 100})
	seg, f := putSegment(t, b, "s", log, cold.SegmentOptions{ChunkBytes: 2 << 10})
	r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{})
	// Warm every chunk so reads may span chunks.
	replay(t, r, seg, f, 1)
	for _, maxBytes := range []int{hs[0].Size(), 3000, 7777} {
		for k, h := range hs {
			got, err := r.Read(context.Background(), seg, h.BaseOffset+1, maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			pos := batchPos(hs, k)
			want := pos
			for j := k; j < len(hs) && (want == pos || want-pos+hs[j].Size() <= maxBytes); j++ {
				want += hs[j].Size()
			}
			if !bytes.Equal(got, log[pos:want]) {
				t.Fatalf("maxBytes %d from batch %d: got %d bytes, want %d", maxBytes, k, len(got), want-pos)
			}
		}
	}
}

func TestReaderOffsetForTime(t *testing.T) { testReaderOffsetForTime(t, newFileBucket) }

func testReaderOffsetForTime(t *testing.T, mk bucketMaker) {
	b := mk(t)
	log, hs := buildLog(t, segSpec{base: 10, nBatches: 40, recs: 3, size: 150, codec: batch.LZ4, ts: 1_000_000})
	seg, _ := putSegment(t, b, "s", log, cold.SegmentOptions{ChunkBytes: 2 << 10})
	r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{})
	for ts := int64(999_000); ts <= hs[len(hs)-1].MaxTimestamp+1; ts += 250 {
		want, wantFound := hs[len(hs)-1].NextOffset(), false
		for _, h := range hs {
			if h.MaxTimestamp >= ts {
				want, wantFound = h.BaseOffset, true
				break
			}
		}
		got, found, err := r.OffsetForTime(context.Background(), seg, ts)
		if err != nil || got != want || found != wantFound {
			t.Fatalf("ts %d: %d %v %v, want %d %v", ts, got, found, err, want, wantFound)
		}
	}
}

func TestReaderFooterOneGet(t *testing.T) {
	b := newFileBucket(t)
	log, _ := buildLog(t, segSpec{nBatches: 50, recs: 2, size: 100})
	seg, f := putSegment(t, b, "small", log, cold.SegmentOptions{ChunkBytes: 1 << 10})
	r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{})
	got, err := r.Footer(context.Background(), seg)
	if err != nil || got.NextOffset != f.NextOffset {
		t.Fatal(got, err)
	}
	if n := b.gets.Load(); n != 1 {
		t.Fatalf("footer took %d GETs, want 1", n)
	}
	if _, err := r.Footer(context.Background(), seg); err != nil || b.gets.Load() != 1 {
		t.Fatalf("cached footer: %v, %d GETs", err, b.gets.Load())
	}

	// A footer larger than the tail GET takes a second GET: 1200 chunks of
	// one small batch each.
	log, _ = buildLog(t, segSpec{nBatches: 1200, recs: 1, size: 10})
	seg, _ = putSegment(t, b, "big", log, cold.SegmentOptions{ChunkBytes: batch.HeaderSize})
	b.gets.Store(0)
	got, err = r.Footer(context.Background(), seg)
	if err != nil || len(got.Chunks) != 1200 || b.gets.Load() != 2 {
		t.Fatalf("big footer: %v, %d chunks, %d GETs (want 2)", err, len(got.Chunks), b.gets.Load())
	}
}

func TestReaderSequentialReplayGETs(t *testing.T) { testReaderSequentialGETs(t, newFileBucket) }

func testReaderSequentialGETs(t *testing.T, mk bucketMaker) {
	log, _ := buildLog(t, segSpec{base: 0, nBatches: 256, recs: 8, size: 100})
	for _, tc := range []struct {
		name     string
		prefetch int64
	}{{"no prefetch", -1}, {"prefetch", 8 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			b := mk(t)
			seg, f := putSegment(t, b, "s", log, cold.SegmentOptions{ChunkBytes: 2 << 10})
			// A main cache too small for a chunk: everything rests on the
			// window, as in a replay larger than the cache.
			r, cache := newReader(t, b, cold.ChunkCacheOptions{MaxBytes: 64 << 10, WindowBytes: 63 << 10},
				cold.ReaderOptions{PrefetchBytes: tc.prefetch})
			b.gets.Store(0)
			if got := replay(t, r, seg, f, 700); !bytes.Equal(got, log) {
				t.Fatal("replay differs")
			}
			chunks := int64(len(f.Chunks))
			gets := b.gets.Load() - 1 // the footer
			t.Logf("%d chunks, %d chunk GETs, cache %+v", chunks, gets, cache.Stats())
			if gets > chunks {
				t.Fatalf("%d GETs for %d chunks", gets, chunks)
			}
			if tc.prefetch > 0 && gets > chunks/2 {
				t.Fatalf("prefetch should merge GETs: %d GETs for %d chunks", gets, chunks)
			}
			if tc.prefetch < 0 && gets != chunks {
				t.Fatalf("no prefetch: %d GETs for %d chunks", gets, chunks)
			}
		})
	}
}

func TestReaderConcurrentMissesOneGET(t *testing.T) { testReaderConcurrentMisses(t, newFileBucket) }

func testReaderConcurrentMisses(t *testing.T, mk bucketMaker) {
	b := mk(t)
	log, _ := buildLog(t, segSpec{base: 0, nBatches: 40, recs: 4, size: 200})
	seg, f := putSegment(t, b, "s", log, cold.SegmentOptions{ChunkBytes: 4 << 10})
	c := f.Chunks[2]
	r, cache := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{PrefetchBytes: -1})
	if _, err := r.Footer(context.Background(), seg); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	b.setHooks(func(context.Context, string, int64, int64) error { <-release; return nil }, nil)
	const readers = 8
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Go(func() {
			off := c.FirstOffset + int64(i)%(c.NextOffset-c.FirstOffset) // offsets in one chunk
			got, err := r.Read(context.Background(), seg, off, 1)
			if err == nil && (lastNext(t, got) <= off || !bytes.Contains(log, got)) {
				err = fmt.Errorf("reader %d got the wrong batch", i)
			}
			errs <- err
		})
	}
	testutil.Eventually(t, 10*time.Second, func() bool { s := cache.Stats(); return s.Hits+s.Misses == readers }, "every reader to look the chunk up")
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := b.gets.Load(); n != 2 { // footer + one chunk
		t.Fatalf("%d GETs, want footer + 1 chunk", n)
	}
	if s := cache.Stats(); s.Misses != 1 || s.Hits != readers-1 {
		t.Fatalf("stats %+v, want 1 miss", s)
	}
}

func TestReaderCorruptObjects(t *testing.T) { testReaderCorrupt(t, newFileBucket) }

func testReaderCorrupt(t *testing.T, mk bucketMaker) {
	log, _ := buildLog(t, segSpec{base: 0, nBatches: 60, recs: 4, size: 200})
	obj, f := writeObject(t, log, cold.SegmentOptions{ChunkBytes: 4 << 10})
	c3 := f.Chunks[3]
	footerAt := f.Chunks[len(f.Chunks)-1].StoredPos + f.Chunks[len(f.Chunks)-1].StoredSize
	cases := []struct {
		name  string
		bytes func() []byte
		chunk int // chunk named in the error; -1 footer
		read  int64
	}{
		{"flipped chunk byte", func() []byte { b := bytes.Clone(obj); b[c3.StoredPos+c3.StoredSize/2] ^= 0x20; return b }, 3, c3.FirstOffset},
		{"flipped footer byte", func() []byte { b := bytes.Clone(obj); b[footerAt+100] ^= 1; return b }, -1, 0},
		{"truncated in the footer", func() []byte { return obj[:len(obj)-30] }, -1, 0},
		{"truncated to half", func() []byte { return obj[:len(obj)/2] }, -1, 0},
		{"garbage instead", func() []byte { return bytes.Repeat([]byte{0x5a}, len(obj)) }, -1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := mk(t)
			key := "audit/0/00000000000000000000-0-x.seg"
			bad := tc.bytes()
			if _, err := b.Upload(context.Background(), key, bytes.NewReader(bad), int64(len(bad))); err != nil {
				t.Fatal(err)
			}
			seg := cold.SegmentRef{Key: key, Size: int64(len(obj))}
			r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{RetryBase: 1, RetryMax: 1})
			got, err := r.Read(context.Background(), seg, tc.read, 1<<20)
			var ce *cold.CorruptObjectError
			if !errors.Is(err, cold.ErrCorruptObject) || !errors.As(err, &ce) || got != nil {
				t.Fatalf("read: %d bytes, err %v; want ErrCorruptObject", len(got), err)
			}
			if ce.Key != key || ce.Chunk != tc.chunk || !strings.Contains(err.Error(), key) {
				t.Fatalf("error %q names key %q chunk %d, want %q chunk %d", err, ce.Key, ce.Chunk, key, tc.chunk)
			}
			if tc.chunk < 0 {
				return
			}
			// Chunks before the damage still read; the bad chunk was not
			// cached: once the object is whole again, it reads.
			if _, err := r.Read(context.Background(), seg, 0, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Upload(context.Background(), key, bytes.NewReader(obj), int64(len(obj))); err != nil {
				t.Fatal(err)
			}
			got, err = r.Read(context.Background(), seg, tc.read, 1<<20)
			if err != nil || !bytes.Equal(got, log[c3.RawPos:c3.RawPos+int64(len(got))]) {
				t.Fatalf("after repair: %v", err)
			}
		})
	}
}

func TestReaderPrefetchNextSegment(t *testing.T) {
	b := newFileBucket(t)
	log, _ := buildLog(t, segSpec{base: 0, nBatches: 60, recs: 4, size: 200})
	seg, f := putSegment(t, b, "s", log, cold.SegmentOptions{ChunkBytes: 4 << 10})
	r, cache := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{PrefetchBytes: 16 << 10})
	r.Prefetch(seg)
	testutil.Eventually(t, 10*time.Second, func() bool { s := cache.Stats(); return s.Prefetched > 0 && s.Downloading == 0 }, "the prefetch to arrive")
	gets := b.gets.Load()
	if gets != 2 {
		t.Fatalf("prefetch took %d GETs, want footer + one range", gets)
	}
	got, err := r.Read(context.Background(), seg, 0, 8<<10)
	if err != nil || !bytes.Equal(got, log[:len(got)]) || int64(len(got)) <= f.Chunks[0].RawSize {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if b.gets.Load() > gets+1 { // at most the refill
		t.Fatalf("read after prefetch sent %d GETs", b.gets.Load()-gets)
	}
}
