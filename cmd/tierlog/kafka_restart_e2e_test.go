package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/testutil"
)

// kafkaReadAll reads partition 0 of topic from the start to its end
// offset with a direct (groupless) consumer.
func kafkaReadAll(t *testing.T, addr, topic string) []*kgo.Record {
	t.Helper()
	end := kafkaEndOffset(t, addr, topic)
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

// kafkaEndOffset is partition 0's end offset (ListOffsets latest).
func kafkaEndOffset(t *testing.T, addr, topic string) int64 {
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

// TestKafkaKill9IdempotentProducerAndGroup: an idempotent franz-go
// producer at acks=all (flush.policy=always) keeps producing while `tierlog
// serve` is killed with SIGKILL and restarted on the same port: every
// acknowledged record is stored exactly once. Then a group consumer that
// commits synchronously after each poll resumes, across kill -9, exactly
// at its last acknowledged commit.
func TestKafkaKill9IdempotentProducerAndGroup(t *testing.T) {
	addr := testutil.FreeAddr(t)
	dataDir := t.TempDir()
	n := startNode(t, dataDir, nil, "--kafka-addr", addr)
	ok(t, n, "", "topic", "create", "idem", "--partitions", "1")

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("idem"),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var acked, produced atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1<<20)
	stop := make(chan struct{})
	ackedVals := sync.Map{}
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for produced.Load()-acked.Load() > 500 {
				time.Sleep(time.Millisecond)
			}
			wg.Add(1)
			produced.Add(1)
			v := fmt.Sprintf("i%07d", i)
			cl.Produce(context.Background(), &kgo.Record{Partition: 0, Value: []byte(v)}, func(_ *kgo.Record, err error) {
				defer wg.Done()
				if err != nil {
					errs <- err
					return
				}
				ackedVals.Store(v, true)
				acked.Add(1)
			})
		}
	}()
	for range 4 {
		base := acked.Load()
		eventually(t, "records acknowledged", func() error {
			if acked.Load() < base+500 {
				return fmt.Errorf("%d acknowledged", acked.Load())
			}
			return nil
		})
		if code := n.signal(syscall.SIGKILL); code != -1 {
			t.Fatalf("kill -9: exit %d", code)
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
	recs := kafkaReadAll(t, addr, "idem")
	seen := map[string]int64{}
	for i, r := range recs {
		if r.Offset != int64(i) {
			t.Fatalf("record %d has offset %d", i, r.Offset)
		}
		if first, dup := seen[string(r.Value)]; dup {
			t.Errorf("record %s stored twice: offsets %d and %d", r.Value, first, r.Offset)
		}
		seen[string(r.Value)] = r.Offset
	}
	ackedVals.Range(func(k, _ any) bool {
		if _, ok := seen[k.(string)]; !ok {
			t.Errorf("acknowledged record %s lost", k)
		}
		return true
	})
	if t.Failed() {
		t.FailNow()
	}
	total := int64(len(recs))

	// The group consumer: poll, commit synchronously, remember where the
	// acknowledged commit stands; kill -9 between polls.
	var committed int64
	for round := 0; committed < total; round++ {
		gc, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("idem"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.FetchMaxBytes(64<<10), kgo.FetchMaxPartitionBytes(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
		for polls := 0; polls < 3 && committed < total; polls++ {
			fs := gc.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("round %d: group consumer got nothing at %d", round, committed)
			}
			rs := fs.Records()
			if len(rs) == 0 {
				continue
			}
			if rs[0].Offset != committed {
				t.Fatalf("round %d: group consumer resumed at offset %d, the acknowledged commit was %d", round, rs[0].Offset, committed)
			}
			if err := gc.CommitRecords(ctx, rs...); err != nil {
				t.Fatalf("commit: %v", err)
			}
			committed = rs[len(rs)-1].Offset + 1
		}
		cancel()
		if code := n.signal(syscall.SIGKILL); code != -1 {
			t.Fatalf("kill -9: exit %d", code)
		}
		gc.CloseAllowingRebalance()
		n = startNode(t, dataDir, nil, "--kafka-addr", addr)
	}
}

// TestKafkaRestoreServesEveryByte: records produced through Kafka with
// keys (some null), headers, explicit timestamps and every codec, over
// three partitions, tiered, local copies deleted, the node stopped, its
// data directory lost and restored from the bucket (serve --takeover):
// a franz-go consumer reads every record back with its offset, key,
// value, headers and timestamp; ListOffsets by timestamp finds the exact
// record; kcat -o s@TS and kafka-python offsets_for_times agree.
func TestKafkaRestoreServesEveryByte(t *testing.T) {
	requireKafkaPython(t)
	requireKcat(t)
	bucket := bucketOutside(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, nil, "--bucket", bucket)
	ok(t, n, "", "topic", "create", "hist", "--partitions", "3")

	base := time.Now().Add(-48 * time.Hour).UnixMilli()
	var want []*kgo.Record
	codecs := []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()}
	for ci, codec := range codecs {
		cl, err := kgo.NewClient(kgo.SeedBrokers(n.kafkaAddr), kgo.ProducerBatchCompression(codec), kgo.DefaultProduceTopic("hist"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		var rs []*kgo.Record
		for i := range 300 {
			k := ci*300 + i
			r := &kgo.Record{Partition: int32(k % 3), Timestamp: time.UnixMilli(base + int64(k)*1000),
				Value: bytes.Repeat([]byte{byte(k)}, 1+k%700)}
			if k%5 != 0 {
				r.Key = fmt.Appendf(nil, "key-%d", k)
			}
			if k%3 == 0 {
				r.Headers = []kgo.RecordHeader{{Key: "h", Value: []byte{0, byte(k)}}, {Key: "empty", Value: nil}}
			}
			rs = append(rs, r)
		}
		if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
			t.Fatalf("produce with %v: %v", codec, err)
		}
		cl.Close()
		want = append(want, rs...)
	}
	ok(t, n, "", "topic", "alter-config", "hist", "--config", "local.retention.bytes=0")
	ok(t, n, "", "tier", "upload", "hist")
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	if err := os.Rename(dataDir, dataDir+".lost"); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dataDir, nil, "--bucket", bucket, "--takeover")

	cl, err := kgo.NewClient(kgo.SeedBrokers(n.kafkaAddr), kgo.ConsumeTopics("hist"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	defer cancel()
	got := map[int32][]*kgo.Record{}
	for count := 0; count < len(want); {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("restored node: %d of %d records", count, len(want))
		}
		fs.EachError(func(_ string, p int32, err error) { t.Errorf("fetch %d: %v", p, err) })
		for _, r := range fs.Records() {
			got[r.Partition] = append(got[r.Partition], r)
			count++
		}
	}
	for _, w := range want {
		p := got[w.Partition]
		if int64(len(p)) <= w.Offset {
			t.Fatalf("partition %d offset %d missing", w.Partition, w.Offset)
		}
		g := p[w.Offset]
		if g.Offset != w.Offset || !sameBytes(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || !g.Timestamp.Equal(w.Timestamp) ||
			len(g.Headers) != len(w.Headers) {
			t.Fatalf("partition %d offset %d: got key %q ts %v %d headers, value %d bytes; want key %q ts %v %d headers, value %d bytes",
				w.Partition, w.Offset, g.Key, g.Timestamp, len(g.Headers), len(g.Value), w.Key, w.Timestamp, len(w.Headers), len(w.Value))
		}
		for i, h := range w.Headers {
			if g.Headers[i].Key != h.Key || !sameBytes(g.Headers[i].Value, h.Value) {
				t.Fatalf("partition %d offset %d header %d: %q=%v, want %q=%v", w.Partition, w.Offset, i, g.Headers[i].Key, g.Headers[i].Value, h.Key, h.Value)
			}
		}
	}

	// By timestamp, in the bucket: the record produced at base+k s.
	k := 3*300 + 7 // partition 1 (k%3), a zstd batch
	ts := base + int64(k)*1000
	wantRec := want[k]
	adm := kadm.NewClient(cl)
	lo, err := adm.ListOffsetsAfterMilli(context.Background(), ts, "hist")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := lo.Lookup("hist", wantRec.Partition); o.Offset != wantRec.Offset {
		t.Errorf("ListOffsets at %d on partition %d: %+v, want offset %d", ts, wantRec.Partition, o, wantRec.Offset)
	}
	out := kcat(t, "", "-b", n.kafkaAddr, "-C", "-t", "hist", "-p", fmt.Sprint(wantRec.Partition), "-o", fmt.Sprintf("s@%d", ts), "-c", "1", "-e", "-f", "%o %T\n")
	if w := fmt.Sprintf("%d %d\n", wantRec.Offset, ts); out != w {
		t.Errorf("kcat -o s@%d: %q, want %q", ts, out, w)
	}
	py := fmt.Sprintf(`
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=%q, consumer_timeout_ms=20000)
tp = TopicPartition("hist", %d)
c.assign([tp])
o = c.offsets_for_times({tp: %d})[tp]
print(o.offset, o.timestamp)
c.seek_to_beginning(tp)
print(c.position(tp), c.end_offsets([tp])[tp])
`, n.kafkaAddr, wantRec.Partition, ts)
	pout, err := exec.Command(pythonBin, "-c", py).CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-python: %v\n%s", err, pout)
	}
	// (Debian's kafka-python decodes only gzip, so it reads no records here.)
	if w := fmt.Sprintf("%d %d\n0 %d\n", wantRec.Offset, ts, len(got[wantRec.Partition])); string(pout) != w {
		t.Errorf("kafka-python offsets_for_times / seek_to_beginning on restored history: %q, want %q", pout, w)
	}
}

// TestKcatIdempotentZstdAcrossRestarts: kcat -P with librdkafka's
// idempotent producer and zstd, in runs separated by SIGTERM and kill -9
// of `tierlog serve` (kcat itself exits when its only broker goes away, so
// one kcat cannot span a restart): every line stored exactly once, in
// order, read back by kcat -C -o beginning -e; kcat -C -o end -e exits at
// once with nothing.
func TestKcatIdempotentZstdAcrossRestarts(t *testing.T) {
	requireKcat(t)
	dataDir := t.TempDir()
	n := startNode(t, dataDir, nil)
	ok(t, n, "", "topic", "create", "kz", "--partitions", "1")
	line := 0
	run := func() {
		var b strings.Builder
		for range 3000 {
			fmt.Fprintf(&b, "line-%06d-%s\n", line, strings.Repeat("z", 200))
			line++
		}
		kcat(t, b.String(), "-b", n.kafkaAddr, "-P", "-t", "kz", "-p", "0", "-z", "zstd", "-X", "enable.idempotence=true")
	}
	run()
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	n = startNode(t, dataDir, nil)
	run()
	if code := n.signal(syscall.SIGKILL); code != -1 {
		t.Fatalf("kill -9: exit %d", code)
	}
	n = startNode(t, dataDir, nil)
	run()
	out := kcat(t, "", "-b", n.kafkaAddr, "-C", "-t", "kz", "-o", "beginning", "-e", "-f", "%o %s\n")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != line {
		t.Errorf("kcat -C read %d records, %d lines were produced", len(lines), line)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("%d line-%06d-", i, i); !strings.HasPrefix(l, want) {
			t.Fatalf("record %d: %.24s, want %s", i, l, want)
		}
	}
	if out := kcat(t, "", "-b", n.kafkaAddr, "-C", "-t", "kz", "-o", "end", "-e"); out != "" {
		t.Errorf("kcat -C -o end -e printed %q, want nothing", out)
	}
}
