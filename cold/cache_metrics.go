package cold

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// cacheMetrics are the chunk cache's Prometheus metrics.
type cacheMetrics struct {
	hits, misses, evictions, rejections, prefetchUnused prometheus.Counter
}

func newCacheMetrics(reg prometheus.Registerer, c *ChunkCache) (*cacheMetrics, error) {
	m := &cacheMetrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_cache_hits_total",
			Help: "Chunk lookups served from the cache or by joining a download in flight."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_cache_misses_total",
			Help: "Chunk lookups that started a download."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_cache_evictions_total",
			Help: "Chunks evicted from the main (ristretto) cache to make room."}),
		rejections: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_cache_rejections_total",
			Help: "Chunks leaving the window that the main cache's admission policy refused."}),
		prefetchUnused: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_prefetch_unused_total",
			Help: "Prefetched chunks evicted from the window before any reader asked for them."}),
	}
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tierlog_cold_cache_bytes",
		Help: "Bytes of decompressed chunks held or reserved by the cache (window and main)."},
		func() float64 { s := c.Stats(); return float64(s.MainBytes + s.WindowBytes) })
	budget := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tierlog_cold_cache_budget_bytes",
		Help: "The cache's byte budget (--cache-bytes)."},
		func() float64 { return float64(c.opts.MaxBytes) })
	if err := register(reg, m.hits, m.misses, m.evictions, m.rejections, m.prefetchUnused, held, budget); err != nil {
		return nil, err
	}
	return m, nil
}

// readerMetrics are a Reader's Prometheus metrics.
type readerMetrics struct {
	getRequests      *prometheus.CounterVec
	getBytes         prometheus.Counter
	getRetries       prometheus.Counter
	checksumFailures prometheus.Counter
	decompress       prometheus.Histogram
	prefetched       prometheus.Counter
}

func newReaderMetrics(reg prometheus.Registerer) (*readerMetrics, error) {
	m := &readerMetrics{
		getRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_cold_get_requests_total",
			Help: "Ranged GET requests sent to the bucket, by what they fetched (footer or chunks)."}, []string{"kind"}),
		getBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_get_bytes_total",
			Help: "Bytes received from ranged GETs."}),
		getRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_get_retries_total",
			Help: "Ranged GETs repeated after a retryable error or a corrupt chunk."}),
		checksumFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_chunk_checksum_failures_total",
			Help: "Chunks whose stored or raw CRC-32C did not match the footer (before retries)."}),
		decompress: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tierlog_cold_chunk_decompress_seconds",
			Help:    "Time to verify and decompress one chunk.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)}),
		prefetched: prometheus.NewCounter(prometheus.CounterOpts{Name: "tierlog_cold_prefetch_chunks_total",
			Help: "Chunks downloaded ahead of a sequential reader."}),
	}
	if err := register(reg, m.getRequests, m.getBytes, m.getRetries, m.checksumFailures, m.decompress, m.prefetched); err != nil {
		return nil, err
	}
	return m, nil
}

func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("cold: register metrics: %w", err)
		}
	}
	return nil
}
