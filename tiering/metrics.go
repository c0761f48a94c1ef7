package tiering

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type daemonMetrics struct {
	uploads        *prometheus.CounterVec
	uploadBytes    prometheus.Counter
	uploadRawBytes prometheus.Counter
	uploadSeconds  prometheus.Histogram
	retries        *prometheus.CounterVec
	deletes        prometheus.Counter
	orphans        prometheus.Counter
	fenced         prometheus.Counter
	lockDeferred   prometheus.Counter

	// The local-disk ceiling.
	localBytes        prometheus.Gauge
	localPendingBytes prometheus.Gauge
	localMaxBytes     prometheus.Gauge
	refusing          prometheus.Gauge
	produceRefused    prometheus.Counter
}

func newDaemonMetrics(reg prometheus.Registerer) *daemonMetrics {
	f := promauto.With(reg)
	return &daemonMetrics{
		uploads:        f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_tiering_uploads_total", Help: "Segment uploads by result (ok, failed)."}, []string{"result"}),
		uploadBytes:    f.NewCounter(prometheus.CounterOpts{Name: "tierlog_tiering_upload_bytes_total", Help: "Object bytes uploaded (compressed)."}),
		uploadRawBytes: f.NewCounter(prometheus.CounterOpts{Name: "tierlog_tiering_upload_raw_bytes_total", Help: "Segment bytes uploaded, before compression."}),
		uploadSeconds:  f.NewHistogram(prometheus.HistogramOpts{Name: "tierlog_tiering_upload_duration_seconds", Help: "Time to build, upload, verify and commit one segment.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		retries:        f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_tiering_retries_total", Help: "Retried bucket operations by operation."}, []string{"op"}),
		deletes:        f.NewCounter(prometheus.CounterOpts{Name: "tierlog_tiering_remote_deletes_total", Help: "Remote segments deleted by retention."}),
		orphans:        f.NewCounter(prometheus.CounterOpts{Name: "tierlog_tiering_orphans_deleted_total", Help: "Objects of failed or abandoned uploads deleted."}),
		lockDeferred:   f.NewCounter(prometheus.CounterOpts{Name: "tierlog_tiering_locked_deletes_deferred_total", Help: "Deletions that wait for an Object Lock retain-until date or legal hold: remote segments by retention, orphan object versions by the sweep (counted once per object version and deferral)."}),
		fenced:         f.NewCounter(prometheus.CounterOpts{Name: "tierlog_tiering_leader_fenced_total", Help: "Times a partition leader stopped tiering because another leader moved its manifest (shared prefix)."}),

		localBytes:        f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_tiering_local_bytes", Help: "Bytes of local segments, all partitions of the node."}),
		localPendingBytes: f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_tiering_local_pending_upload_bytes", Help: "Bytes of local segments not yet uploaded to the bucket."}),
		localMaxBytes:     f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_tiering_local_max_bytes", Help: "The node's local-disk ceiling (local_disk_max_bytes); 0 when there is none."}),
		refusing:          f.NewGauge(prometheus.GaugeOpts{Name: "tierlog_tiering_partitions_refusing_produce", Help: "Partitions refusing produce because a local-disk ceiling is reached."}),
		produceRefused:    f.NewCounter(prometheus.CounterOpts{Name: "tierlog_tiering_produce_refused_total", Help: "Produce requests refused at a local-disk ceiling."}),
	}
}
