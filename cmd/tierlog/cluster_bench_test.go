package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
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
	clusterBenchRounds     = flag.Int("cluster.rounds", 3, "rounds of BenchmarkCluster's produce figures (medians are printed)")
	clusterBenchFailovers  = flag.Int("cluster.failovers", 5, "leader SIGKILLs BenchmarkCluster times")
	clusterBenchPartitions = flag.Int("cluster.partitions", 6, "partitions of BenchmarkCluster's produce topic")
	clusterBenchFlush      = flag.String("cluster.flush", "always", "flush.policy of every BenchmarkCluster node (always, interval, os)")
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
	// Both set-ups run side by side and the figures are taken in turns,
	// round after round, so both see the same machine (on a shared 2-core
	// VM the load of other work moves a lot between seconds).
	single := startNode(b, filepath.Join(b.TempDir(), "single"), nil, "--bucket", "none", "--default", "flush.policy="+*clusterBenchFlush)
	createBenchTopic(b, []string{single.kafkaAddr}, "bench", parts, 1)
	c := startCluster(b, 3, "--bucket", "none", "--log-format", "json", "--default", "flush.policy="+*clusterBenchFlush)
	createBenchTopic(b, c.kafkaAddrs(), "bench", parts, 3)
	for p := range parts {
		waitInSync(b, c, "bench", p, 3)
	}
	type setup struct {
		what  string
		seeds []string
		acks  kgo.Acks
		runs  []produceFigures
		idle  []latencyFigures
	}
	setups := []*setup{
		{what: "1 node, acks=1", seeds: []string{single.kafkaAddr}, acks: kgo.LeaderAck()},
		{what: "3 nodes, acks=1", seeds: c.kafkaAddrs(), acks: kgo.LeaderAck()},
		{what: "1 node, acks=all", seeds: []string{single.kafkaAddr}, acks: kgo.AllISRAcks()},
		{what: "3 nodes, acks=all", seeds: c.kafkaAddrs(), acks: kgo.AllISRAcks()},
	}
	// The reference: this machine's disk, written the way a segment is
	// (sequential write(2), fsync per MiB under flush.policy=always), for
	// as long as each figure, in the same rounds. Three replicas on one
	// disk write every acknowledged byte three times.
	var raw []float64
	for round := range *clusterBenchRounds {
		for _, s := range setups {
			f := clusterProduceFor(b, s.seeds, "bench", s.acks)
			s.runs = append(s.runs, f)
			s.idle = append(s.idle, clusterLatencyFor(b, s.seeds, "bench", s.acks))
			b.Logf("round %d, %s: %.1f MB/s", round+1, s.what, f.mbs())
		}
		raw = append(raw, rawDiskFor(b, b.TempDir(), *clusterBenchDuration, *clusterBenchFlush == "always"))
		b.Logf("round %d, raw disk: %.1f MB/s", round+1, raw[len(raw)-1])
	}
	single.signal(syscall.SIGTERM)

	createBenchTopic(b, c.kafkaAddrs(), "failover", 1, 3)
	trials := clusterFailovers(b, c, "failover", *clusterBenchFailovers)

	var out strings.Builder
	fmt.Fprintf(&out, "\nBenchmarkCluster: franz-go, %d producers, %d-byte records, %d partitions, flush.policy=%s, %d rounds of %s per figure (medians; each round's MB/s in brackets)\n",
		*clusterBenchProducers, clusterBenchRecord, parts, *clusterBenchFlush, *clusterBenchRounds, *clusterBenchDuration)
	fmt.Fprintf(&out, "%-18s %8s %10s %11s %11s %14s %14s  %s\n", "", "MB/s", "records/s", "loaded p50", "loaded p99", "one-by-one p50", "one-by-one p99", "rounds")
	med := map[string]float64{}
	for _, s := range setups {
		f := medianBy(s.runs, produceFigures.mbs)
		l := medianBy(s.idle, func(l latencyFigures) float64 { return float64(l.p50) })
		var each []string
		for _, r := range s.runs {
			each = append(each, fmt.Sprintf("%.0f", r.mbs()))
		}
		med[s.what] = f.mbs()
		fmt.Fprintf(&out, "%-18s %8.1f %10.0f %11s %11s %14s %14s  [%s]\n", s.what, f.mbs(), f.perSecond(),
			roundDur(f.p50), roundDur(f.p99), roundDur(l.p50), roundDur(l.p99), strings.Join(each, " "))
	}
	rawMed := medianBy(raw, func(x float64) float64 { return x })
	var each []string
	for _, r := range raw {
		each = append(each, fmt.Sprintf("%.0f", r))
	}
	fmt.Fprintf(&out, "%-18s %8.1f %10s %11s %11s %14s %14s  [%s]\n", "raw disk", rawMed, "", "", "", "", "", strings.Join(each, " "))
	fmt.Fprintf(&out, "ratios: 3 nodes acks=all / 1 node acks=all %.2f (target >= 0.5); 3 nodes acks=1 / 1 node acks=1 %.2f; 3 nodes acks=all / 3 nodes acks=1 %.2f\n",
		med["3 nodes, acks=all"]/med["1 node, acks=all"], med["3 nodes, acks=1"]/med["1 node, acks=1"], med["3 nodes, acks=all"]/med["3 nodes, acks=1"])
	fmt.Fprintf(&out, "disk bytes written / raw disk: 1 node acks=all %.2f, 3 nodes acks=all %.2f (3 replicas on one disk: 3x the acknowledged bytes)\n",
		med["1 node, acks=all"]/rawMed, 3*med["3 nodes, acks=all"]/rawMed)
	fmt.Fprintf(&out, "failover: leader of a 1-partition topic SIGKILLed under acks=all producers; times after the kill\n")
	for i, tr := range trials {
		fmt.Fprintf(&out, "  %d: %s\n", i+1, tr)
	}
	for _, w := range []struct {
		what string
		of   func(failoverTrial) time.Duration
	}{
		{"leader moved (controller's log)", func(tr failoverTrial) time.Duration { return tr.moved }},
		{"new leader in a survivor's Metadata", func(tr failoverTrial) time.Duration { return tr.metadata }},
		{"first ack, franz-go MetadataMinAge 250ms", func(tr failoverTrial) time.Duration { return tr.ackedFast }},
		{"first ack, franz-go defaults (5s)", func(tr failoverTrial) time.Duration { return tr.acked }},
	} {
		var ds []time.Duration
		for _, tr := range trials {
			ds = append(ds, w.of(tr))
		}
		if len(ds) > 0 {
			slices.Sort(ds)
			fmt.Fprintf(&out, "  %-42s median %7s  max %7s  (target < 5s)\n", w.what, roundDur(ds[len(ds)/2]), roundDur(ds[len(ds)-1]))
		}
	}
	fmt.Print(out.String())
}

// rawDiskFor writes 1 MiB blocks to a new file in dir for d, with an
// fsync after each block when sync (as flush.policy=always syncs each
// group of appends) or once at the end otherwise, and returns MB/s.
func rawDiskFor(b *testing.B, dir string, d time.Duration, sync bool) float64 {
	f, err := os.Create(filepath.Join(dir, "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 7)
	}
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		if _, err := f.Write(block); err != nil {
			b.Fatal(err)
		}
		n += int64(len(block))
		if sync {
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6
}

// medianBy returns the element of xs at the median of key.
func medianBy[T any](xs []T, key func(T) float64) T {
	s := slices.Clone(xs)
	slices.SortFunc(s, func(x, y T) int { return cmp.Compare(key(x), key(y)) })
	return s[len(s)/2]
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
	ackedFast     time.Duration // first batch the new leader acknowledged to a client with MetadataMinAge 250ms
	acked         time.Duration // the same for a client with franz-go's defaults
	newLeader     int32
}

func (tr failoverTrial) String() string {
	s := fmt.Sprintf("killed node %d (a follower of the metadata Raft group): ", tr.killed)
	if tr.wasController {
		s = fmt.Sprintf("killed node %d (also the controller): new controller %s, ", tr.killed, roundDur(tr.controller))
	}
	return s + fmt.Sprintf("leader moved to node %d %s, in Metadata %s, first ack (MetadataMinAge 250ms) %s, (franz-go defaults) %s",
		tr.newLeader, roundDur(tr.moved), roundDur(tr.metadata), roundDur(tr.ackedFast), roundDur(tr.acked))
}

// newLeaderHook records the first batch a node other than the killed one
// acknowledges after arm: only a new leader can.
type newLeaderHook struct {
	mu     sync.Mutex
	armed  bool
	killed int32
	at     time.Time
	by     int32
	acked  int64 // records acknowledged while not armed
}

func (h *newLeaderHook) OnProduceBatchWritten(meta kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.armed:
		h.acked += int64(m.NumRecords)
	case meta.NodeID != h.killed && h.at.IsZero():
		h.at, h.by = time.Now(), meta.NodeID
	}
}

func (h *newLeaderHook) arm(killed int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.killed, h.at, h.by = true, killed, time.Time{}, -1
}

func (h *newLeaderHook) disarm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.acked = false, 0
}

func (h *newLeaderHook) first() (time.Time, int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at, h.by
}

func (h *newLeaderHook) ackedSinceDisarm() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.acked
}

// clusterFailovers runs two acks=all producers on topic (one partition)
// for the whole phase - one with franz-go's defaults, whose metadata
// refreshes at most every 5 s (MetadataMinAge), one refreshing every
// 250 ms at most - and kills the partition's leader trials times,
// restarting it and waiting until it is back in sync after each kill.
func clusterFailovers(b *testing.B, c *testCluster, topic string, trials int) []failoverTrial {
	b.Helper()
	fast, dflt := &newLeaderHook{}, &newLeaderHook{}
	var failed atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, h := range []*newLeaderHook{fast, dflt} {
		opts := append(benchProducerOpts(c.kafkaAddrs(), topic, kgo.AllISRAcks()),
			kgo.RecordRetries(1<<30), kgo.RecordDeliveryTimeout(2*time.Minute), kgo.WithHooks(h))
		if h == fast {
			opts = append(opts, kgo.MetadataMinAge(250*time.Millisecond))
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
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
			if err := cl.Flush(context.Background()); err != nil {
				failed.Add(1)
			}
		}()
	}
	defer func() {
		stop()
		wg.Wait()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d records failed to produce", n)
		}
	}()

	var out []failoverTrial
	lastRefresh := time.Now() // the clients' first metadata
	for range trials {
		c.waitAlive(3)
		waitInSync(b, c, topic, 0, 3)
		fast.disarm()
		dflt.disarm()
		eventually(b, "both producers write to the leader", func() error {
			if n, m := fast.ackedSinceDisarm(), dflt.ackedSinceDisarm(); n < 500 || m < 500 {
				return fmt.Errorf("%d and %d records acknowledged", n, m)
			}
			return nil
		})
		// A client that has run for a while: its last metadata refresh
		// is older than franz-go's MetadataMinAge, so the kill's refresh is
		// not delayed by an earlier one (pacing, not correctness).
		time.Sleep(time.Until(lastRefresh.Add(6 * time.Second)))
		st := clusterStatusJSON(b, c.anyNode())
		leader := leaderOf(b, c, topic, 0)
		tr := failoverTrial{killed: leader, wasController: st.Controller == leader, controller: -1, moved: -1, metadata: -1, ackedFast: -1, acked: -1}
		var survivors []string
		for id, n := range c.nodes {
			if int32(id+1) != leader {
				survivors = append(survivors, n.kafkaAddr)
			}
		}
		fast.arm(leader)
		dflt.arm(leader)
		killedAt := time.Now()
		c.kill(int(leader), syscall.SIGKILL)
		tr.metadata = watchMetadata(b, survivors, topic, leader, killedAt)
		eventually(b, "the new leader acknowledges to both producers", func() error {
			if at, _ := fast.first(); at.IsZero() {
				return fmt.Errorf("no batch acknowledged by a new leader (MetadataMinAge 250ms)")
			}
			if at, _ := dflt.first(); at.IsZero() {
				return fmt.Errorf("no batch acknowledged by a new leader (franz-go defaults)")
			}
			return nil
		})
		at, by := fast.first()
		tr.ackedFast, tr.newLeader = at.Sub(killedAt), by
		at, _ = dflt.first()
		tr.acked, lastRefresh = at.Sub(killedAt), at
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
		b.Logf("failover %d: %s", len(out)+1, tr)
		out = append(out, tr)
		c.start(int(leader))
	}
	return out
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
