package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// freeLoopbackAddr is a loopback address free now, for a node that must
// come back on the same port (the producer keeps its seed address).
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// readPartitionZero reads partition 0 of topic from the start to its end
// offset with a direct (groupless) consumer.
func readPartitionZero(t *testing.T, addr, topic string) []*kgo.Record {
	t.Helper()
	end := partitionZeroEnd(t, addr, topic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	defer cancel()
	var out []*kgo.Record
	for len(out) == 0 || out[len(out)-1].Offset < end-1 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d of %d records", topic, len(out), end)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("fetch: %v", err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// partitionZeroEnd is partition 0's end offset (ListOffsets latest).
func partitionZeroEnd(t *testing.T, addr, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := ends.Lookup(topic, 0)
	if !ok || o.Err != nil {
		t.Fatalf("end offset of %s: %+v", topic, o)
	}
	return o.Offset
}

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
	addr := freeLoopbackAddr(t)
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
	recs := readPartitionZero(t, addr, "nonidem")
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
