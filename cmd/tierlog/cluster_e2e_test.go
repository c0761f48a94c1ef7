package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// leaderOf asks the running nodes which node leads a partition.
func leaderOf(t testing.TB, c *testCluster, topic string, p int32) int32 {
	t.Helper()
	var leader int32 = -1
	eventually(t, "a leader for "+topic, func() error {
		st := clusterStatusJSON(t, c.anyNode())
		for _, ps := range st.Partitions {
			if ps.Topic == topic && ps.Partition == p && ps.Leader >= 0 {
				leader = ps.Leader
				return nil
			}
		}
		return fmt.Errorf("no leader in %+v", st.Partitions)
	})
	return leader
}

// clusterStatusJSON runs `tierlog cluster status --json` against n.
func clusterStatusJSON(t testing.TB, n *node) clusterStatus {
	t.Helper()
	out := ok(t, n, "", "cluster", "status", "--json")
	var st clusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster status --json: %v\n%s", err, out)
	}
	return st
}

// waitInSync waits until every replica of topic/p is in its ISR and the
// followers have caught up with the leader's log end.
func waitInSync(t testing.TB, c *testCluster, topic string, p int32, replicas int) {
	t.Helper()
	eventually(t, "all replicas in sync", func() error {
		st := clusterStatusJSON(t, c.anyNode())
		for _, ps := range st.Partitions {
			if ps.Topic != topic || ps.Partition != p {
				continue
			}
			if len(ps.ISR) != replicas {
				return fmt.Errorf("ISR %v", ps.ISR)
			}
			for id, lag := range ps.Lag {
				if lag != 0 {
					return fmt.Errorf("node %d lags %d", id, lag)
				}
			}
			if ps.HighWatermark != ps.LogEnd {
				return fmt.Errorf("high watermark %d, log end %d", ps.HighWatermark, ps.LogEnd)
			}
			return nil
		}
		return fmt.Errorf("no %s/%d in %+v", topic, p, st.Partitions)
	})
}

// TestClusterAcksAllSurvivesLeaderKills: three nodes, a franz-go producer
// at acks=all with min.insync.replicas=2, and the partition's leader killed
// with SIGKILL mid-stream, cycle after cycle (restarted each time). Every
// acknowledged record is then read back from the leader at its offset,
// exactly once, and the three replicas hold the same bytes (replcheck).
func TestClusterAcksAllSurvivesLeaderKills(t *testing.T) {
	c := startCluster(t, 3, "--bucket", "file://"+t.TempDir())
	const topic = "audit"
	createAcksAllTopic(t, c, topic, 3)
	acks, stop := startAcksAllProducer(t, c, topic, 10*time.Second)
	const cycles = 4
	var failovers []time.Duration
	for cycle := range cycles {
		waitMoreAcks(t, acks, 300, "records acknowledged before the kill")
		leader := int(leaderOf(t, c, topic, 0))
		killedAt, at := time.Now(), acks.count()
		c.kill(leader, syscall.SIGKILL)
		// The client learns the new leader from the survivors.
		eventually(t, "acknowledgements resume after the leader's kill", func() error {
			if n := acks.count(); n < at+50 {
				return fmt.Errorf("%d acknowledged, %d at the kill", n, at)
			}
			return nil
		})
		failovers = append(failovers, time.Since(killedAt))
		c.start(leader)
		waitInSync(t, c, topic, 0, 3)
		t.Logf("cycle %d: killed leader %d; acknowledgements resumed %v later", cycle, leader, failovers[cycle].Round(time.Millisecond))
	}
	stop()
	waitInSync(t, c, topic, 0, 3)

	// Read back from the leader: every acknowledged record at its offset;
	// then the replicas, byte for byte, once stopped.
	want := acks.all()
	rep := verifyAcknowledged(t, c, topic, want)
	t.Logf("%d acknowledged records over %d leader kills, %d send errors; replicas agree: %s; failovers %v",
		len(want), cycles, acks.errs, rep, failovers)
}

// kadmFor is an admin client of the cluster's running nodes.
func kadmFor(t testing.TB, c *testCluster) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// readAll reads partition 0 of topic from its start to its end (the high
// watermark), from whichever node leads it.
func readAll(t *testing.T, seeds []string, topic string) []*kgo.Record {
	t.Helper()
	return readPartition(t, seeds, topic, 0)
}

// readPartition reads one partition of topic from its start to its end.
func readPartition(t *testing.T, seeds []string, topic string, p int32) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		topic: {p: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The end offset from the partition's leader (a node that just took
	// the lead answers NOT_LEADER for a moment).
	var end kadm.ListedOffset
	eventually(t, "the end offset of "+topic, func() error {
		ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
		if err != nil {
			return err
		}
		var ok bool
		if end, ok = ends.Lookup(topic, p); !ok {
			return fmt.Errorf("no %s/%d in %v", topic, p, ends)
		}
		return end.Err
	})
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	defer cancel()
	var out []*kgo.Record
	for end.Offset > 0 && (len(out) == 0 || out[len(out)-1].Offset < end.Offset-1) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %d records, end %d", topic, len(out), end.Offset)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// TestClusterGroupOffsetsSurviveControllerKill: a consumer group commits
// on the controller (its coordinator); the controller is killed with
// SIGKILL; a new member of the group, coordinated by the new controller,
// resumes exactly at the committed offset.
func TestClusterGroupOffsetsSurviveControllerKill(t *testing.T) {
	c := startCluster(t, 3, "--bucket", "none")
	const topic, group = "events", "billing"
	adm := kadmFor(t, c)
	if resp, err := adm.CreateTopic(context.Background(), 1, 3, nil, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range 1000 {
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "e-%04d", i)}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	// Consume 400 records and commit them (synchronously: acknowledged).
	consume := func(n int) (first int64, commitAt int64) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
		defer cancel()
		first = -1
		var got []*kgo.Record
		for len(got) < n {
			fs := cl.PollRecords(ctx, n-len(got))
			if ctx.Err() != nil {
				t.Fatalf("consumed %d of %d", len(got), n)
			}
			got = append(got, fs.Records()...)
		}
		first = got[0].Offset
		if err := cl.CommitRecords(ctx, got[n-1]); err != nil {
			t.Fatalf("commit: %v", err)
		}
		return first, got[n-1].Offset + 1
	}
	if first, _ := consume(400); first != 0 {
		t.Fatalf("a new group started at %d, want 0", first)
	}
	ctl := clusterStatusJSON(t, c.anyNode()).Controller
	c.kill(int(ctl), syscall.SIGKILL)
	first, _ := consume(100)
	if first != 400 {
		t.Fatalf("after the controller (the group coordinator, node %d) was killed the group resumed at %d, want 400 (its acknowledged commit)", ctl, first)
	}
	if now := clusterStatusJSON(t, c.anyNode()).Controller; now == ctl {
		t.Fatalf("controller still %d after its kill", now)
	}
}

// TestClusterUpgradeFromSingleNode: a single node's data directory (a
// topic with records, its file bucket) becomes node 1 of a three-node
// cluster: the topic enters the cluster's metadata with one replica on
// node 1, every record is still served, and the cluster's bucket is the
// single node's (taken over once with --takeover).
func TestClusterUpgradeFromSingleNode(t *testing.T) {
	c := newTestCluster(t, 3)
	single := startNode(t, c.dirs[0], nil)
	ok(t, single, "", "topic", "create", "old", "--partitions", "2")
	cl, err := kgo.NewClient(kgo.SeedBrokers(single.kafkaAddr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		r := &kgo.Record{Topic: "old", Partition: int32(i % 2), Value: fmt.Appendf(nil, "r-%03d", i)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	if code := single.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("single node exit %d", code)
	}
	bucket := "file://" + filepath.Join(c.dirs[0], "bucket")
	c.args = []string{"--bucket", bucket}
	c.prep = func(id int, cmd *exec.Cmd) {
		if id == 1 {
			cmd.Args = append(cmd.Args, "--takeover")
		}
	}
	c.startAll()
	var st clusterStatus
	eventually(t, "the single node's topic in the cluster's metadata", func() error {
		st = clusterStatusJSON(t, c.node(2))
		for _, p := range st.Partitions {
			if p.Topic == "old" && p.Partition == 1 {
				if len(p.Replicas) != 1 || p.Replicas[0] != 1 || p.Leader != 1 {
					return fmt.Errorf("old/1: replicas %v leader %d, want [1] led by 1", p.Replicas, p.Leader)
				}
				return nil
			}
		}
		return fmt.Errorf("no old/1 in %+v", st.Partitions)
	})
	got := 0
	for p := range int32(2) {
		recs := readPartition(t, c.kafkaAddrs(), "old", p)
		for i, r := range recs {
			want := fmt.Sprintf("r-%03d", 2*i+int(p))
			if string(r.Value) != want || r.Offset != int64(i) {
				t.Fatalf("old/%d offset %d: %q, want %q at %d", p, r.Offset, r.Value, want, i)
			}
		}
		got += len(recs)
	}
	if got != 200 {
		t.Fatalf("%d of 200 records served after the upgrade", got)
	}
}

// TestClusterCreatedTopicKnownEverywhere: once a create through one node
// is answered, every node knows the topic (Metadata without error at once),
// so a client that goes straight to another node (kcat -C) finds it.
func TestClusterCreatedTopicKnownEverywhere(t *testing.T) {
	c := startCluster(t, 3, "--bucket", "none")
	for i := range 5 {
		topic := fmt.Sprintf("fresh-%d", i)
		ok(t, c.node(1), "", "topic", "create", topic, "--partitions", "3", "--replication-factor", "3")
		for id := 2; id <= 3; id++ {
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.node(id).kafkaAddr))
			if err != nil {
				t.Fatal(err)
			}
			md, err := kadm.NewClient(cl).Metadata(context.Background(), topic)
			cl.Close()
			if err != nil {
				t.Fatal(err)
			}
			if td := md.Topics[topic]; td.Err != nil || len(td.Partitions) != 3 {
				t.Fatalf("node %d right after the create through node 1: %v, %d partitions", id, td.Err, len(td.Partitions))
			}
		}
	}
}

// TestClusterLogStartInMetadata: when total retention deletes a
// partition's oldest segments from the bucket, its leader records the new
// first offset in the cluster metadata, which every node shows.
func TestClusterLogStartInMetadata(t *testing.T) {
	c := startCluster(t, 3, "--bucket", "file://"+t.TempDir(), "--replica-lag-time-max", "2s")
	const topic = "short"
	ok(t, c.node(1), "", "topic", "create", topic, "--replication-factor", "3",
		"--config", "segment.bytes=16384", "--config", "segment.ms=500", "--config", "local.retention.bytes=0",
		"--config", "retention.bytes=20000")
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 40 {
		var recs []*kgo.Record
		for j := range 50 {
			recs = append(recs, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%03d-%02d-%x", i, j, rand.Uint64())})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for id := 1; id <= 3; id++ {
		eventually(t, fmt.Sprintf("node %d shows the log start moved by retention", id), func() error {
			p := partitionOf(t, clusterStatusJSON(t, c.node(id)), topic, 0)
			if p.LogStart <= 0 {
				return fmt.Errorf("log start %d", p.LogStart)
			}
			return nil
		})
	}
}
