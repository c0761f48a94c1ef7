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
	}
}
