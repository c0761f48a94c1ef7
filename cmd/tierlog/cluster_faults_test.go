package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/replcheck"
	"github.com/tierlog/tierlog/tiering"
)

// partitionOf returns topic/p from a status (failing if it is absent).
func partitionOf(t *testing.T, st clusterStatus, topic string, p int32) partitionStatus {
	t.Helper()
	for _, ps := range st.Partitions {
		if ps.Topic == topic && ps.Partition == p {
			return ps
		}
	}
	t.Fatalf("no %s/%d in the cluster status: %+v", topic, p, st.Partitions)
	return partitionStatus{}
}

// waitISR asks node n (one that answers: not paused) until topic/0's ISR
// satisfies cond, and returns how long that took from since.
func waitISR(t *testing.T, n *node, topic string, what string, since time.Time, cond func(isr []int32) bool) time.Duration {
	t.Helper()
	eventually(t, what, func() error {
		ps := partitionOf(t, clusterStatusJSON(t, n), topic, 0)
		if !cond(ps.ISR) {
			return fmt.Errorf("ISR %v (leader %d, epoch %d)", ps.ISR, ps.Leader, ps.LeaderEpoch)
		}
		return nil
	})
	return time.Since(since)
}

// probeProduce sends one record at acks=all straight to node leader in a
// ProduceRequest written by hand (no client retries), and returns the
// partition's error code and, when it is 0, the offset it was stored at.
func probeProduce(t *testing.T, cl *kgo.Client, leader int32, topic string, key, value []byte) (int16, int64) {
	t.Helper()
	b, err := batch.Build([]batch.Record{{Timestamp: time.Now().UnixMilli(), Key: key, Value: value}}, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = 0, b
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.Partitions = topic, []kmsg.ProduceRequestTopicPartition{rp}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis, req.Topics = -1, 3000, []kmsg.ProduceRequestTopic{rt}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
	if err != nil {
		t.Fatalf("produce probe to node %d: %v", leader, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("produce probe: response %+v", resp)
	}
	p := resp.Topics[0].Partitions[0]
	return p.ErrorCode, p.BaseOffset
}

// logEnd reads a stopped node's replica of topic/0 and returns its end.
func logEnd(t *testing.T, dir, topic string) int64 {
	t.Helper()
	recs, err := replcheck.Records(dir, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		return 0
	}
	return recs[len(recs)-1].Offset + 1
}

// TestClusterFollowerFaults: three nodes, a topic with three replicas and
// min.insync.replicas=2, a franz-go producer at acks=all throughout.
//  1. A follower killed (SIGKILL) leaves the ISR; acks=all goes on with
//     two in sync; restarted, it rejoins.
//  2. The other follower paused (SIGSTOP) leaves the ISR, acks=all goes
//     on; resumed (SIGCONT), it rejoins.
//  3. Both followers killed: acks=all is refused with NOT_ENOUGH_REPLICAS
//     and nothing is acknowledged beyond what a follower holds; with
//     them back, it works again.
//
// Every acknowledged record is then checked on all three replicas.
func TestClusterFollowerFaults(t *testing.T) {
	c := startCluster(t, 3, "--bucket", "file://"+t.TempDir(), "--replica-lag-time-max", "2s")
	const topic = "faults"
	createAcksAllTopic(t, c, topic, 3)
	leader := leaderOf(t, c, topic, 0)
	waitInSync(t, c, topic, 0, 3)
	var followers []int32
	for _, r := range partitionOf(t, clusterStatusJSON(t, c.anyNode()), topic, 0).Replicas {
		if r != leader {
			followers = append(followers, r)
		}
	}
	if len(followers) != 2 {
		t.Fatalf("leader %d, followers %v: want 2", leader, followers)
	}
	f1, f2 := followers[0], followers[1]
	ln := c.node(int(leader)) // asked for the status: up throughout

	// Probes get a client of their own: a connection's answers come in
	// request order, and the producer's may wait out their timeouts.
	probe, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	acks, stop := startAcksAllProducer(t, c, topic, 10*time.Second)
	waitMoreAcks(t, acks, 300, "acknowledgements with every replica up")

	// 1. A follower killed and restarted.
	at := time.Now()
	c.kill(int(f1), syscall.SIGKILL)
	leftKilled := waitISR(t, ln, topic, fmt.Sprintf("killed node %d leaves the ISR", f1), at, func(isr []int32) bool { return !slices.Contains(isr, f1) })
	waitMoreAcks(t, acks, 300, "acks=all with one follower killed")
	at = time.Now()
	c.start(int(f1))
	rejoinKilled := waitISR(t, ln, topic, fmt.Sprintf("restarted node %d rejoins the ISR", f1), at, func(isr []int32) bool { return slices.Contains(isr, f1) })
	waitMoreAcks(t, acks, 300, "acks=all after the restart")

	// 2. A follower paused and resumed.
	paused := c.node(int(f2))
	at = time.Now()
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	leftPaused := waitISR(t, ln, topic, fmt.Sprintf("paused node %d leaves the ISR", f2), at, func(isr []int32) bool { return !slices.Contains(isr, f2) })
	waitMoreAcks(t, acks, 300, "acks=all with one follower paused")
	// The operator's view meanwhile: the hung node does not answer, the
	// leader does.
	st := clusterStatusJSON(t, ln)
	if ps := partitionOf(t, st, topic, 0); st.Errors[f2] == "" || ps.HighWatermark < 0 {
		t.Fatalf("cluster status with node %d paused: errors %v, high watermark %d; want it not answering and the leader's figures", f2, st.Errors, ps.HighWatermark)
	}
	at = time.Now()
	if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	rejoinPaused := waitISR(t, ln, topic, fmt.Sprintf("resumed node %d rejoins the ISR", f2), at, func(isr []int32) bool { return slices.Contains(isr, f2) })
	waitInSync(t, c, topic, 0, 3)
	waitMoreAcks(t, acks, 300, "acks=all after the pause")

	// 3. Both followers down: acks=all is refused before anything is
	// acknowledged that only the leader holds.
	at = time.Now()
	c.kill(int(f1), syscall.SIGKILL)
	c.kill(int(f2), syscall.SIGKILL)
	probes, codes := 0, map[int16]int{}
	var refusedAfter time.Duration
	eventually(t, "acks=all refused with NOT_ENOUGH_REPLICAS, two nodes down", func() error {
		probes++
		code, off := probeProduce(t, probe, leader, topic, fmt.Appendf(nil, "probe-down-%d", probes), []byte("must not be acknowledged"))
		codes[code]++
		if code == 0 {
			t.Fatalf("acks=all produce acknowledged at offset %d with both followers down", off)
		}
		if code != kerr.NotEnoughReplicas.Code {
			return fmt.Errorf("probe %d: %v", probes, kerr.ErrorForCode(code))
		}
		refusedAfter = time.Since(at)
		return nil
	})
	// A few more, while the producer keeps retrying.
	for i := range 3 {
		if code, _ := probeProduce(t, probe, leader, topic, fmt.Appendf(nil, "probe-refused-%d", i), []byte("x")); code != kerr.NotEnoughReplicas.Code {
			t.Fatalf("probe after the first refusal: %v, want NOT_ENOUGH_REPLICAS", kerr.ErrorForCode(code))
		}
	}
	// Whatever was acknowledged is on the leader and a follower: below
	// the end of the longer of the stopped followers' logs.
	held := max(logEnd(t, c.dirs[f1-1], topic), logEnd(t, c.dirs[f2-1], topic))
	for _, a := range acks.all() {
		if a.Offset >= held {
			t.Fatalf("acknowledged %q at offset %d, but the followers hold offsets below %d only", a.Value, a.Offset, held)
		}
	}
	downAcks := acks.count()

	at = time.Now()
	c.start(int(f1))
	c.start(int(f2))
	var probeAck replcheck.Ack
	attempt := 0
	eventually(t, "acks=all works again with the followers back", func() error {
		// A key per attempt: a refused attempt may still be stored (not
		// acknowledged, e.g. NOT_ENOUGH_REPLICAS_AFTER_APPEND), and a retry
		// of the same record would read as a duplicate of the acked one.
		attempt++
		key := fmt.Appendf(nil, "probe-back-%d", attempt)
		code, off := probeProduce(t, probe, leader, topic, key, []byte("acknowledged"))
		if code != 0 {
			return fmt.Errorf("probe: %v", kerr.ErrorForCode(code))
		}
		probeAck = replcheck.Ack{Partition: 0, Offset: off, Key: key, Value: []byte("acknowledged")}
		return nil
	})
	recovered := time.Since(at)
	waitMoreAcks(t, acks, 300, "the producer's acknowledgements resume")
	stop()
	waitInSync(t, c, topic, 0, 3)

	want := append(acks.all(), probeAck)
	rep := verifyAcknowledged(t, c, topic, want)
	t.Logf("leader %d; killed follower %d left the ISR after %v, rejoined %v after its restart; paused follower %d left after %v, rejoined %v after SIGCONT",
		leader, f1, leftKilled.Round(time.Millisecond), rejoinKilled.Round(time.Millisecond), f2, leftPaused.Round(time.Millisecond), rejoinPaused.Round(time.Millisecond))
	t.Logf("two followers down: NOT_ENOUGH_REPLICAS %v after the kills (probe codes %v), %d acknowledged then; acks=all back %v after the restarts",
		refusedAfter.Round(time.Millisecond), codes, downAcks, recovered.Round(time.Millisecond))
	t.Logf("%d acknowledged records, %d producer send errors; %s", len(want), acks.errs, rep)
}

// bucketSegments lists the segment objects (*.seg) of a file:// bucket
// directory, as paths relative to it, sorted.
func bucketSegments(t *testing.T, dir string) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".seg") {
			rel, _ := filepath.Rel(dir, path)
			keys = append(keys, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// sharedManifest reads topic/0's manifest from a file:// bucket directory
// holding a cluster's shared prefix.
func sharedManifest(t *testing.T, dir, topic string) tiering.Manifest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(tiering.PartitionPrefix(topic, 0)), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m tiering.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// produceLines produces each line as one record at acks=all, in order, 50
// to a batch (a batch is never split between segments), and returns what
// was acknowledged. Line i gets the key k<first+i>.
func produceLines(t *testing.T, cl *kgo.Client, topic string, lines []string, first int) []replcheck.Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	defer cancel()
	var out []replcheck.Ack
	for chunk := range slices.Chunk(lines, 50) {
		recs := make([]*kgo.Record, len(chunk))
		for i, l := range chunk {
			recs[i] = &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", first+len(out)+i), Value: []byte(l)}
		}
		res := cl.ProduceSync(ctx, recs...)
		if err := res.FirstErr(); err != nil {
			t.Fatalf("produce %d records: %v", len(recs), err)
		}
		for _, r := range res {
			out = append(out, replcheck.Ack{Partition: r.Record.Partition, Offset: r.Record.Offset, Key: r.Record.Key, Value: r.Record.Value})
		}
	}
	return out
}

// TestClusterWipedFollowerRebuilds: small segments and no local retention,
// so the leader tiers the history and drops it locally. A follower whose
// data directory is wiped comes back with the same id, starts at the
// leader's local log start (the history stays in the bucket only: nothing
// is copied or uploaded again), catches up, and once it leads (the old
// leader killed) serves every acknowledged record from offset 0, byte for
// byte - the old part from the shared bucket.
func TestClusterWipedFollowerRebuilds(t *testing.T) {
	bucket := t.TempDir()
	c := startCluster(t, 3, "--bucket", "file://"+bucket, "--default", "segment.bytes=16384",
		"--default", "segment.ms=1000", "--default", "local.retention.bytes=0")
	const topic = "wiped"
	createAcksAllTopic(t, c, topic, 3)
	leader := leaderOf(t, c, topic, 0)
	waitInSync(t, c, topic, 0, 3)
	// The follower the controller will choose when the leader dies: the
	// first other replica in assignment order (cluster.ElectLeader).
	var wiped int32 = -1
	for _, r := range partitionOf(t, clusterStatusJSON(t, c.anyNode()), topic, 0).Replicas {
		if r != leader && wiped < 0 {
			wiped = r
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordRetries(1<<30), kgo.RecordDeliveryTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	lines := tierLines(3000)
	acks := produceLines(t, cl, topic, lines[:2000], 0)
	tieredEnd := acks[len(acks)-1].Offset + 1
	row := waitAllTiered(t, c.node(int(leader)), topic, tieredEnd)
	before := bucketSegments(t, bucket)
	if len(before) < 2 {
		t.Fatalf("%d segment objects in the bucket after tiering %d records of ~100 bytes in 16 KiB segments", len(before), tieredEnd)
	}

	// Wipe the follower's disk and bring it back under the same id.
	c.kill(int(wiped), syscall.SIGTERM)
	if err := os.RemoveAll(c.dirs[wiped-1]); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	c.start(int(wiped))
	// A restarted node counts as alive only once the controller took it
	// out of every ISR (its old membership promised a log it no longer
	// has); in sync after that is in sync for real.
	c.waitAlive(3)
	waitInSync(t, c, topic, 0, 3)
	rebuilt := time.Since(at)
	wst, err := parseTierStatus(ok(t, c.node(int(wiped)), "", "tier", "status", topic))
	if err != nil {
		t.Fatal(err)
	}
	wrow, err := wst.partitionRow()
	if err != nil {
		t.Fatal(err)
	}
	if wrow["LOCAL START"] != row["LOCAL START"] {
		t.Fatalf("wiped follower's local log starts at %s, the leader's at %s: it copied history the bucket holds\n%s", wrow["LOCAL START"], row["LOCAL START"], wst.raw)
	}
	// More records while it is in sync: these it holds locally.
	acks = append(acks, produceLines(t, cl, topic, lines[2000:], 2000)...)
	end := acks[len(acks)-1].Offset + 1
	waitInSync(t, c, topic, 0, 3)
	local, err := replcheck.Records(c.dirs[wiped-1], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(local) == 0 || local[0].Offset < tieredEnd || local[len(local)-1].Offset != end-1 {
		t.Fatalf("wiped follower's log holds %d records from %v; want [%d, %d)", len(local), local[:min(1, len(local))], tieredEnd, end)
	}

	// The old leader dies; the rebuilt follower leads and serves it all.
	at = time.Now()
	c.kill(int(leader), syscall.SIGKILL)
	eventually(t, fmt.Sprintf("node %d leads", wiped), func() error {
		if l := partitionOf(t, clusterStatusJSON(t, c.anyNode()), topic, 0).Leader; l != wiped {
			return fmt.Errorf("leader %d", l)
		}
		return nil
	})
	failover := time.Since(at)
	// Its high watermark reaches the end once the other follower fetches
	// from it.
	eventually(t, "the new leader's high watermark at the end", func() error {
		if ps := partitionOf(t, clusterStatusJSON(t, c.anyNode()), topic, 0); ps.HighWatermark != end {
			return fmt.Errorf("high watermark %d, log end %d, want %d", ps.HighWatermark, ps.LogEnd, end)
		}
		return nil
	})
	got := readAll(t, c.kafkaAddrs(), topic)
	if int64(len(got)) != end {
		t.Fatalf("read %d records from offset 0, want %d", len(got), end)
	}
	for i, r := range got {
		a := acks[i]
		if r.Offset != a.Offset || !bytes.Equal(r.Key, a.Key) || !bytes.Equal(r.Value, a.Value) {
			t.Fatalf("record %d: offset %d key %q value %q; acknowledged offset %d key %q value %q", i, r.Offset, r.Key, r.Value, a.Offset, a.Key, a.Value)
		}
	}

	// The new leader tiers on from where the old one stopped: the old
	// objects stay, none is uploaded twice, every one is in the manifest.
	waitAllTiered(t, c.node(int(wiped)), topic, end)
	after := bucketSegments(t, bucket)
	for _, k := range before {
		if !slices.Contains(after, k) {
			t.Fatalf("segment object %s gone after the failover", k)
		}
	}
	m := sharedManifest(t, bucket, topic)
	var named []string
	bases := map[int64]bool{}
	for _, s := range m.Segments {
		if bases[s.BaseOffset] {
			t.Fatalf("manifest names two segments at base offset %d: %+v", s.BaseOffset, m.Segments)
		}
		bases[s.BaseOffset] = true
		named = append(named, s.Key)
	}
	slices.Sort(named)
	if !slices.Equal(named, after) {
		t.Fatalf("bucket holds %v, manifest names %v", after, named)
	}

	rep := stopAndCheckReplicas(t, c, topic, acks, true)
	t.Logf("leader %d tiered [0, %d) into %d objects; wiped follower %d back in sync %v after its restart, local log from %s; failover to it %v; %d records read from 0; bucket %d objects after; %s",
		leader, tieredEnd, len(before), wiped, rebuilt.Round(time.Millisecond), wrow["LOCAL START"], failover.Round(time.Millisecond), len(got), len(after), rep)
}
