package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var (
	clusterBenchDuration   = flag.Duration("cluster.duration", 5*time.Second, "how long each BenchmarkCluster produce figure runs")
	clusterBenchFailovers  = flag.Int("cluster.failovers", 5, "leader SIGKILLs BenchmarkCluster times")
	clusterBenchPartitions = flag.Int("cluster.partitions", 6, "partitions of BenchmarkCluster's produce topic")
	clusterBenchProducers  = flag.Int("cluster.producers", 4, "concurrent franz-go producers (one client each) in BenchmarkCluster")
)

// clusterBenchRecord is the record value size the issue asks for.
const clusterBenchRecord = 1024

// BenchmarkCluster measures what replication costs and how long a failover
// takes, through real `tierlog serve` processes on loopback and franz-go
// clients, in one run: a single node and then three nodes (replication
// factor 3, min.insync.replicas=2), each at acks=1 and acks=all, with
// default settings (flush.policy=always) and no bucket. Per figure:
// throughput of -cluster.producers clients producing uncompressed 1 KiB
// records to -cluster.partitions partitions for -cluster.duration, the
// p50/p99 time from Produce to acknowledgement under that load (each client
// buffers at most 1000 records, so this is mostly queueing), and the p50/p99
// of one record at a time on an idle cluster (the replication round trip
// itself). Then -cluster.failovers times: a producer at acks=all on a
// one-partition topic, the partition's leader SIGKILLed, and the time until
// the first batch acknowledged by the new leader, split into the steps the
// nodes log (controller elected, leader moved) and the survivors' Metadata.
//
//	go test ./cmd/tierlog -run '^$' -bench Cluster -benchtime 1x
//
// Nothing here fails on a figure; it fails only if the cluster does.
func BenchmarkCluster(b *testing.B) {
	parts := int32(*clusterBenchPartitions)
	type phase struct {
		what   string
		loaded produceFigures
		idle   latencyFigures
	}
	var phases []phase
	run := func(what string, seeds []string, acks kgo.Acks) phase {
		p := phase{what: what, loaded: clusterProduceFor(b, seeds, "bench", acks)}
		p.idle = clusterLatencyFor(b, seeds, "bench", acks)
		b.Logf("%s: %.1f MB/s", what, p.loaded.mbs())
		return p
	}

	single := startNode(b, filepath.Join(b.TempDir(), "single"), nil, "--bucket", "none")
	createBenchTopic(b, []string{single.kafkaAddr}, "bench", parts, 1)
	phases = append(phases, run("1 node, acks=1", []string{single.kafkaAddr}, kgo.LeaderAck()))
	phases = append(phases, run("1 node, acks=all", []string{single.kafkaAddr}, kgo.AllISRAcks()))
	single.signal(syscall.SIGTERM)

	c := startCluster(b, 3, "--bucket", "none", "--log-format", "json")
	createBenchTopic(b, c.kafkaAddrs(), "bench", parts, 3)
	for p := range parts {
		waitInSync(b, c, "bench", p, 3)
	}
	phases = append(phases, run("3 nodes, acks=1", c.kafkaAddrs(), kgo.LeaderAck()))
	phases = append(phases, run("3 nodes, acks=all", c.kafkaAddrs(), kgo.AllISRAcks()))

	createBenchTopic(b, c.kafkaAddrs(), "failover", 1, 3)
	var trials []failoverTrial
	for i := range *clusterBenchFailovers {
		tr := clusterFailover(b, c, "failover")
		b.Logf("failover %d: %s", i+1, tr)
		trials = append(trials, tr)
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\nBenchmarkCluster: franz-go, %d producers, %d-byte records, %d partitions, %s per figure, flush.policy=always\n",
		*clusterBenchProducers, clusterBenchRecord, parts, *clusterBenchDuration)
	fmt.Fprintf(&out, "%-18s %9s %11s %11s %11s %13s %13s\n", "", "MB/s", "records/s", "loaded p50", "loaded p99", "one-by-one p50", "one-by-one p99")
	for _, p := range phases {
		fmt.Fprintf(&out, "%-18s %9.1f %11.0f %11s %11s %13s %13s\n", p.what, p.loaded.mbs(), p.loaded.perSecond(),
			roundDur(p.loaded.p50), roundDur(p.loaded.p99), roundDur(p.idle.p50), roundDur(p.idle.p99))
	}
	ratio := func(x, y phase) float64 { return x.loaded.mbs() / y.loaded.mbs() }
	fmt.Fprintf(&out, "throughput ratios: 3 nodes acks=all / 1 node acks=all %.2f (target >= 0.5), / 1 node acks=1 %.2f; 3 nodes acks=1 / 1 node acks=1 %.2f\n",
		ratio(phases[3], phases[1]), ratio(phases[3], phases[0]), ratio(phases[2], phases[0]))
	fmt.Fprintf(&out, "failover (SIGKILL of the partition's leader -> first acks=all batch acknowledged by the new leader), times after the kill:\n")
	var firsts []time.Duration
	for i, tr := range trials {
		fmt.Fprintf(&out, "  %d: %s\n", i+1, tr)
		firsts = append(firsts, tr.acked)
	}
	if len(firsts) > 0 {
		slices.Sort(firsts)
		fmt.Fprintf(&out, "failover over %d kills: median %s, max %s (target < 5s)\n", len(firsts), roundDur(firsts[len(firsts)/2]), roundDur(firsts[len(firsts)-1]))
	}
	fmt.Print(out.String())
}

// roundDur prints d to a precision that suits its size.
func roundDur(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}

// createBenchTopic creates topic with rf replicas (min.insync.replicas=2
// when replicated) through the Kafka API.
func createBenchTopic(b *testing.B, seeds []string, topic string, parts int32, rf int16) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	cfg := map[string]*string{}
	if rf > 1 {
		cfg["min.insync.replicas"] = kadm.StringPtr("2")
	}
	resp, err := kadm.NewClient(cl).CreateTopic(context.Background(), parts, rf, cfg, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		b.Fatalf("create topic %s: %v", topic, err)
	}
}

// benchProducerOpts are the options of a benchmark producer at acks:
// uncompressed, and at acks=1 not idempotent (Kafka requires acks=all for
// idempotence) but with as many requests in flight as an idempotent one.
func benchProducerOpts(seeds []string, topic string, acks kgo.Acks) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(acks),
		kgo.ProducerBatchCompression(kgo.NoCompression())}
	if acks != kgo.AllISRAcks() {
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(5))
	}
	return opts
}

type produceFigures struct {
	records  int64
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (f produceFigures) perSecond() float64 { return float64(f.records) / f.elapsed.Seconds() }
func (f produceFigures) mbs() float64       { return f.perSecond() * clusterBenchRecord / 1e6 }

type latencyFigures struct{ p50, p99 time.Duration }

// clusterProduceFor runs the producers for the benchmark duration and
// waits for every record to be acknowledged.
func clusterProduceFor(b *testing.B, seeds []string, topic string, acks kgo.Acks) produceFigures {
	value := make([]byte, clusterBenchRecord)
	for i := range value {
		value[i] = byte(i * 7)
	}
	var (
		mu    sync.Mutex
		lat   []time.Duration
		acked atomic.Int64
		fail  atomic.Value
		wg    sync.WaitGroup
	)
	start := time.Now()
	for range *clusterBenchProducers {
		cl, err := kgo.NewClient(append(benchProducerOpts(seeds, topic, acks), kgo.MaxBufferedRecords(1000))...)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			var mine []time.Duration
			var mmu sync.Mutex
			for time.Since(start) < *clusterBenchDuration && fail.Load() == nil {
				t0 := time.Now()
				cl.Produce(context.Background(), &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
					if err != nil {
						fail.CompareAndSwap(nil, err)
						return
					}
					d := time.Since(t0)
					acked.Add(1)
					mmu.Lock()
					mine = append(mine, d)
					mmu.Unlock()
				})
			}
			if err := cl.Flush(context.Background()); err != nil {
				fail.CompareAndSwap(nil, err)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := fail.Load().(error); err != nil {
		b.Fatalf("produce: %v", err)
	}
	slices.Sort(lat)
	return produceFigures{records: acked.Load(), elapsed: elapsed, p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// clusterLatencyFor produces one record at a time for a second, each
// waiting for its acknowledgement: the latency of an idle cluster.
func clusterLatencyFor(b *testing.B, seeds []string, topic string, acks kgo.Acks) latencyFigures {
	cl, err := kgo.NewClient(append(benchProducerOpts(seeds, topic, acks), kgo.ProducerLinger(0))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	value := make([]byte, clusterBenchRecord)
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil { // metadata, producer id
		b.Fatal(err)
	}
	var lat []time.Duration
	for start := time.Now(); time.Since(start) < time.Second; {
		t0 := time.Now()
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return latencyFigures{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// failoverTrial is one leader kill; every time is from the kill (-1: not
// seen).
type failoverTrial struct {
	killed        int32
	wasController bool
	controller    time.Duration // a survivor logs "became the cluster controller"
	moved         time.Duration // the controller logs "partition leader changed"
	metadata      time.Duration // a survivor's Metadata names the new leader
	acked         time.Duration // first batch acknowledged by the new leader
	newLeader     int32
}

func (tr failoverTrial) String() string {
	ctl := "a follower"
	if tr.wasController {
		ctl = "the controller"
	}
	s := fmt.Sprintf("killed node %d (%s): ", tr.killed, ctl)
	if tr.wasController {
		s += fmt.Sprintf("new controller %s, ", roundDur(tr.controller))
	}
	return s + fmt.Sprintf("leader moved to %d %s, in Metadata %s, first acks=all ack %s",
		tr.newLeader, roundDur(tr.moved), roundDur(tr.metadata), roundDur(tr.acked))
}

// newLeaderHook records the first batch a node other than the killed one
// acknowledges after the kill: only a new leader can.
type newLeaderHook struct {
	armed  atomic.Bool
	killed atomic.Int32
	mu     sync.Mutex
	at     time.Time
	by     int32
	before atomic.Int64
}

func (h *newLeaderHook) OnProduceBatchWritten(meta kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	if !h.armed.Load() {
		h.before.Add(int64(m.NumRecords))
		return
	}
	if meta.NodeID == h.killed.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at.IsZero() {
		h.at, h.by = time.Now(), meta.NodeID
	}
}

func (h *newLeaderHook) first() (time.Time, int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at, h.by
}

// clusterFailover kills the leader of topic/0 under an acks=all producer
// and measures until the new leader acknowledges; then restarts the node
// and waits until it is back in sync.
func clusterFailover(b *testing.B, c *testCluster, topic string) failoverTrial {
	b.Helper()
	c.waitAlive(3)
	waitInSync(b, c, topic, 0, 3)
	st := clusterStatusJSON(b, c.anyNode())
	leader := leaderOf(b, c, topic, 0)
	tr := failoverTrial{killed: leader, wasController: st.Controller == leader, controller: -1, moved: -1, metadata: -1, acked: -1}

	hook := &newLeaderHook{}
	cl, err := kgo.NewClient(append(benchProducerOpts(c.kafkaAddrs(), topic, kgo.AllISRAcks()),
		kgo.RecordRetries(1<<30), kgo.RecordDeliveryTimeout(2*time.Minute), kgo.WithHooks(hook))...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, stop := context.WithCancel(context.Background())
	var failed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		value := make([]byte, clusterBenchRecord)
		for i := 0; ctx.Err() == nil; i++ {
			cl.Produce(context.Background(), &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				}
			})
			if i%16 == 15 {
				time.Sleep(2 * time.Millisecond) // a steady stream (~8k records/s at most), not a flood
			}
		}
	}()
	eventually(b, "the producer writes to the leader", func() error {
		if n := hook.before.Load(); n < 500 {
			return fmt.Errorf("%d records acknowledged", n)
		}
		return nil
	})

	// Watch the survivors' Metadata from the moment of the kill.
	var survivors []string
	for id, n := range c.nodes {
		if int32(id+1) != leader {
			survivors = append(survivors, n.kafkaAddr)
		}
	}
	hook.killed.Store(leader)
	killedAt := time.Now()
	hook.armed.Store(true)
	c.kill(int(leader), syscall.SIGKILL)
	tr.metadata = watchMetadata(b, survivors, topic, leader, killedAt)
	eventually(b, "the new leader acknowledges", func() error {
		if at, _ := hook.first(); at.IsZero() {
			return fmt.Errorf("no batch acknowledged by a new leader yet")
		}
		return nil
	})
	at, by := hook.first()
	tr.acked, tr.newLeader = at.Sub(killedAt), by
	stop()
	<-done
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatalf("flush: %v", err)
	}
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d records failed to produce", n)
	}
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		ev := logEventsSince(n.stderr.String(), killedAt)
		if t, ok := ev["became the cluster controller"]; ok {
			tr.controller = t.Sub(killedAt)
		}
		if t, ok := ev["partition leader changed"]; ok {
			tr.moved = t.Sub(killedAt)
		}
	}
	c.start(int(leader))
	return tr
}

// watchMetadata polls the survivors' Metadata every 10 ms until one names
// a leader of topic/0 other than killed, and returns when that was.
func watchMetadata(b *testing.B, seeds []string, topic string, killed int32, since time.Time) time.Duration {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	for time.Since(since) < time.Minute {
		for _, br := range cl.SeedBrokers() {
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(topic)
			req.Topics = append(req.Topics, rt)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := br.Request(ctx, req)
			cancel()
			if err != nil {
				continue
			}
			for _, t := range resp.(*kmsg.MetadataResponse).Topics {
				for _, p := range t.Partitions {
					if p.Partition == 0 && p.Leader >= 0 && p.Leader != killed {
						return time.Since(since)
					}
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatalf("no survivor names a new leader of %s/0 a minute after the kill", topic)
	return 0
}

// logEventsSince returns, per message, the time of its first line at or
// after since in a node's JSON log.
func logEventsSince(log string, since time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Time.Before(since) {
			continue
		}
		if _, ok := out[line.Msg]; !ok {
			out[line.Msg] = line.Time
		}
	}
	return out
}
