package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/cutproxy"
)

// cutproxyOptions cut each connection after 16 to 64 KiB: a few produce
// requests get through, and the cut falls in requests, in responses and
// between them.
var cutproxyOptions = cutproxy.Options{MinBytes: 16 << 10, MaxBytes: 64 << 10, Seed: 8}

// franz-go producing with each acks setting: every record stored once, at
// the offset its acknowledgement gave (acks=0 gives none: read it back).
func TestProduceAcks(t *testing.T) {
	n := startKafkaNode(t, t.TempDir(), nodeOptions{})
	for _, tc := range []struct {
		name string
		acks kgo.Acks
	}{{"acks=0", kgo.NoAck()}, {"acks=1", kgo.LeaderAck()}, {"acks=all", kgo.AllISRAcks()}} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "acks-" + strings.TrimPrefix(tc.name, "acks=")
			n.createTopic(topic, 1, nil)
			opts := []kgo.Opt{kgo.SeedBrokers(n.addr), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(tc.acks)}
			if tc.name != "acks=all" {
				opts = append(opts, kgo.DisableIdempotentWrite()) // idempotence needs acks=all
			}
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			const count = 300
			var recs []*kgo.Record
			for i := range count {
				recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: testutil.Value(int64(i), 50)})
			}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if tc.name == "acks=0" {
				testutil.Eventually(t, 10*time.Second, func() bool { return n.endOffset(topic, 0) == count }, "acks=0 records stored")
			}
			got := n.records(topic, 0)
			if len(got) != count {
				t.Fatalf("log holds %d records, want %d", len(got), count)
			}
			for i, r := range got {
				if string(r.Value) != string(testutil.Value(int64(i), 50)) || string(r.Key) != fmt.Sprint(i%7) {
					t.Fatalf("offset %d holds %q/%q", r.Offset, r.Key, r.Value)
				}
				if tc.name != "acks=0" && recs[i].Offset != r.Offset {
					t.Fatalf("record %d acknowledged at offset %d, stored at %d", i, recs[i].Offset, r.Offset)
				}
			}
		})
	}
}

// Hand-written idempotent batches: a retry gets the original offsets and
// is stored once, a gap is refused, and both hold after a restart.
func TestProduceIdempotentByHand(t *testing.T) {
	dir := t.TempDir()
	n := startKafkaNode(t, dir, nodeOptions{})
	n.createTopic("idem", 1, nil)
	rc := dialRaw(t, n.addr)

	ip := rc.initProducerID(4, nil, -1, -1)
	if ip.ErrorCode != 0 || ip.ProducerID < 0 || ip.ProducerEpoch != 0 {
		t.Fatalf("InitProducerId: %+v", ip)
	}
	id := ip.ProducerID
	// A KIP-360 re-init with the current id and epoch: a fresh id, as
	// Kafka gives an idempotent producer.
	if ip2 := rc.initProducerID(3, nil, id, 0); ip2.ErrorCode != 0 || ip2.ProducerID == id || ip2.ProducerEpoch != 0 {
		t.Fatalf("re-init of producer %d: %+v, want a new id with epoch 0", id, ip2)
	}
	if r := rc.initProducerID(3, nil, id, -1); r.ErrorCode != kerr.InvalidRequest.Code {
		t.Fatalf("InitProducerId with an id and no epoch: code %d, want INVALID_REQUEST", r.ErrorCode)
	}
	txn := "my-txn"
	if r := rc.initProducerID(4, &txn, -1, -1); r.ErrorCode != kerr.InvalidRequest.Code || r.ProducerID != -1 {
		t.Fatalf("InitProducerId with a transactional id: %+v, want INVALID_REQUEST", r)
	}

	first := rc.produceOne(9, -1, "idem", testutil.IdempotentBatch(t, id, 0, 0, 5, 40))
	if first.ErrorCode != 0 || first.BaseOffset != 0 {
		t.Fatalf("first batch: %+v", first)
	}
	if p := rc.produceOne(9, -1, "idem", testutil.Batch(t, 5, 2, 40, 1)); p.ErrorCode != 0 || p.BaseOffset != 5 {
		t.Fatalf("plain batch: %+v", p)
	}
	// The retry: same offsets, nothing stored.
	if p := rc.produceOne(9, -1, "idem", testutil.IdempotentBatch(t, id, 0, 0, 5, 40)); p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("retry: %+v, want base offset 0 and no error", p)
	}
	if end := n.endOffset("idem", 0); end != 7 {
		t.Fatalf("log end %d after the retry, want 7 (stored once)", end)
	}
	gap := rc.produceOne(9, -1, "idem", testutil.IdempotentBatch(t, id, 0, 10, 1, 40))
	if gap.ErrorCode != kerr.OutOfOrderSequenceNumber.Code || gap.ErrorMessage == nil {
		t.Fatalf("sequence gap: code %d (%v), want OUT_OF_ORDER_SEQUENCE_NUMBER with a message", gap.ErrorCode, gap.ErrorMessage)
	}
	if p := rc.produceOne(9, -1, "idem", testutil.IdempotentBatch(t, id, 1, 3, 1, 40)); p.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("new epoch not at sequence 0: code %d, want OUT_OF_ORDER_SEQUENCE_NUMBER", p.ErrorCode)
	}
	txnBatch, err := batch.Build([]batch.Record{{Value: []byte("t")}}, batch.BuildOptions{Producer: &batch.Producer{ID: id, BaseSequence: 5}, Transactional: true})
	if err != nil {
		t.Fatal(err)
	}
	if p := rc.produceOne(9, -1, "idem", txnBatch); p.ErrorCode != kerr.InvalidTxnState.Code {
		t.Fatalf("transactional batch: code %d, want INVALID_TXN_STATE", p.ErrorCode)
	}

	n.restart()
	rc = dialRaw(t, n.addr)
	if p := rc.produceOne(9, -1, "idem", testutil.IdempotentBatch(t, id, 0, 0, 5, 40)); p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("retry after restart: %+v, want base offset 0", p)
	}
	if p := rc.produceOne(9, -1, "idem", testutil.IdempotentBatch(t, id, 0, 10, 1, 40)); p.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("gap after restart: code %d, want OUT_OF_ORDER_SEQUENCE_NUMBER", p.ErrorCode)
	}
	if p := rc.produceOne(9, -1, "idem", testutil.IdempotentBatch(t, id, 0, 5, 1, 40)); p.ErrorCode != 0 || p.BaseOffset != 7 {
		t.Fatalf("next batch after restart: %+v, want base offset 7", p)
	}
	if end := n.endOffset("idem", 0); end != 8 {
		t.Fatalf("log end %d, want 8", end)
	}
	// Producer ids are never handed out twice, restart or not.
	if ip := rc.initProducerID(4, nil, -1, -1); ip.ErrorCode != 0 || ip.ProducerID <= id+1 {
		t.Fatalf("InitProducerId after restart: %+v, want an id above %d", ip, id+1)
	}
}

// Bad input gets Kafka's code, stores nothing, and the connection and
// server go on.
func TestProduceBadInput(t *testing.T) {
	n := startKafkaNode(t, t.TempDir(), nodeOptions{})
	n.createTopic("bad", 2, map[string]string{"max.message.bytes": "2048"})
	rc := dialRaw(t, n.addr)
	good := func() []byte { return testutil.Batch(t, 0, 3, 50, 1) }

	corrupt := good()
	corrupt[len(corrupt)-1] ^= 0xff
	magic1 := good()
	magic1[16] = 1
	zstd, err := batch.Build([]batch.Record{{Value: []byte("z")}}, batch.BuildOptions{Codec: batch.Zstd})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		version int16
		topic   string
		records []byte
		acks    int16
		want    *kerr.Error
	}{
		{"corrupt crc", 9, "bad", corrupt, -1, kerr.CorruptMessage},
		{"over max.message.bytes", 9, "bad", testutil.Batch(t, 0, 40, 100, 1), -1, kerr.MessageTooLarge},
		{"invalid topic name", 9, "bad/name", good(), -1, kerr.InvalidTopicException},
		{"unknown topic", 9, "nosuch", good(), -1, kerr.UnknownTopicOrPartition},
		{"two batches", 9, "bad", append(good(), good()...), -1, kerr.InvalidRecord},
		{"trailing bytes", 9, "bad", append(good(), 1, 2, 3), -1, kerr.InvalidRecord},
		{"magic 1", 9, "bad", magic1, -1, kerr.InvalidRecord},
		// v0-v2 are advertised (for librdkafka) but carry magic 2 only.
		{"magic 1 at v2", 2, "bad", magic1, -1, kerr.InvalidRecord},
		{"magic 1 at v0", 0, "bad", magic1, -1, kerr.InvalidRecord},
		{"no batch", 9, "bad", nil, -1, kerr.InvalidRecord},
		{"truncated batch", 9, "bad", good()[:70], -1, kerr.CorruptMessage},
		{"zstd before v7", 6, "bad", zstd, -1, kerr.UnsupportedCompressionType},
		{"acks=2", 9, "bad", good(), 2, kerr.InvalidRequiredAcks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := rc.produceOne(tc.version, tc.acks, tc.topic, tc.records)
			if p.ErrorCode != tc.want.Code {
				t.Fatalf("code %d (%v), want %d (%s)", p.ErrorCode, kerr.ErrorForCode(p.ErrorCode), tc.want.Code, tc.want.Message)
			}
			if tc.version >= 8 && (p.ErrorMessage == nil || *p.ErrorMessage == "") {
				t.Fatal("no error message")
			}
			if p.BaseOffset != -1 {
				t.Fatalf("base offset %d on an error, want -1", p.BaseOffset)
			}
			if end := n.endOffset("bad", 0); end != 0 {
				t.Fatalf("log end %d after a refused batch, want 0", end)
			}
		})
	}
	if _, err := n.b.Topic("nosuch"); !errors.Is(err, broker.ErrUnknownTopic) {
		t.Fatalf("produce created topic nosuch: %v", err)
	}
	if p := rc.produceOne(7, -1, "bad", zstd); p.ErrorCode != 0 {
		t.Fatalf("zstd at v7: code %d", p.ErrorCode)
	}
	// One request, two partitions: each answered on its own.
	resp := rc.roundTrip(produceReq(9, -1, "bad", map[int32][]byte{0: corrupt, 1: good()})).(*kmsg.ProduceResponse)
	if ps := resp.Topics[0].Partitions; ps[0].ErrorCode != kerr.CorruptMessage.Code || ps[1].ErrorCode != 0 || ps[1].BaseOffset != 0 {
		t.Fatalf("mixed request: %+v", ps)
	}

	// acks=0: no answer; the next request's answer comes next.
	corr := rc.send(produceReq(9, 0, "bad", map[int32][]byte{1: good()}))
	if p := rc.produceOne(9, -1, "bad", good()); p.ErrorCode != 0 || p.BaseOffset != 1 {
		t.Fatalf("produce after an acks=0 produce (correlation %d): %+v, want base offset 1", corr, p)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return n.endOffset("bad", 1) == 6 }, "the acks=0 batch stored and fsynced")
	// acks=0 that fails: Kafka closes the connection.
	rc.send(produceReq(9, 0, "bad", map[int32][]byte{0: corrupt}))
	rc.expectClosed()
	// The server is still up.
	if p := dialRaw(t, n.addr).produceOne(9, 1, "bad", good()); p.ErrorCode != 0 {
		t.Fatalf("produce on a new connection: code %d", p.ErrorCode)
	}
}

// syncFile records how far a segment file was fsynced: the file size when
// its last completed Sync began. slow delays every Sync; hold blocks the
// next Sync until released.
type syncFile struct {
	*os.File
	fs *syncFS
}

type syncFS struct {
	slow   time.Duration
	synced sync.Map // path -> *atomic.Int64
	syncs  atomic.Int64
	held   atomic.Bool
	enter  chan struct{}
	gate   chan struct{}
}

func (s *syncFS) open(name string, flag int, perm os.FileMode) (hot.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	s.synced.LoadOrStore(name, new(atomic.Int64))
	return &syncFile{File: f, fs: s}, nil
}

func (f *syncFile) Sync() error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if f.fs.held.CompareAndSwap(true, false) {
		f.fs.enter <- struct{}{}
		<-f.fs.gate
	}
	time.Sleep(f.fs.slow) // a slow disk: an answer sent before it ends is caught
	if err := f.File.Sync(); err != nil {
		return err
	}
	f.fs.syncs.Add(1)
	v, _ := f.fs.synced.Load(f.Name())
	a := v.(*atomic.Int64)
	for {
		cur := a.Load()
		if st.Size() <= cur || a.CompareAndSwap(cur, st.Size()) {
			return nil
		}
	}
}

func (s *syncFS) fsyncedBytes(path string) int64 {
	v, ok := s.synced.Load(path)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// acks=all under flush.policy=always is answered only once the batch is
// fsynced; under flush.policy=os the same answer comes with nothing
// fsynced (so the check below can tell the two apart).
func TestProduceAnswersAfterFsync(t *testing.T) {
	fs := &syncFS{slow: 100 * time.Millisecond}
	n := startKafkaNode(t, t.TempDir(), nodeOptions{broker: func(o *broker.Options) { o.OpenFile = fs.open }})
	n.createTopic("always", 1, map[string]string{"flush.policy": "always"})
	n.createTopic("os", 1, map[string]string{"flush.policy": "os"})
	rc := dialRaw(t, n.addr)
	for i := range 3 {
		for _, topic := range []string{"always", "os"} {
			p := rc.produceOne(9, -1, topic, testutil.Batch(t, int64(i), 2, 100, 1))
			if p.ErrorCode != 0 || p.BaseOffset != int64(2*i) {
				t.Fatalf("%s: %+v", topic, p)
			}
			part, err := n.b.Partition(topic, 0)
			if err != nil {
				t.Fatal(err)
			}
			seg := part.Log().Segments()[0]
			synced := fs.fsyncedBytes(seg.Path)
			if topic == "always" && synced < seg.Size {
				t.Fatalf("acks=all answered with %d of %d bytes fsynced under flush.policy=always", synced, seg.Size)
			}
			if topic == "os" && synced >= seg.Size {
				t.Fatalf("flush.policy=os: %d of %d bytes fsynced at the answer; the check cannot tell", synced, seg.Size)
			}
		}
	}
}

// Pipelined produce requests on one connection are appended while the
// first one's fsync is still running, and share the fsyncs that follow
// (group commit), answered in order.
func TestProducePipelinedShareFsync(t *testing.T) {
	fs := &syncFS{enter: make(chan struct{}), gate: make(chan struct{})}
	n := startKafkaNode(t, t.TempDir(), nodeOptions{broker: func(o *broker.Options) { o.OpenFile = fs.open }})
	n.createTopic("pipe", 1, map[string]string{"flush.policy": "always"})
	part, err := n.b.Partition("pipe", 0)
	if err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, n.addr)
	var released atomic.Bool
	release := func() {
		if released.CompareAndSwap(false, true) {
			close(fs.gate)
		}
	}
	defer release()
	fs.held.Store(true)
	const requests = 5
	var reqs []*kmsg.ProduceRequest
	var corrs []int32
	var sizes int64
	for i := range requests {
		b := testutil.Batch(t, int64(i), 4, 100, 1)
		sizes += int64(len(b))
		reqs = append(reqs, produceReq(9, -1, "pipe", map[int32][]byte{0: b}))
		corrs = append(corrs, rc.send(reqs[i]))
	}
	<-fs.enter // the first request's fsync is held
	before := fs.syncs.Load()
	testutil.Eventually(t, 10*time.Second, func() bool { return part.Log().Segments()[0].Size == sizes },
		"all %d pipelined batches written while the first fsync is held", requests)
	release()
	for i, req := range reqs {
		p := rc.recv(req, corrs[i]).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
		if p.ErrorCode != 0 || p.BaseOffset != int64(4*i) {
			t.Fatalf("request %d: %+v, want base offset %d", i, p, 4*i)
		}
	}
	if syncs := fs.syncs.Load() - before; syncs > 2 {
		t.Fatalf("%d fsyncs for %d pipelined requests, want at most 2 (the held one and one for the rest)", syncs, requests)
	}
}

// franz-go's idempotent producer through a proxy that keeps cutting its
// connections: every record stored exactly once, in order per key.
func TestIdempotentProducerConnectionDrops(t *testing.T) {
	const (
		records    = 20000
		keys       = 40
		partitions = 3
	)
	n := startKafkaNode(t, t.TempDir(), nodeOptions{proxy: &cutproxyOptions})
	n.createTopic("drops", partitions, map[string]string{"flush.policy": "interval"})
	// Uncompressed batches of at most 4 KiB: requests (three partitions)
	// fit in the 16 KiB a connection carries at least, so each connection
	// makes progress, and the ~2 MB produced cut dozens of them.
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.addr), kgo.DefaultProduceTopic("drops"),
		kgo.ProducerBatchMaxBytes(4<<10), kgo.ProducerLinger(time.Millisecond), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Millisecond }), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var failed atomic.Int64
	var firstErr atomic.Value
	ctx := context.Background()
	for i := range records {
		r := &kgo.Record{Key: fmt.Appendf(nil, "key-%02d", i%keys), Value: fmt.Appendf(nil, "%d|%s", i, testutil.Value(int64(i), 60))}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil && failed.Add(1) == 1 {
				firstErr.Store(err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d records failed, first: %v", f, firstErr.Load())
	}
	if n.proxy.Cuts() < 10 {
		t.Fatalf("the proxy cut only %d connections; the test did not test", n.proxy.Cuts())
	}

	seen := make([]bool, records)
	for p := range int32(partitions) {
		last := map[string]int{}
		for _, r := range n.records("drops", p) {
			var i int
			if _, err := fmt.Sscanf(string(r.Value), "%d|", &i); err != nil || i < 0 || i >= records {
				t.Fatalf("partition %d offset %d: value %q", p, r.Offset, r.Value)
			}
			if seen[i] {
				t.Fatalf("record %d stored twice (partition %d offset %d)", i, p, r.Offset)
			}
			seen[i] = true
			k := string(r.Key)
			if prev, ok := last[k]; ok && i < prev {
				t.Fatalf("key %s: record %d stored after %d", k, i, prev)
			}
			last[k] = i
			if want := fmt.Sprintf("key-%02d", i%keys); k != want {
				t.Fatalf("record %d has key %s, want %s", i, k, want)
			}
		}
	}
	for i, ok := range seen {
		if !ok {
			t.Fatalf("record %d missing", i)
		}
	}
	dups := counterValue(t, n, "tierlog_hot_duplicate_batches_total")
	t.Logf("%d connections, %d cut; %v retries answered as duplicates", n.proxy.Conns(), n.proxy.Cuts(), dups)
	if dups == 0 {
		t.Fatal("no retry of an appended batch happened; the test did not test deduplication")
	}
}

func counterValue(t *testing.T, n *kafkaNode, name string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}
