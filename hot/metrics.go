package hot

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are shared by every log of a process; per-partition series carry
// topic and partition labels.
type Metrics struct {
	appendLatency prometheus.Histogram
	fsyncLatency  prometheus.Histogram
	fsyncBatch    prometheus.Histogram
	bytesIn       *prometheus.CounterVec
	recordsIn     *prometheus.CounterVec
	bytesOut      *prometheus.CounterVec
	batchesOut    *prometheus.CounterVec
	segments      *prometheus.GaugeVec
	endOffset     *prometheus.GaugeVec
	highWatermark *prometheus.GaugeVec
	startOffset   *prometheus.GaugeVec
	fsyncErrors   prometheus.Counter
	duplicates    prometheus.Counter
	// producersDropped counts idempotent producers dropped by
	// Options.MaxProducers (not by expiry).
	producersDropped prometheus.Counter
}

// NewMetrics registers the hot tier's metrics on reg (which may be nil for
// unregistered metrics).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	lat := prometheus.ExponentialBuckets(0.00001, 2, 20) // 10µs .. ~5s
	pl := []string{"topic", "partition"}
	return &Metrics{
		appendLatency:    f.NewHistogram(prometheus.HistogramOpts{Name: "tierlog_hot_append_duration_seconds", Help: "Time from append call to acknowledgement, including the wait for the flush policy.", Buckets: lat}),
		fsyncLatency:     f.NewHistogram(prometheus.HistogramOpts{Name: "tierlog_hot_fsync_duration_seconds", Help: "Duration of segment fsyncs.", Buckets: lat}),
		fsyncBatch:       f.NewHistogram(prometheus.HistogramOpts{Name: "tierlog_hot_group_commit_appends", Help: "Appends made durable by one group-commit fsync.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		bytesIn:          f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_hot_bytes_in_total", Help: "Batch bytes appended."}, pl),
		recordsIn:        f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_hot_records_in_total", Help: "Records appended."}, pl),
		bytesOut:         f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_hot_bytes_out_total", Help: "Batch bytes read by fetches."}, pl),
		batchesOut:       f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_hot_batches_out_total", Help: "Batches read by fetches."}, pl),
		segments:         f.NewGaugeVec(prometheus.GaugeOpts{Name: "tierlog_hot_segments", Help: "Local segments."}, pl),
		endOffset:        f.NewGaugeVec(prometheus.GaugeOpts{Name: "tierlog_hot_log_end_offset", Help: "Next offset to be written."}, pl),
		highWatermark:    f.NewGaugeVec(prometheus.GaugeOpts{Name: "tierlog_hot_high_watermark_offset", Help: "Offset below which consumers may read: the log end on a single node, the offset every in-sync replica holds in a replicated partition."}, pl),
		startOffset:      f.NewGaugeVec(prometheus.GaugeOpts{Name: "tierlog_hot_log_start_offset", Help: "First offset held locally."}, pl),
		fsyncErrors:      f.NewCounter(prometheus.CounterOpts{Name: "tierlog_hot_fsync_errors_total", Help: "Failed fsyncs; each one fails its log until reopened."}),
		duplicates:       f.NewCounter(prometheus.CounterOpts{Name: "tierlog_hot_duplicate_batches_total", Help: "Idempotent producers' retries of batches already in the log, answered with the original offsets (nothing written)."}),
		producersDropped: f.NewCounter(prometheus.CounterOpts{Name: "tierlog_hot_producers_dropped_total", Help: "Idempotent producers whose state a partition dropped, least recently seen first, to stay within its cap on producers; a dropped producer's next batch is accepted as an unknown producer's."}),
	}
}

// partitionMetrics are one log's curried series.
type partitionMetrics struct {
	m                                        *Metrics
	bytesIn, recordsIn, bytesOut, batchesOut prometheus.Counter
	segments, endOffset, startOffset         prometheus.Gauge
	highWatermark                            prometheus.Gauge
}

func (m *Metrics) forPartition(topic string, partition int32) *partitionMetrics {
	if m == nil {
		m = NewMetrics(nil)
	}
	l := prometheus.Labels{"topic": topic, "partition": strconv.Itoa(int(partition))}
	return &partitionMetrics{
		m:           m,
		bytesIn:     m.bytesIn.With(l),
		recordsIn:   m.recordsIn.With(l),
		bytesOut:    m.bytesOut.With(l),
		batchesOut:  m.batchesOut.With(l),
		segments:    m.segments.With(l),
		endOffset:   m.endOffset.With(l),
		startOffset: m.startOffset.With(l),

		highWatermark: m.highWatermark.With(l),
	}
}

// drop removes a deleted partition's series.
func (m *Metrics) drop(topic string, partition int32) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"topic": topic, "partition": strconv.Itoa(int(partition))}
	for _, v := range []*prometheus.CounterVec{m.bytesIn, m.recordsIn, m.bytesOut, m.batchesOut} {
		v.Delete(l)
	}
	for _, v := range []*prometheus.GaugeVec{m.segments, m.endOffset, m.startOffset, m.highWatermark} {
		v.Delete(l)
	}
}
