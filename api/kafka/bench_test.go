package kafka_test

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tierlog/tierlog/api/grpcapi"
	"github.com/tierlog/tierlog/api/kafka"
	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/internal/testutil"
)

var benchSeconds = flag.Duration("kafka.duration", 5*time.Second, "how long each BenchmarkKafka figure runs")

// benchRecord is the record size the benchmark asks for.
const benchRecord = 1024

// BenchmarkKafka measures franz-go producing and consuming 1 KiB records on
// loopback against tierlog's Kafka listener, next to the same client against
// franz-go's in-memory broker kfake in the same run, for one partition and
// eight: produce MB/s at acks=all under flush.policy=always (every
// acknowledged record fsynced) and interval on a node without a bucket, and
// under interval on a node tiering to a bucket (uploads compete for the
// machine); p50/p99 produce latency under that full load (mostly time in
// the client's buffer) and one record at a time; consume MB/s from the hot
// tier and from the bucket with an empty cache (a fresh broker per pass;
// MinIO when TIERLOG_MINIO_BIN is set, else a file:// bucket); and the gRPC
// API's produce and consume figures on the same kind of data. Each
// throughput figure runs for -kafka.duration (default 5 s).
//
//	go test ./api/kafka -run '^$' -bench Kafka -benchtime 1x
func BenchmarkKafka(b *testing.B) {
	var bucketURL func(tb testing.TB) string
	if os.Getenv("TIERLOG_MINIO_BIN") != "" {
		m := testutil.StartMinIO(b)
		for _, kv := range m.Env() { // the bucket URL's credentials
			k, v, _ := strings.Cut(kv, "=")
			b.Setenv(k, v)
		}
		bucketURL = func(tb testing.TB) string { return m.MinIOURL(m.NewBucket(tb), "bench") }
	} else {
		bucketURL = func(tb testing.TB) string { return "file://" + tb.TempDir() }
	}
	var rows []string
	for _, parts := range []int32{1, 8} {
		// Each phase starts with the heap of the last one returned (kfake
		// holds everything it was sent in memory), so none pays for
		// another's garbage.
		settle()
		always := tierlogFigures(b, parts, "always", bucketURL(b))
		settle()
		ref := kfakeFigures(b, parts)
		settle()
		interval := tierlogFigures(b, parts, "interval", bucketURL(b))
		settle()
		g := grpcFigures(b, parts)
		row := func(what string, v, refV float64, unit string) {
			rows = append(rows, fmt.Sprintf("%-2d %-44s %10.1f %-4s  kfake %8.1f  ratio %5.2fx", parts, what, v, unit, refV, v/refV))
		}
		row("produce acks=all flush=always", always.produceMBs, ref.produceMBs, "MB/s")
		row("produce acks=all flush=interval", interval.produceMBs, ref.produceMBs, "MB/s")
		row("produce acks=all flush=interval, tiering", interval.tieringMBs, ref.produceMBs, "MB/s")
		row("loaded p50 latency flush=always", ms(always.p50), ms(ref.p50), "ms")
		row("loaded p99 latency flush=always", ms(always.p99), ms(ref.p99), "ms")
		row("loaded p50 latency flush=interval", ms(interval.p50), ms(ref.p50), "ms")
		row("loaded p99 latency flush=interval", ms(interval.p99), ms(ref.p99), "ms")
		row("one-at-a-time p50 latency flush=always", us(always.sync50), us(ref.sync50), "us")
		row("one-at-a-time p99 latency flush=always", us(always.sync99), us(ref.sync99), "us")
		row("one-at-a-time p50 latency flush=interval", us(interval.sync50), us(ref.sync50), "us")
		row("one-at-a-time p99 latency flush=interval", us(interval.sync99), us(ref.sync99), "us")
		row("consume hot", interval.hotMBs, ref.consumeMBs, "MB/s")
		row("consume cold, empty cache", interval.coldMBs, ref.consumeMBs, "MB/s")
		row("gRPC produce flush=always", g.produceMBs, ref.produceMBs, "MB/s")
		row("gRPC consume hot", g.consumeMBs, ref.consumeMBs, "MB/s")
	}
	fmt.Printf("\nBenchmarkKafka: franz-go, %d-byte records, %s per figure (partitions, figure, tierlog, kfake in the same run)\n%s\n",
		benchRecord, *benchSeconds, strings.Join(rows, "\n"))
}

// settle collects garbage and returns freed memory to the OS.
func settle() {
	runtime.GC()
	debug.FreeOSMemory()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

type figures struct {
	produceMBs, consumeMBs, hotMBs, coldMBs, tieringMBs float64
	p50, p99, sync50, sync99                            time.Duration
}

func kfakeFigures(b *testing.B, parts int32) figures {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(parts, "bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	var f figures
	var n int64
	n, f.produceMBs, f.p50, f.p99 = produceFor(b, addr, "bench")
	f.consumeMBs = consumeFor(b, func() string { return addr }, "bench", n)
	f.sync50, f.sync99 = latencyFor(b, addr, "bench")
	return f
}

// benchNode is an in-process tierlog node: a broker with a bucket, its
// Kafka listener and its gRPC API, on loopback ports.
type benchNode struct {
	b     *broker.Broker
	k     *kafka.Server
	g     *grpc.Server
	api   *grpcapi.Server
	kaddr string
	gaddr string
}

func openNode(b *testing.B, dir, bucket string) *benchNode {
	var bk cold.Bucket
	if bucket != "" {
		var err error
		if bk, err = bucketurl.Open(context.Background(), bucket, cold.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	br, err := broker.Open(context.Background(), broker.Options{Dir: dir, Bucket: bk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	lns, err := kafka.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	host, port := kafka.AdvertisedFor("127.0.0.1:0", lns[0].Addr())
	budget := fetchbudget.New(0, 0, nil) // one for both front ends, as serve has
	n := &benchNode{b: br, k: kafka.New(br, kafka.Options{AdvertisedHost: host, AdvertisedPort: port, FetchBudget: budget})}
	n.kaddr = lns[0].Addr().String()
	go func() { _ = n.k.Serve(lns...) }()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	n.api = grpcapi.NewServer(br, grpcapi.Options{Budget: budget})
	n.g = grpc.NewServer(append(n.api.ServerOptions(), grpc.MaxRecvMsgSize(80<<20))...)
	n.api.Register(n.g)
	n.gaddr = gl.Addr().String()
	go func() { _ = n.g.Serve(gl) }()
	return n
}

func (n *benchNode) close(b *testing.B) {
	n.k.Close()
	n.api.Close()
	n.g.Stop()
	if err := n.b.Close(); err != nil {
		b.Error(err)
	}
}

func tierlogFigures(b *testing.B, parts int32, policy, bucket string) figures {
	// Produce and hot consume on a node without a bucket, so the figures
	// are the Kafka path's, not shared with zstd-compressing uploads.
	n := openNode(b, b.TempDir(), "")
	if _, err := n.b.CreateTopic("bench", parts, map[string]string{"flush.policy": policy}); err != nil {
		b.Fatal(err)
	}
	var f figures
	var count int64
	count, f.produceMBs, f.p50, f.p99 = produceFor(b, n.kaddr, "bench")
	f.hotMBs = consumeFor(b, func() string { return n.kaddr }, "bench", count)
	f.sync50, f.sync99 = latencyFor(b, n.kaddr, "bench")
	n.close(b)
	if policy != "interval" {
		return f
	}
	// Cold: a tiering node takes a produce (timed too: the figure with
	// uploads competing for the machine), uploads everything, and a fresh
	// node (empty cache) per pass reads it from the bucket with no local
	// copy below the end.
	dir := b.TempDir()
	n = openNode(b, dir, bucket)
	if _, err := n.b.CreateTopic("bench", parts, map[string]string{"flush.policy": policy,
		"segment.bytes": "67108864", "local.retention.bytes": "0"}); err != nil {
		b.Fatal(err)
	}
	count, f.tieringMBs, _, _ = produceFor(b, n.kaddr, "bench")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, u := range n.b.UploadAll(ctx) {
		if u.Err != nil {
			b.Fatalf("upload %s/%d: %v", u.Topic, u.Partition, u.Err)
		}
	}
	n.close(b)
	var cur *benchNode
	f.coldMBs = consumeFor(b, func() string {
		if cur != nil {
			cur.close(b)
		}
		cur = openNode(b, dir, bucket)
		for p := range parts {
			pp, err := cur.b.Partition("bench", p)
			if err != nil {
				b.Fatal(err)
			}
			pp.Log().ShrinkTo(0)
			if start := pp.Log().StartOffset(); start != pp.EndOffset() {
				b.Fatalf("partition %d keeps local records from %d to %d; the cold pass would read them", p, start, pp.EndOffset())
			}
		}
		return cur.kaddr
	}, "bench", count)
	cur.close(b)
	return f
}

// latencyFor produces one record at a time, each waiting for its
// acknowledgement, for a second, and returns the p50 and p99: the
// latency of a produce on an idle connection (the loaded figures are
// mostly time in the client's buffer).
func latencyFor(b *testing.B, addr, topic string) (time.Duration, time.Duration) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	value := make([]byte, benchRecord)
	var lat []time.Duration
	ctx := context.Background()
	for start := time.Now(); time.Since(start) < time.Second; {
		t0 := time.Now()
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// produceFor produces 1 KiB records to topic with acks=all (franz-go's
// idempotent default) for the benchmark duration and returns how many
// were acknowledged, the MB/s and the p50/p99 time from Produce to
// acknowledgement.
func produceFor(b *testing.B, addr, topic string) (int64, float64, time.Duration, time.Duration) {
	// Uncompressed (franz-go's default is snappy, which would turn these
	// figures into a measure of snappy on repetitive bytes).
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	value := make([]byte, benchRecord)
	_, _ = rand.Read(value)
	var (
		mu    sync.Mutex
		lat   []time.Duration
		acked atomic.Int64
		fail  atomic.Value
	)
	ctx := context.Background()
	start := time.Now()
	for time.Since(start) < *benchSeconds && fail.Load() == nil {
		t0 := time.Now()
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				fail.CompareAndSwap(nil, err)
				return
			}
			d := time.Since(t0)
			acked.Add(1)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	if err, _ := fail.Load().(error); err != nil {
		b.Fatalf("produce to %s: %v", addr, err)
	}
	slices.Sort(lat)
	n := acked.Load()
	return n, float64(n*benchRecord) / elapsed.Seconds() / 1e6, lat[len(lat)/2], lat[len(lat)*99/100]
}

// consumeFor reads topic from the start to count records, pass after pass
// (each from a fresh client, to the address next returns) until the
// benchmark duration has passed, and returns the MB/s of record values.
func consumeFor(b *testing.B, next func() string, topic string, count int64) float64 {
	var total int64
	var spent time.Duration
	for spent < *benchSeconds {
		addr := next()
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxBytes(50<<20), kgo.FetchMaxPartitionBytes(8<<20))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		start := time.Now()
		var got int64
		for got < count {
			fs := cl.PollFetches(ctx)
			if errs := fs.Errors(); len(errs) > 0 {
				cancel()
				b.Fatalf("consume from %s: %v", addr, errs[0].Err)
			}
			fs.EachRecord(func(r *kgo.Record) { got++; total += int64(len(r.Value)) })
		}
		spent += time.Since(start)
		cancel()
		cl.Close()
	}
	return float64(total) / spent.Seconds() / 1e6
}

// grpcFigures produces through the gRPC API (512 records, about half a
// MiB - a batch of the size kgo builds - per request; four goroutines per
// partition, each with one request in flight) under flush.policy=always,
// then reads it back with one FetchStream per partition.
func grpcFigures(b *testing.B, parts int32) figures {
	n := openNode(b, b.TempDir(), "")
	defer n.close(b)
	if _, err := n.b.CreateTopic("bench", parts, map[string]string{"flush.policy": "always"}); err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(n.gaddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(80<<20)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := tierlogv1.NewTierLogClient(conn)
	recs := make([]*tierlogv1.Record, 512)
	for i := range recs {
		recs[i] = &tierlogv1.Record{Value: make([]byte, benchRecord)}
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for p := range parts * 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &tierlogv1.ProduceRequest{Topic: "bench", Partition: &[]int32{p % parts}[0], Records: recs}
			for time.Since(start) < *benchSeconds {
				if _, err := c.Produce(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
				sent.Add(int64(len(recs)))
			}
		}()
	}
	wg.Wait()
	var f figures
	f.produceMBs = float64(sent.Load()*benchRecord) / time.Since(start).Seconds() / 1e6

	var total int64
	var spent time.Duration
	for spent < *benchSeconds && !b.Failed() {
		t0 := time.Now()
		var got atomic.Int64
		for p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				_, end, _ := n.b.Offsets("bench", p)
				st, err := c.FetchStream(ctx, &tierlogv1.FetchStreamRequest{Fetch: &tierlogv1.FetchRequest{
					Topic: "bench", Partition: p, Start: &tierlogv1.FetchRequest_Offset{Offset: 0}, MaxBytes: 8 << 20}, Limit: end})
				if err != nil {
					b.Error(err)
					return
				}
				for {
					resp, err := st.Recv()
					if err != nil {
						b.Error(err)
						return
					}
					for _, r := range resp.GetRecords() {
						got.Add(int64(len(r.GetValue())))
					}
					if resp.GetNextOffset() >= end {
						return
					}
				}
			}()
		}
		wg.Wait()
		spent += time.Since(t0)
		total += got.Load()
	}
	f.consumeMBs = float64(total) / spent.Seconds() / 1e6
	return f
}
