package cold_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// benchSet is a tiered data set: the same audit-event segments stored
// chunked and compressed (as tiering writes them) and, for reference,
// uncompressed (NoCompression).
type benchSet struct {
	b          *countingBucket
	segs, raws []cold.SegmentRef
	footers    []*cold.Footer
	rawBytes   int64 // segment (.log) bytes
	objBytes   int64 // compressed object bytes
}

func newBenchSet(b *testing.B, bucket *countingBucket, segments, segBytes int) *benchSet {
	b.Helper()
	s := &benchSet{b: bucket}
	base := int64(0)
	for i := range segments {
		log, next := auditLog(b, uint64(100+i), base, segBytes)
		seg, f := putSegment(b, s.b, fmt.Sprintf("audit/0/%020d-0-a.seg", base), log, cold.SegmentOptions{})
		raw, _ := putSegment(b, s.b, fmt.Sprintf("raw/audit/0/%020d-0-a.seg", base), log, cold.SegmentOptions{NoCompression: true})
		s.segs, s.raws, s.footers = append(s.segs, seg), append(s.raws, raw), append(s.footers, f)
		s.rawBytes += int64(len(log))
		s.objBytes += seg.Size
		base = next
	}
	return s
}

// replayAll reads every segment from its first offset to its end, as a
// consumer replaying history does (maxBytes per fetch), with an empty cache
// of cacheBytes, and returns the batch bytes read.
func (s *benchSet) replayAll(b *testing.B, cacheBytes int64, maxBytes int) int64 {
	return s.replayWith(b, cacheBytes, maxBytes, cold.ReaderOptions{})
}

func (s *benchSet) replayWith(b *testing.B, cacheBytes int64, maxBytes int, ro cold.ReaderOptions) int64 {
	cache, err := cold.NewChunkCache(cold.ChunkCacheOptions{MaxBytes: cacheBytes})
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	ro.Logger = slog.New(slog.DiscardHandler)
	r, err := cold.NewReader(s.b, cache, ro)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	var n int64
	for i, seg := range s.segs {
		f := s.footers[i]
		for off := f.BaseOffset; off < f.NextOffset; {
			data, err := r.Read(ctx, seg, off, maxBytes)
			if err != nil {
				b.Fatal(err)
			}
			n += int64(len(data))
			off = nextOffset(b, data)
			if off >= f.Chunks[len(f.Chunks)-1].FirstOffset && i+1 < len(s.segs) {
				r.Prefetch(s.segs[i+1]) // what the tiered read path does at a segment's last chunk
			}
		}
	}
	return n
}

// getAll reads objects with ranged GETs of DefaultChunkBytes (or less at
// the end), discarding the bytes: the raw cost of moving them.
func (s *benchSet) getAll(b *testing.B, objs []cold.SegmentRef) int64 {
	var n int64
	for _, o := range objs {
		for off := int64(0); off < o.Size; off += cold.DefaultChunkBytes {
			rc, err := s.b.GetRange(context.Background(), o.Key, off, min(cold.DefaultChunkBytes, o.Size-off))
			if err != nil {
				b.Fatal(err)
			}
			m, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
	return n
}

// BenchmarkColdReplay replays 4 segments of 16 MiB of JSON audit events
// from a filesystem bucket with an empty cache each time, and in the same
// run GETs the same objects without decompressing, and the uncompressed
// segments, in 4 MiB ranges. Reported: replay MB/s of batch bytes, the two
// raw GET rates, their ratio, and GETs per chunk. On a filesystem bucket the
// GETs are page-cache copies, so the ratio is a floor; against a network
// store the compressed replay moves a sixth of the bytes.
func BenchmarkColdReplay(b *testing.B) { benchColdReplay(b, newFileBucket(b)) }

// BenchmarkColdReplayMinIO is BenchmarkColdReplay against a real MinIO
// server on 127.0.0.1 (sharing the machine's cores with the benchmark).
func BenchmarkColdReplayMinIO(b *testing.B) {
	m := testutil.StartMinIO(b)
	benchColdReplay(b, minioMaker(m, m.Endpoint, cold.Options{})(b))
}

func benchColdReplay(b *testing.B, bucket *countingBucket) {
	s := newBenchSet(b, bucket, 4, 16<<20)
	chunks := 0
	for _, f := range s.footers {
		chunks += len(f.Chunks)
	}
	var replayT, getT, rawT time.Duration
	var gets int64
	for b.Loop() {
		start := time.Now()
		g0 := s.b.gets.Load()
		if n := s.replayAll(b, 64<<20, 1<<20); n != s.rawBytes {
			b.Fatalf("replayed %d bytes of %d", n, s.rawBytes)
		}
		gets += s.b.gets.Load() - g0
		replayT += time.Since(start)
		start = time.Now()
		s.getAll(b, s.segs)
		getT += time.Since(start)
		start = time.Now()
		s.getAll(b, s.raws)
		rawT += time.Since(start)
	}
	mbps := func(n int64, d time.Duration) float64 { return float64(n) * float64(b.N) / d.Seconds() / 1e6 }
	replay, get, raw := mbps(s.rawBytes, replayT), mbps(s.objBytes, getT), mbps(s.rawBytes, rawT)
	b.ReportMetric(replay, "replay-MB/s")
	b.ReportMetric(get, "get-compressed-MB/s")
	b.ReportMetric(raw, "get-uncompressed-MB/s")
	b.ReportMetric(replay/raw, "replay/get-uncompressed")
	b.ReportMetric(float64(s.rawBytes)/float64(s.objBytes), "ratio")
	b.ReportMetric(float64(gets)/float64(b.N)/float64(chunks), "GETs/chunk")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWarmRead reads a segment whose chunks are all cached, 1 MiB per
// Read: the cost of the cache and the copy out.
func BenchmarkWarmRead(b *testing.B) {
	s := newBenchSet(b, newFileBucket(b), 1, 16<<20)
	cache, err := cold.NewChunkCache(cold.ChunkCacheOptions{MaxBytes: 128 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	r, err := cold.NewReader(s.b, cache, cold.ReaderOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	f := s.footers[0]
	ctx := context.Background()
	readAll := func() {
		for off := f.BaseOffset; off < f.NextOffset; {
			data, err := r.Read(ctx, s.segs[0], off, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			off = nextOffset(b, data)
		}
	}
	readAll()
	g := s.b.gets.Load()
	b.SetBytes(s.rawBytes)
	for b.Loop() {
		readAll()
	}
	if s.b.gets.Load() != g {
		b.Fatalf("warm reads sent %d GETs", s.b.gets.Load()-g)
	}
}

// nextOffset returns the offset after the last batch in data, walking only
// the headers (a consumer's cost, not a verifier's).
func nextOffset(b *testing.B, data []byte) int64 {
	var next int64
	for len(data) > 0 {
		h, err := batch.Peek(data)
		if err != nil {
			b.Fatal(err)
		}
		next = h.NextOffset()
		data = data[h.Size():]
	}
	return next
}
