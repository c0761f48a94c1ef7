package grpcapi

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tierlog/tierlog/api/tierlogv1"
)

// BenchmarkProduceLatency measures one synchronous Produce of one 256-byte
// record over gRPC on loopback, end to end (client marshal, server batch
// build, broker append and flush policy, response). It reports the p50 and
// p99 latency of single requests and the record rate one client reaches.
//
//	go test ./api/grpcapi -run '^$' -bench ProduceLatency -benchtime 2000x
func BenchmarkProduceLatency(b *testing.B) {
	for _, policy := range []string{"os", "always"} {
		b.Run("flush="+policy, func(b *testing.B) {
			e := newEnv(b)
			e.createTopic(b, "bench", 1, map[string]string{"flush.policy": policy})
			req := &tierlogv1.ProduceRequest{
				Topic:     "bench",
				Partition: ptr[int32](0),
				Records:   []*tierlogv1.Record{{Key: []byte("key"), Value: bytes.Repeat([]byte("v"), 256)}},
			}
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				t0 := time.Now()
				if _, err := e.c.Produce(ctx, req); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
		})
	}
}
