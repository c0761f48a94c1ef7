package broker

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// replCollector reports the replication of the partitions this node
// leads, computed at scrape time from their ReplicaSets (nothing on the
// produce or fetch path).
type replCollector struct {
	b                    *Broker
	lag, isr, replicas   *prometheus.Desc
	underReplicated, hwm *prometheus.Desc
}

func newReplCollector(b *Broker) *replCollector {
	l := []string{"topic", "partition"}
	return &replCollector{b: b,
		lag: prometheus.NewDesc("tierlog_replication_lag_records",
			"Records the furthest-behind follower lacks (leader's log end - its log end), per partition this node leads.", l, nil),
		isr: prometheus.NewDesc("tierlog_replication_isr_size",
			"In-sync replicas of a partition this node leads.", l, nil),
		replicas: prometheus.NewDesc("tierlog_replication_replicas",
			"Assigned replicas of a partition this node leads.", l, nil),
		underReplicated: prometheus.NewDesc("tierlog_replication_under_replicated_partitions",
			"Partitions this node leads whose in-sync set is smaller than their replicas.", nil, nil),
		hwm: prometheus.NewDesc("tierlog_replication_high_watermark_lag_records",
			"Leader's log end - high watermark: records written but not yet on every in-sync replica.", l, nil),
	}
}

func (c *replCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.isr, c.replicas, c.underReplicated, c.hwm} {
		ch <- d
	}
}

func (c *replCollector) Collect(ch chan<- prometheus.Metric) {
	under := 0
	for _, p := range c.b.ReplicationStatus() {
		labels := []string{p.Topic, strconv.Itoa(int(p.Partition))}
		var lag int64
		inSync := 0
		for _, r := range p.Replicas {
			if r.LogEnd < 0 {
				// Not fetched from this leader yet: all of the local log.
				lag = max(lag, p.LogEnd-p.LogStart)
			} else {
				lag = max(lag, p.LogEnd-r.LogEnd)
			}
			if r.InSync {
				inSync++
			}
		}
		if inSync < len(p.Replicas) {
			under++
		}
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(lag), labels...)
		ch <- prometheus.MustNewConstMetric(c.isr, prometheus.GaugeValue, float64(inSync), labels...)
		ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, float64(len(p.Replicas)), labels...)
		ch <- prometheus.MustNewConstMetric(c.hwm, prometheus.GaugeValue, float64(p.LogEnd-p.HighWatermark), labels...)
	}
	ch <- prometheus.MustNewConstMetric(c.underReplicated, prometheus.GaugeValue, float64(under))
}
