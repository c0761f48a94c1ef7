package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// Interop tests: unmodified Kafka clients - kafka-python and kcat
// (librdkafka), as Debian ships them - against a real `tierlog serve`.
// Each logs the API versions its clients chose (go test -v).

// kafkaNode starts a node for Kafka clients and logs the versions they used
// when the test ends.
func kafkaNode(t *testing.T, args ...string) *node {
	t.Helper()
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil, args...)
	t.Cleanup(func() { logKafkaVersions(t, n) })
	return n
}

// wantOffsets fails unless recs are partition p's offsets from, from+1, ...
func wantOffsets(t *testing.T, what string, recs []krec, p int32, from int64) {
	t.Helper()
	for i, r := range recs {
		if r.Partition != p || r.Offset != from+int64(i) {
			t.Fatalf("%s: record %d at %d/%d, want %d/%d", what, i, r.Partition, r.Offset, p, from+int64(i))
		}
	}
}

// TestKafkaPythonPlainPair: the plain KafkaConsumer('topic',
// bootstrap_servers=[...]) / KafkaProducer(bootstrap_servers=...) pair a new
// user tries first, with and without keys. The consumer starts before its
// topic exists (its default auto_offset_reset is latest, so it must be
// positioned before the producer starts) and gets every record, byte for
// byte, with the offsets and timestamps the producer was acknowledged.
func TestKafkaPythonPlainPair(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			t.Parallel()
			topic := fmt.Sprintf("plain-keyed-%v", keyed)
			if r := cli(t, n, "", "topic", "describe", topic); r.code == 0 {
				t.Fatalf("topic %s exists before the consumer starts:\n%s", topic, r.stdout)
			}
			c := pyConsume(t, n.kafkaAddr, topic, 20)
			if ready := c.waitEvent("ready"); ready.Positions["0"] != 0 || len(ready.Positions) != 1 {
				t.Fatalf("consumer of a new topic positioned at %v, want partition 0 at 0", ready.Positions)
			}
			sent := pyProduce(t, n.kafkaAddr, topic, testRecords(20, keyed, 0))
			wantOffsets(t, "producer acknowledgements", sent, 0, 0)
			if err := sameRecords(c.records(), sent); err != nil {
				t.Errorf("consumer read, against what the producer was acknowledged:\n%v", err)
			}
		})
	}
}

// TestKafkaPythonConsumerBeforeTopic: an earliest consumer started before
// its topic exists, not waited for, gets every record once a producer
// writes them - whichever of the two creates the topic.
func TestKafkaPythonConsumerBeforeTopic(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	c := pyConsume(t, n.kafkaAddr, "later", 10, "--offset-reset", "earliest")
	c.waitEvent("started")
	sent := pyProduce(t, n.kafkaAddr, "later", testRecords(10, true, 0))
	if err := sameRecords(c.records(), sent); err != nil {
		t.Errorf("consumer started before the topic existed:\n%v", err)
	}
}

// TestKafkaPythonOffsetReset: auto_offset_reset latest starts at the log end
// (only records produced after it is positioned), earliest at offset 0.
func TestKafkaPythonOffsetReset(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	old := pyProduce(t, n.kafkaAddr, "reset", testRecords(5, true, 0))

	latest := pyConsume(t, n.kafkaAddr, "reset", 3, "--offset-reset", "latest")
	if ready := latest.waitEvent("ready"); ready.Positions["0"] != 5 {
		t.Fatalf("latest consumer positioned at %v, want partition 0 at 5 (the log end)", ready.Positions)
	}
	newer := pyProduce(t, n.kafkaAddr, "reset", testRecords(3, false, 0))
	wantOffsets(t, "second producer", newer, 0, 5)
	if err := sameRecords(latest.records(), newer); err != nil {
		t.Errorf("auto_offset_reset=latest:\n%v", err)
	}

	earliest := pyConsume(t, n.kafkaAddr, "reset", 8, "--offset-reset", "earliest")
	if err := sameRecords(earliest.records(), append(old, newer...)); err != nil {
		t.Errorf("auto_offset_reset=earliest:\n%v", err)
	}
}

// TestKafkaPythonGroupCommits: a consumer in a group commits what it read
// and leaves; the next consumer of the group resumes after the committed
// offsets (not at earliest), so the two together read every record exactly
// once; another group starts over.
func TestKafkaPythonGroupCommits(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	ok(t, n, "", "topic", "create", "grp", "--partitions", "2")
	sent := pyProduce(t, n.kafkaAddr, "grp", testRecords(12, true, 0))
	sortRecords(sent)

	first := pyConsume(t, n.kafkaAddr, "grp", 5, "--group", "g", "--offset-reset", "earliest", "--commit")
	a := first.records()
	first.waitEvent("committed")
	// kafka-python reads each partition in order from 0: the committed
	// position of a partition is how many of its records the first read.
	want := map[string]int64{"0": 0, "1": 0}
	for _, r := range a {
		want[strconv.Itoa(int(r.Partition))]++
	}

	second := pyConsume(t, n.kafkaAddr, "grp", 7, "--group", "g", "--offset-reset", "earliest", "--commit")
	if ready := second.waitEvent("ready"); !equalPositions(ready.Positions, want) {
		t.Errorf("second consumer of group g positioned at %v, want the first's commits %v", ready.Positions, want)
	}
	both := append(a, second.records()...)
	sortRecords(both)
	if err := sameRecords(both, sent); err != nil {
		t.Errorf("two consumers of one group, one after the other, against every record once:\n%v", err)
	}

	other := pyConsume(t, n.kafkaAddr, "grp", 12, "--group", "h", "--offset-reset", "earliest")
	all := other.records()
	sortRecords(all)
	if err := sameRecords(all, sent); err != nil {
		t.Errorf("a second group reads from its own (no) commits:\n%v", err)
	}
}

func equalPositions(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// kcatMetadata is `kcat -L -J`.
type kcatMetadata struct {
	Brokers []struct {
		ID   int32  `json:"id"`
		Name string `json:"name"`
	} `json:"brokers"`
	Topics []struct {
		Topic      string `json:"topic"`
		Error      string `json:"error"`
		Partitions []struct {
			Partition int32 `json:"partition"`
			Leader    int32 `json:"leader"`
		} `json:"partitions"`
	} `json:"topics"`
}

// TestKcatMetadata: kcat -L lists this node as the one broker, at the
// address the ready file names, and each topic with its partitions led by
// it.
func TestKcatMetadata(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	ok(t, n, "", "topic", "create", "meta", "--partitions", "3")
	ok(t, n, "", "topic", "create", "other")
	for _, args := range [][]string{{}, {"-t", "meta"}} {
		out := kcat(t, "", append([]string{"-b", n.kafkaAddr, "-L", "-J"}, args...)...)
		var md kcatMetadata
		if err := json.Unmarshal([]byte(out), &md); err != nil {
			t.Fatalf("kcat -L -J %v: %v\n%s", args, err, out)
		}
		if len(md.Brokers) != 1 || md.Brokers[0].Name != n.kafkaAddr {
			t.Errorf("kcat -L %v brokers %+v, want one at %s", args, md.Brokers, n.kafkaAddr)
		}
		parts := map[string]int{}
		for _, tp := range md.Topics {
			if tp.Error != "" {
				t.Errorf("kcat -L %v: topic %s: %s", args, tp.Topic, tp.Error)
			}
			for _, p := range tp.Partitions {
				if len(md.Brokers) == 1 && p.Leader != md.Brokers[0].ID {
					t.Errorf("kcat -L %v: %s/%d led by %d, want %d", args, tp.Topic, p.Partition, p.Leader, md.Brokers[0].ID)
				}
			}
			parts[tp.Topic] = len(tp.Partitions)
		}
		want := map[string]int{"meta": 3, "other": 1}
		if len(args) > 0 {
			want = map[string]int{"meta": 3}
		}
		if fmt.Sprint(parts) != fmt.Sprint(want) {
			t.Errorf("kcat -L %v topics %v, want %v\n%s", args, parts, want, out)
		}
	}
}

// kcatLines are n "key:value" lines for kcat -P -K:. Values repeat enough
// that every batch, even of one record, compresses: librdkafka sends a
// batch uncompressed when compression would not make it smaller.
func kcatLines(n int, tag string) (string, []krec) {
	var in strings.Builder
	recs := make([]krec, n)
	for i := range recs {
		recs[i] = krec{Offset: int64(i), Key: fmt.Appendf(nil, "k%d", i%7),
			Value: fmt.Appendf(nil, "%s record %d %s", tag, i, strings.Repeat("xyz", 100+i%50))}
		fmt.Fprintf(&in, "%s:%s\n", recs[i].Key, recs[i].Value)
	}
	return in.String(), recs
}

// TestKcatCodecs: kcat -P with each compression codec librdkafka has, read
// back with kcat -C -o beginning; kcat compresses with each (it would
// quietly send plain batches to a broker it thinks lacks the codec) and the
// server keeps each batch as kcat sent it (the gRPC API's raw fetch returns
// the stored batches).
func TestKcatCodecs(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	g := dialNode(t, n)
	for _, codec := range []batch.Codec{batch.None, batch.Gzip, batch.Snappy, batch.LZ4, batch.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			topic := "z-" + codec.String()
			in, want := kcatLines(200, codec.String())
			before := time.Now().UnixMilli()
			kcat(t, in, "-b", n.kafkaAddr, "-P", "-t", topic, "-p", "0", "-K:", "-z", codec.String())
			after := time.Now().UnixMilli()
			got := kcatRecords(t, kcat(t, "", "-b", n.kafkaAddr, "-C", "-t", topic, "-o", "beginning", "-e", "-f", kcatFormat))
			for i := range got {
				if got[i].Timestamp < before-1000 || got[i].Timestamp > after+1000 {
					t.Errorf("record %d: timestamp %d, not the time kcat sent it (%d to %d)", i, got[i].Timestamp, before, after)
				}
				if i < len(want) {
					want[i].Timestamp = got[i].Timestamp
				}
			}
			if err := sameRecords(got, want); err != nil {
				t.Errorf("kcat -z %s, read back by kcat -C:\n%v", codec, err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			f, err := g.Fetch(ctx, &tierlogv1.FetchRequest{Topic: topic, Start: &tierlogv1.FetchRequest_Offset{Offset: 0}, Raw: true, MaxBytes: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if len(f.GetBatches()) == 0 {
				t.Fatal("gRPC raw fetch: no batches")
			}
			for i, b := range f.GetBatches() {
				h, err := batch.ParseHeader(b)
				if err != nil {
					t.Fatalf("stored batch %d: %v", i, err)
				}
				if h.Codec() != codec {
					// librdkafka before 2.11.1 compresses gzip, snappy and lz4
					// only if the broker's Produce versions include v0
					// (zstd: any of v0-v7); otherwise it logs "Broker does
					// not support compression type" and sends them plain.
					t.Errorf("stored batch %d is %s, kcat was asked for %s (does ApiVersions advertise Produce from v0?)", i, h.Codec(), codec)
				}
			}
		})
	}
}

// TestKcatOffsets: kcat -C's start positions: -o beginning, -o -N (the last
// N), -o s@TIMESTAMP (the first record at or after it, through ListOffsets
// by timestamp), and an absolute offset.
func TestKcatOffsets(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	const base = int64(1_700_000_000_000)
	recs := make([]krec, 10)
	for i := range recs {
		recs[i] = krec{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "at %d", i), Timestamp: base + int64(i)*1000}
	}
	sent := pyProduce(t, n.kafkaAddr, "offs", recs)
	wantOffsets(t, "kafka-python producer", sent, 0, 0)
	for _, c := range []struct {
		offset string
		from   int
	}{
		{"beginning", 0},
		{"-3", 7},
		{"4", 4},
		{fmt.Sprintf("s@%d", base+5000), 5},
		{fmt.Sprintf("s@%d", base+4500), 5},
		{fmt.Sprintf("s@%d", base-1), 0},
	} {
		got := kcatRecords(t, kcat(t, "", "-b", n.kafkaAddr, "-C", "-t", "offs", "-o", c.offset, "-e", "-f", kcatFormat))
		if err := sameRecords(got, sent[c.from:]); err != nil {
			t.Errorf("kcat -C -o %s:\n%v", c.offset, err)
		}
	}
}

// kcatAssigned matches kcat's rebalance lines ("% Group g rebalanced
// (memberid ...): assigned: t [0], t [2]").
var kcatAssigned = regexp.MustCompile(`rebalanced \(memberid [^)]*\): (assigned|revoked): ?(.*)`)

// kcatAssignment is the partitions a kcat -G member holds according to its
// last rebalance line, and whether it has had one.
func kcatAssignment(p *clientProc) ([]int32, bool) {
	var parts []int32
	seen := false
	for _, m := range kcatAssigned.FindAllStringSubmatch(p.stderr.String(), -1) {
		seen = true
		parts = nil
		if m[1] == "revoked" {
			continue
		}
		for _, tp := range strings.Split(m[2], ",") {
			if i, j := strings.Index(tp, "["), strings.Index(tp, "]"); i >= 0 && j > i {
				if v, err := strconv.Atoi(tp[i+1 : j]); err == nil {
					parts = append(parts, int32(v))
				}
			}
		}
	}
	return parts, seen
}

// TestKcatGroup: two kcat -G members of one group share a three-partition
// topic - disjoint assignments covering it, every record read by exactly
// one of them, each from its own partitions; after both leave (committing),
// a third member of the group reads only what was produced since.
func TestKcatGroup(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	requireKcat(t)
	ok(t, n, "", "topic", "create", "shared", "--partitions", "3")
	member := func(extra ...string) *clientProc {
		args := append([]string{"-b", n.kafkaAddr, "-G", "kg", "-X", "auto.offset.reset=earliest", "-u", "-f", kcatFormat}, extra...)
		return startClient(t, "", "kcat", append(args, "shared")...)
	}
	a, b := member(), member()
	var as, bs []int32
	eventually(t, "both kcat members assigned, disjoint, covering the topic", func() error {
		var okA, okB bool
		as, okA = kcatAssignment(a)
		bs, okB = kcatAssignment(b)
		all := append(slices.Clone(as), bs...)
		slices.Sort(all)
		if !okA || !okB || len(as) == 0 || len(bs) == 0 || !slices.Equal(all, []int32{0, 1, 2}) {
			return fmt.Errorf("assigned %v and %v\nA: %s\nB: %s", as, bs, a.stderr.String(), b.stderr.String())
		}
		return nil
	})
	in, _ := kcatLines(60, "group")
	kcat(t, in, "-b", n.kafkaAddr, "-P", "-t", "shared", "-K:")
	var ra, rb []krec
	eventually(t, "the two members read 60 records", func() error {
		ra, rb = kcatRecords(t, a.stdout.String()), kcatRecords(t, b.stdout.String())
		if len(ra)+len(rb) < 60 {
			return fmt.Errorf("%d + %d records", len(ra), len(rb))
		}
		return nil
	})
	a.stop()
	b.stop()
	ra, rb = kcatRecords(t, a.stdout.String()), kcatRecords(t, b.stdout.String())
	for _, c := range []struct {
		recs  []krec
		parts []int32
	}{{ra, as}, {rb, bs}} {
		for _, r := range c.recs {
			if !slices.Contains(c.parts, r.Partition) {
				t.Errorf("a member assigned %v read %v", c.parts, r)
			}
		}
	}
	both := append(slices.Clone(ra), rb...)
	sortRecords(both)
	ends := map[int32]int64{}
	for i, r := range both {
		if i > 0 && both[i-1].Partition == r.Partition && both[i-1].Offset+1 != r.Offset {
			t.Errorf("after %v the next record read is %v: one lost or read twice", both[i-1], r)
		}
		ends[r.Partition] = r.Offset + 1
	}
	if len(both) != 60 {
		t.Errorf("the group read %d records, want 60", len(both))
	}

	in, _ = kcatLines(9, "after")
	kcat(t, in, "-b", n.kafkaAddr, "-P", "-t", "shared", "-K:")
	c := member("-c", "9")
	later := kcatRecords(t, c.wait())
	for _, r := range later {
		if r.Offset < ends[r.Partition] || !strings.HasPrefix(string(r.Value), "after ") {
			t.Errorf("third member read %v; the group had committed up to %v", r, ends)
		}
	}
}

// TestKafkaGRPCOneLog: one log, two front ends. A record produced through
// the Kafka API (kafka-python, gzip) is fetched through the gRPC API with
// the same offset, key, value, headers and timestamp; a record produced
// through the gRPC API is consumed by kafka-python the same.
func TestKafkaGRPCOneLog(t *testing.T) {
	t.Parallel()
	n := kafkaNode(t)
	g := dialNode(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	sent := pyProduce(t, n.kafkaAddr, "from-kafka", testRecords(30, true, 1_700_000_000_000), "--compression", "gzip")
	f, err := g.Fetch(ctx, &tierlogv1.FetchRequest{Topic: "from-kafka", Start: &tierlogv1.FetchRequest_Offset{Offset: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sameRecords(fromGRPC(0, f.GetRecords()), sent); err != nil {
		t.Errorf("produced with kafka-python, fetched with gRPC:\n%v", err)
	}

	ok(t, n, "", "topic", "create", "from-grpc")
	recs := testRecords(30, true, 1_600_000_000_000)
	recs[3].Key, recs[4].Value, recs[5].Headers = nil, nil, nil // null key, null value (a tombstone), no headers
	// gzip: Debian's kafka-python reads no other codec (snappy, lz4 and
	// zstd need Python modules python3-kafka does not depend on).
	req := &tierlogv1.ProduceRequest{Topic: "from-grpc", Compression: "gzip"}
	for _, r := range recs {
		rec := &tierlogv1.Record{TimestampMs: r.Timestamp, Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			rec.Headers = append(rec.Headers, &tierlogv1.Header{Key: h.Key, Value: h.Value})
		}
		req.Records = append(req.Records, rec)
	}
	pr, err := g.Produce(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		recs[i].Offset = pr.GetBaseOffset() + int64(i)
	}
	c := pyConsume(t, n.kafkaAddr, "from-grpc", len(recs), "--offset-reset", "earliest")
	if err := sameRecords(c.records(), recs); err != nil {
		t.Errorf("produced with gRPC, consumed with kafka-python:\n%v", err)
	}
}

// fromGRPC converts fetched gRPC records of partition p.
func fromGRPC(p int32, rs []*tierlogv1.Record) []krec {
	out := make([]krec, len(rs))
	for i, r := range rs {
		out[i] = krec{Partition: p, Offset: r.GetOffset(), Timestamp: r.GetTimestampMs(), Key: r.Key, Value: r.Value}
		for _, h := range r.GetHeaders() {
			out[i].Headers = append(out[i].Headers, khdr{Key: h.GetKey(), Value: h.Value})
		}
	}
	return out
}

// TestKafkaNewUser is the "done when", as a new user tries it:
// `tierlog serve` with no flags but its gRPC and HTTP ports (so tests do
// not take 7070/7071), in an empty directory - Kafka on the default
// localhost:9092 - then a plain kafka-python consumer started first and a
// plain producer; kcat reads it too; then the data is tiered, the local
// copies deleted, and a kafka-python consumer started with earliest and a
// franz-go consumer group read every record from offset 0, byte for byte,
// from the bucket.
func TestKafkaNewUser(t *testing.T) {
	t.Parallel()
	requireKafkaPython(t)
	requireKcat(t)
	const addr = "localhost:9092"
	testutil.Exclusive(t, "kafka-port-9092") // the one test binding 9092
	n := startServe(t, t.TempDir(), nil, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if n.kafkaAddr != addr {
		t.Fatalf("ready file kafka_addr %q, want %s", n.kafkaAddr, addr)
	}

	c := pyConsume(t, addr, "audit", 200)
	c.waitEvent("ready")
	sent := pyProduce(t, addr, "audit", testRecords(200, true, 0))
	wantOffsets(t, "producer acknowledgements", sent, 0, 0)
	if err := sameRecords(c.records(), sent); err != nil {
		t.Fatalf("consumer started first:\n%v", err)
	}
	if out := kcat(t, "", "-b", addr, "-C", "-t", "audit", "-o", "-1", "-e", "-f", "%o\n"); out != "199\n" {
		t.Errorf("kcat -C -o -1: %q, want the last offset 199", out)
	}

	// Tier everything and keep nothing local: what a node that has run for
	// a while looks like, without the wait.
	ok(t, n, "", "topic", "alter-config", "audit", "--config", "local.retention.bytes=0")
	ok(t, n, "", "tier", "upload", "audit")
	waitAllTiered(t, n, "audit", int64(len(sent)))

	replay := pyConsume(t, addr, "audit", len(sent), "--offset-reset", "earliest")
	if err := sameRecords(replay.records(), sent); err != nil {
		t.Errorf("earliest kafka-python consumer after tiering, against what was produced:\n%v", err)
	}
	if err := sameRecords(franzGroupRead(t, addr, "audit", "replay", len(sent)), sent); err != nil {
		t.Errorf("franz-go consumer group after tiering, against what was produced:\n%v", err)
	}
}

// franzGroupRead reads count records of topic from the start with a
// franz-go consumer in group, as its defaults have it.
func franzGroupRead(t *testing.T, addr, topic, group string, count int) []krec {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	defer cancel()
	var out []krec
	for len(out) < count {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("franz-go group %s: %d of %d records after %v", group, len(out), count, clientRunTimeout)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("franz-go fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			k := krec{Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UnixMilli(), Key: r.Key, Value: r.Value}
			for _, h := range r.Headers {
				k.Headers = append(k.Headers, khdr{Key: h.Key, Value: h.Value})
			}
			out = append(out, k)
		})
	}
	sortRecords(out)
	return out
}
