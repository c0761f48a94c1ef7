package cold_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// dataset writes n segments of consecutive offsets and returns them with
// their logs.
func dataset(t testing.TB, b cold.Bucket, n, batches int, chunkBytes int) ([]cold.SegmentRef, []*cold.Footer, [][]byte) {
	t.Helper()
	var segs []cold.SegmentRef
	var fs []*cold.Footer
	var logs [][]byte
	base := int64(0)
	for i := range n {
		log, hs := buildLog(t, segSpec{base: base, nBatches: batches, recs: 8, size: 100, ts: int64(i) * 1_000_000})
		seg, f := putSegment(t, b, fmt.Sprintf("t/0/%020d.seg", base), log, cold.SegmentOptions{ChunkBytes: chunkBytes})
		segs, fs, logs = append(segs, seg), append(fs, f), append(logs, log)
		base = hs[len(hs)-1].NextOffset()
	}
	return segs, fs, logs
}

func TestCacheBudgetHeld(t *testing.T) {
	b := newFileBucket(t)
	segs, fs, logs := dataset(t, b, 6, 96, 2<<10)
	const maxBytes, window, readers = 48 << 10, 24 << 10, 3
	r, cache := newReader(t, b, cold.ChunkCacheOptions{MaxBytes: maxBytes, WindowBytes: window},
		cold.ReaderOptions{PrefetchBytes: 8 << 10, MaxConcurrentGets: 2})
	var maxChunk int64
	for _, f := range fs {
		for _, c := range f.Chunks {
			maxChunk = max(maxChunk, c.RawSize)
		}
	}
	var mu sync.Mutex
	var worst cold.CacheStats
	check := func() error {
		s := cache.Stats()
		mu.Lock()
		defer mu.Unlock()
		if s.WindowBytes > worst.WindowBytes {
			worst.WindowBytes = s.WindowBytes
		}
		worst.MainBytes = max(worst.MainBytes, s.MainBytes)
		// The documented bound: main ≤ MaxBytes − WindowBytes; window ≤
		// WindowBytes + one demand chunk per concurrent reader.
		if s.MainBytes > maxBytes-window || s.WindowBytes > window+readers*maxChunk {
			return fmt.Errorf("cache holds main %d window %d, budget %d+%d (+%d overdraft)", s.MainBytes, s.WindowBytes, maxBytes-window, window, readers*maxChunk)
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for g := range readers {
		wg.Go(func() {
			for pass := range 2 {
				for i := range segs {
					i := (i + g*2) % len(segs)
					var got []byte
					for off := fs[i].BaseOffset; off < fs[i].NextOffset; {
						data, err := r.Read(context.Background(), segs[i], off, 1500)
						if err == nil {
							err = check()
						}
						if err != nil {
							errs <- fmt.Errorf("reader %d pass %d segment %d offset %d: %w", g, pass, i, off, err)
							return
						}
						got = append(got, data...)
						off = lastNext(t, data)
					}
					if !bytes.Equal(got, logs[i]) {
						errs <- fmt.Errorf("reader %d: segment %d differs", g, i)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("worst: main %d window %d of %d; stats %+v", worst.MainBytes, worst.WindowBytes, maxBytes, cache.Stats())
}

func TestWarmReadsHitCache(t *testing.T) {
	b := newFileBucket(t)
	segs, fs, _ := dataset(t, b, 3, 64, 4<<10)
	reg := prometheus.NewRegistry()
	r, cache := newReader(t, b, cold.ChunkCacheOptions{MaxBytes: 8 << 20, Registerer: reg}, cold.ReaderOptions{})
	chunks := 0
	for i := range segs {
		replay(t, r, segs[i], fs[i], 1000)
		chunks += len(fs[i].Chunks)
	}
	cold1 := b.gets.Load()
	for i := range segs {
		replay(t, r, segs[i], fs[i], 1000)
	}
	if b.gets.Load() != cold1 {
		t.Fatalf("warm replay sent %d GETs", b.gets.Load()-cold1)
	}
	s := cache.Stats()
	if s.Misses > int64(chunks) || cache.HitRate() < 0.9 {
		t.Fatalf("stats %+v hit rate %.2f for %d chunks", s, cache.HitRate(), chunks)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"tierlog_cold_cache_hits_total", "tierlog_cold_cache_misses_total", "tierlog_cold_cache_evictions_total",
		"tierlog_cold_cache_rejections_total", "tierlog_cold_cache_bytes", "tierlog_cold_cache_budget_bytes", "tierlog_cold_prefetch_unused_total"} {
		if !names[n] {
			t.Errorf("metric %s not registered (have %v)", n, names)
		}
	}
}

// A prefetched chunk stays in the window until its reader comes for it,
// even while other readers need room; after PrefetchTTL it may go.
func TestPrefetchedChunksWaitForTheirReader(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{{"kept", time.Hour}, {"expired", time.Nanosecond}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFileBucket(t)
			segs, fs, _ := dataset(t, b, 2, 64, 2<<10)
			reg := prometheus.NewRegistry()
			r, cache := newReader(t, b, cold.ChunkCacheOptions{MaxBytes: 40 << 10, WindowBytes: 12 << 10, PrefetchTTL: tc.ttl, Registerer: reg},
				cold.ReaderOptions{PrefetchBytes: 8 << 10})
			ctx := context.Background()
			if _, err := r.Read(ctx, segs[0], 0, 1); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, func() bool { s := cache.Stats(); return s.Downloading == 0 && s.Prefetched > 0 }, "prefetch of segment 0 to arrive")
			before := b.gets.Load()
			// Another reader starts segment 1: its prefetch needs room.
			if _, err := r.Read(ctx, segs[1], fs[1].BaseOffset, 1); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, func() bool { return cache.Stats().Downloading == 0 }, "downloads to end")
			mid := b.gets.Load()
			// The first reader goes on to its second chunk.
			if _, err := r.Read(ctx, segs[0], fs[0].Chunks[1].FirstOffset, 1); err != nil {
				t.Fatal(err)
			}
			unused := counterValue(t, reg, "tierlog_cold_prefetch_unused_total")
			t.Logf("GETs: %d for segment 1, %d for segment 0's next chunk; %v unused prefetches; %+v", mid-before, b.gets.Load()-mid, unused, cache.Stats())
			if tc.ttl == time.Hour && (b.gets.Load() != mid || unused != 0) {
				t.Fatalf("segment 0's prefetched chunk was dropped: %d GETs, %v unused", b.gets.Load()-mid, unused)
			}
			if tc.ttl == time.Nanosecond && unused == 0 {
				t.Fatal("expired prefetches were never evicted")
			}
		})
	}
}

func TestChunkCacheOptionsChecked(t *testing.T) {
	for _, o := range []cold.ChunkCacheOptions{{MaxBytes: 100, WindowBytes: 100}, {MaxBytes: -1}, {MaxBytes: 10, WindowBytes: -2}} {
		if c, err := cold.NewChunkCache(o); err == nil {
			c.Close()
			t.Fatalf("options %+v accepted", o)
		}
	}
}

// counterValue sums the counter name's series in reg.
func counterValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
