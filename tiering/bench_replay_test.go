package tiering_test

import (
	"context"
	"log/slog"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
)

// replayed is what a replay read and how long it took.
type replayed struct {
	records, recordBytes, batchBytes int64
	d                                time.Duration
}

// replay reads offsets [from, to) with fetches of benchFetchBytes, as a
// consumer does. With decode it decodes every record (batch.DecodeAll: CRC
// check and record parsing), checks the offsets are dense and sums keys and
// values; without, it only walks the batch headers.
func replay(b *testing.B, read func(off int64) ([]byte, error), from, to int64, decode bool) replayed {
	var out replayed
	start := time.Now()
	for off := from; off < to; {
		data, err := read(off)
		if err != nil {
			b.Fatalf("read at offset %d: %v", off, err)
		}
		if len(data) == 0 {
			b.Fatalf("read at offset %d (end %d): nothing", off, to)
		}
		out.batchBytes += int64(len(data))
		if !decode {
			for pos := 0; pos < len(data); {
				h, err := batch.Peek(data[pos:])
				if err != nil {
					b.Fatalf("batch at offset %d: %v", off, err)
				}
				out.records += h.NextOffset() - max(h.BaseOffset, off)
				off = h.NextOffset()
				pos += h.Size()
			}
			continue
		}
		recs, err := batch.DecodeAll(data)
		if err != nil {
			b.Fatalf("decode at offset %d: %v", off, err)
		}
		for _, r := range recs {
			if r.Offset < off {
				continue
			}
			if r.Offset != off {
				b.Fatalf("record at offset %d, want %d", r.Offset, off)
			}
			out.records++
			out.recordBytes += int64(len(r.Key) + len(r.Value))
			off++
		}
	}
	out.d = time.Since(start)
	return out
}

// newReader builds a Reader on the bucket with its own cache.
func (tb *tierBench) newReader(reg prometheus.Registerer, co cold.ChunkCacheOptions) (*cold.Reader, *cold.ChunkCache) {
	co.Registerer = reg
	cache, err := cold.NewChunkCache(co)
	if err != nil {
		tb.b.Fatal(err)
	}
	r, err := cold.NewReader(tb.bucket, cache, cold.ReaderOptions{Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.b.Fatal(err)
	}
	return r, cache
}

// coldResult is the cold replay and what it cost.
type coldResult struct {
	replayed
	reqs requests
	// readerGets is the Reader's own count (footers and chunks);
	// chunkGets the chunk GETs among them; chunksFetched the chunks
	// downloaded (and decompressed); prefetchUnused prefetched chunks
	// evicted unread.
	readerGets, chunkGets, chunksFetched, prefetchUnused int64
	rssBase, rssPeak, budget                             int64
	livePeak                                             int64 // Go heap live after GC
	// boundaryWait is the time spent in the first read of each segment.
	boundaryWait time.Duration
}

// coldReplay replays the whole history through the tiered read path with
// a new, empty cache of budget bytes and no local segments, measuring the
// GETs it sends and the process's peak RSS.
func (tb *tierBench) coldReplay(gen generated, budget int64) coldResult {
	b := tb.b
	reg := prometheus.NewRegistry()
	r, cache := tb.newReader(reg, cold.ChunkCacheOptions{MaxBytes: budget})
	defer cache.Close()
	defer r.Close()
	p := tb.open(r)
	defer p.Close()
	if st := p.Status(time.Now()); st.LocalStart != gen.next {
		b.Fatalf("cold replay: the local log starts at %d, want %d (nothing local)", st.LocalStart, gen.next)
	}
	debug.FreeOSMemory() // start from what the process holds without the replay
	req0 := tb.rc.snapshot()
	rss := startRSS()
	res := coldResult{budget: budget}
	bases := map[int64]bool{}
	for _, s := range tb.segs {
		bases[s.BaseOffset] = true
	}
	res.replayed = replay(b, func(off int64) ([]byte, error) {
		start := time.Now()
		rr, err := p.Read(context.Background(), off, benchFetchBytes)
		if bases[off] {
			// The first read of a segment waits for its footer and first
			// chunk unless they were prefetched.
			res.boundaryWait += time.Since(start)
		}
		return rr.Records, err
	}, 0, gen.next, true)
	res.rssBase, res.rssPeak, res.livePeak = rss.stop()
	res.reqs = tb.rc.snapshot().since(req0)
	res.readerGets = r.GetRequests()
	res.chunkGets = int64(metric(reg, "tierlog_cold_get_requests_total", "kind", "chunks"))
	res.chunksFetched = int64(metric(reg, "tierlog_cold_chunk_decompress_seconds"))
	res.prefetchUnused = int64(metric(reg, "tierlog_cold_prefetch_unused_total"))
	if res.records != gen.records || res.recordBytes != gen.recordBytes {
		b.Fatalf("cold replay read %d records, %d bytes; produced %d, %d", res.records, res.recordBytes, gen.records, gen.recordBytes)
	}
	return res
}

// warmResult compares reads of a range held in the chunk cache with hot
// fetches of the same bytes from the page cache: medians of three rounds,
// fetch only and fetch plus decode.
type warmResult struct {
	segments                int
	segBytes, cacheBytes    int64
	warm, hot               replayed // fetch only
	warmDecoded, hotDecoded replayed
	gets                    int64 // GETs during the measured rounds
	firstPass               replayed
}

const warmRounds = 3

// warmReplay reads the first segments holding want bytes once to fill a
// cache big enough for them, then measures rounds of warm reads and hot
// fetches, alternating so both see the same machine.
func (tb *tierBench) warmReplay(want int64) warmResult {
	b := tb.b
	var res warmResult
	for _, s := range tb.segs {
		if res.segBytes >= want && res.segments > 0 {
			break
		}
		res.segments++
		res.segBytes += s.RawSize
	}
	from, to := tb.segs[0].BaseOffset, tb.segs[res.segments-1].NextOffset
	// Room for the range and for prefetches past it.
	window := res.segBytes + 2*cold.DefaultPrefetchBytes
	res.cacheBytes = window + 2*cold.DefaultPrefetchBytes
	r, cache := tb.newReader(nil, cold.ChunkCacheOptions{MaxBytes: res.cacheBytes, WindowBytes: window})
	defer cache.Close()
	defer r.Close()
	p := tb.open(r)
	defer p.Close()
	warmRead := func(off int64) ([]byte, error) {
		res, err := p.Read(context.Background(), off, benchFetchBytes)
		return res.Records, err
	}
	res.firstPass = replay(b, warmRead, from, to, false)
	req0 := tb.rc.snapshot()
	var warm, hot, warmDec, hotDec []replayed
	for range warmRounds {
		hot = append(hot, replay(b, tb.hotRead, from, to, false))
		warm = append(warm, replay(b, warmRead, from, to, false))
		hotDec = append(hotDec, replay(b, tb.hotRead, from, to, true))
		warmDec = append(warmDec, replay(b, warmRead, from, to, true))
	}
	res.gets = tb.rc.snapshot().since(req0)["GET"]
	res.warm, res.hot, res.warmDecoded, res.hotDecoded = median(warm), median(hot), median(warmDec), median(hotDec)
	if res.warm.batchBytes != res.hot.batchBytes || res.warmDecoded.records != res.hotDecoded.records {
		b.Fatalf("warm and hot reads of offsets %d..%d differ: %d vs %d bytes, %d vs %d records",
			from, to, res.warm.batchBytes, res.hot.batchBytes, res.warmDecoded.records, res.hotDecoded.records)
	}
	return res
}

func median(rs []replayed) replayed {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b replayed) int { return int(a.d - b.d) })
	return s[len(s)/2]
}
