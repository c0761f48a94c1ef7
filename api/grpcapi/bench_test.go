package grpcapi

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/api/tierlogv1"
)

// BenchmarkProduceLatency measures one synchronous Produce of one 256-byte
// record over gRPC on loopback, end to end (client marshal, server batch
// build, broker append and flush policy, response), from one client. It
// reports the p50 and p99 latency of single requests and the record rate.
//
//	go test ./api/grpcapi -run '^$' -bench ProduceLatency -benchtime 2000x
func BenchmarkProduceLatency(b *testing.B) {
	for _, policy := range []string{"os", "always"} {
		b.Run("flush="+policy, func(b *testing.B) {
			benchProduce(b, policy, 0)
		})
	}
}

// BenchmarkProduceConcurrent is BenchmarkProduceLatency with 8 clients per
// core producing to one partition at once: with flush.policy=always the log's
// group commit shares one fsync among the requests waiting on it, which this
// shows as a record rate far above the single-client one.
func BenchmarkProduceConcurrent(b *testing.B) {
	for _, policy := range []string{"os", "always"} {
		b.Run("flush="+policy, func(b *testing.B) {
			benchProduce(b, policy, 8)
		})
	}
}

// benchProduce runs b.N produces from one client when parallelism is 0, or
// from parallelism*GOMAXPROCS concurrent clients (sharing one connection, as
// the goroutines of one process would).
func benchProduce(b *testing.B, policy string, parallelism int) {
	e := newEnv(b)
	e.createTopic(b, "bench", 1, map[string]string{"flush.policy": policy})
	req := &tierlogv1.ProduceRequest{
		Topic:     "bench",
		Partition: ptr[int32](0),
		Records:   []*tierlogv1.Record{{Key: []byte("key"), Value: bytes.Repeat([]byte("v"), 256)}},
	}
	ctx := context.Background()
	var (
		mu  sync.Mutex
		lat = make([]time.Duration, 0, b.N)
	)
	one := func() bool {
		t0 := time.Now()
		if _, err := e.c.Produce(ctx, req); err != nil {
			b.Error(err)
			return false
		}
		d := time.Since(t0)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return true
	}
	b.ResetTimer()
	start := time.Now()
	if parallelism == 0 {
		for i := 0; i < b.N && one(); i++ {
		}
	} else {
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() && one() {
			}
		})
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "records/s")
}
