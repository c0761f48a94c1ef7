package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestSigtermAnswersStoredKafkaProduces: README "Shutdown" promises
// that on SIGTERM requests in flight finish and their answers are written
// ("a producer told a stored produce failed retries it and stores it
// twice"). The Kafka listener drains (Server.Shutdown) rather than cut
// every connection at once, which lost the answer of a Produce already
// appended: a producer that is not idempotent (kgo.DisableIdempotentWrite,
// acks=all) retried it against the restarted node, which stored it a
// second time. Five SIGTERMs under such a producer store every record
// exactly once.
func TestSigtermAnswersStoredKafkaProduces(t *testing.T) {
	addr := testutil.FreeAddr(t)
	dataDir := t.TempDir()
	n := startNode(t, dataDir, nil, "--kafka-addr", addr)
	ok(t, n, "", "topic", "create", "nonidem", "--partitions", "1")

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic("nonidem"), kgo.ProducerLinger(0), kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// A producer that always has requests in flight (kgo keeps one
	// produce request in flight per broker without idempotence).
	var acked, produced atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1<<20)
	stop := make(chan struct{})
	ctx := context.Background()
	pad := bytes.Repeat([]byte("x"), 4096)
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for produced.Load()-acked.Load() > 200 {
				time.Sleep(time.Millisecond) // bound the backlog only
			}
			wg.Add(1)
			produced.Add(1)
			cl.Produce(ctx, &kgo.Record{Partition: 0, Value: append(fmt.Appendf(nil, "v%07d-", i), pad...)}, func(_ *kgo.Record, err error) {
				defer wg.Done()
				if err != nil {
					errs <- err
					return
				}
				acked.Add(1)
			})
		}
	}()
	for range 5 {
		base := acked.Load()
		eventually(t, "records acknowledged", func() error {
			if acked.Load() < base+300 {
				return fmt.Errorf("%d acknowledged", acked.Load())
			}
			return nil
		})
		// Graceful stop while produces are in flight, then the same node
		// back on the same port.
		if code := n.signal(syscall.SIGTERM); code != 0 {
			t.Fatalf("SIGTERM: exit %d", code)
		}
		n = startNode(t, dataDir, nil, "--kafka-addr", addr)
	}
	close(stop)
	<-prodDone
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("produce failed: %v", err)
	default:
	}
	total := int(produced.Load())
	recs := kafkaReadAll(t, addr, "nonidem")
	seen := map[string]int64{}
	dups := 0
	for _, r := range recs {
		if first, ok := seen[string(r.Value)]; ok {
			dups++
			if dups <= 5 {
				t.Errorf("record %s stored twice: offsets %d and %d", r.Value[:8], first, r.Offset)
			}
			continue
		}
		seen[string(r.Value)] = r.Offset
	}
	if dups > 0 || len(recs) != total {
		t.Fatalf("%d records stored for %d produced (%d duplicates): SIGTERM dropped the answers of stored produces", len(recs), total, dups)
	}
}
