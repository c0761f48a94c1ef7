package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// Review tests for issue 9 (the replicated cluster). Each proves a defect
// and FAILS on main as it is; the comment says what should happen.

// review9Produce produces n numbered records to partition 0 of topic at
// acks=all, one by one, and returns what was acknowledged.
func review9Produce(t *testing.T, c *testCluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var acked []*kgo.Record
	for i := range n {
		r := &kgo.Record{Partition: 0, Value: fmt.Appendf(nil, "v-%05d", i)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatalf("produce %d at acks=all: %v", i, err)
		}
		acked = append(acked, r)
	}
	return acked
}

// review9Partition returns the cluster's view of topic/0.
func review9Partition(t *testing.T, c *testCluster, topic string) partitionStatus {
	t.Helper()
	var out partitionStatus
	eventually(t, "status of "+topic, func() error {
		for _, ps := range clusterStatusJSON(t, c.anyNode()).Partitions {
			if ps.Topic == topic && ps.Partition == 0 {
				out = ps
				return nil
			}
		}
		return fmt.Errorf("no %s/0", topic)
	})
	return out
}

// TestReview9_RestartedWipedReplicaStaysInISRAndIsElected: a follower that
// restarts with an empty disk before the controller's session timeout runs
// out is still in the ISR (the controller cannot tell a restarted node from
// one that never stopped: heartbeats carry no incarnation, and nothing takes
// a restarted replica out of the ISR until replica_lag_time_max passes).
// When the leader dies then, the controller elects it - the first alive ISR
// member in assignment order - with an empty log; the other follower, which
// holds every acknowledged record, truncates to it. Every record
// acknowledged at acks=all (min.insync.replicas=2, all three in sync) is
// lost.
//
// What should happen: a replica whose node restarted (a new incarnation)
// leaves the ISR (and cannot be elected) until it has caught up again, so
// the follower that holds the records is elected and they are all served.
//
// At fault: cluster/controller_loop.go:126 (Heartbeat: a beat from a new
// process is "simply alive again") and cluster/controller.go:47
// (ElectLeader trusts ISR membership of a node that restarted).
func TestReview9_RestartedWipedReplicaStaysInISRAndIsElected(t *testing.T) {
	// A long session timeout only makes the restart beat it every time; at
	// the default 2 s a fast restart (a rescheduled pod with an emptyDir)
	// does the same.
	c := startCluster(t, 3, "--bucket", "file://"+t.TempDir(), "--session-timeout", "15s", "--replica-lag-time-max", "60s")
	const topic = "wiped"
	createAcksAllTopic(t, c, topic, 3)
	acked := review9Produce(t, c, topic, 50)
	waitInSync(t, c, topic, 0, 3)

	ps := review9Partition(t, c, topic)
	leader := int(ps.Leader)
	// The controller elects the first alive ISR member in assignment
	// order: wipe that one.
	wiped := -1
	for _, r := range ps.Replicas {
		if int(r) != leader {
			wiped = int(r)
			break
		}
	}
	t.Logf("replicas %v, leader %d, wiping node %d", ps.Replicas, leader, wiped)

	c.kill(wiped, syscall.SIGKILL)
	c.kill(leader, syscall.SIGKILL)
	if err := os.RemoveAll(c.dirs[wiped-1]); err != nil {
		t.Fatal(err)
	}
	// The wipe took the node's Raft state too: it waits until the cluster
	// re-admits it (cluster/admission.go), which takes a Raft majority
	// with state - the survivor and the old leader's node. (Electing with
	// the wiped node's vote could lose committed metadata.) So the old
	// leader's node comes back as well, a new process on its disk.
	wipedReady := c.launch(wiped)
	c.start(leader)
	wipedReady()

	var now partitionStatus
	eventually(t, "a new leader", func() error {
		now = review9Partition(t, c, topic)
		if now.Leader < 0 || int(now.Leader) == leader {
			return fmt.Errorf("leader %d", now.Leader)
		}
		return nil
	})
	t.Logf("after the leader's death: leader %d epoch %d ISR %v", now.Leader, now.LeaderEpoch, now.ISR)
	if int(now.Leader) == wiped {
		t.Errorf("node %d, restarted with an empty disk, was elected leader from the ISR %v", wiped, now.ISR)
	}

	served := readBack(t, c, topic)
	lost := 0
	for _, a := range acked {
		if r, ok := served[a.Offset]; !ok || !bytes.Equal(r.Value, a.Value) {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d records acknowledged at acks=all (min.insync.replicas=2) are lost after one leader death; the cluster serves %d records", lost, len(acked), len(served))
	}
}

// startClusterEnv is startCluster with extra environment for every node
// (MinIO credentials). Restarts (c.start) do not get it.
func startClusterEnv(t *testing.T, n int, env []string, args ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, args: args, nodes: make([]*node, n)}
	for i := range n {
		c.dirs = append(c.dirs, filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i+1)))
		c.raft = append(c.raft, testutil.FreeAddr(t))
	}
	var ready []func()
	for i := range n {
		all := append([]string{"--node-id", fmt.Sprint(i + 1), "--peers", c.peers()}, args...)
		nd, r := launchNode(t, c.dirs[i], env, all...)
		c.nodes[i] = nd
		ready = append(ready, r)
	}
	for _, r := range ready {
		r()
	}
	c.waitAlive(n)
	return c
}

// TestReview9_StalledBucketStopsReplication: a follower re-reads its
// partition's manifest from the bucket every 30 s inside its fetch loop
// (broker/follower.go:24-31), with no deadline of its own. While the bucket
// does not answer (MinIO in maintenance, a black-holed route - here a
// proxy that holds manifest HEADs), the follower stops fetching altogether:
// it falls out of the ISR after replica_lag_time_max, and every acks=all
// produce with min.insync.replicas=2 is refused, although both nodes are up
// and talk to each other.
//
// What should happen: replication never waits for the bucket (DESIGN: "the
// bucket can be down for hours"); the follower keeps fetching and stays in
// sync, and acks=all keeps working; only its local retention waits for a
// fresh manifest.
func TestReview9_StalledBucketStopsReplication(t *testing.T) {
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	bucket := "minio://" + proxy.Addr + "/" + m.Bucket + "/tierlog?secure=false"
	c := startClusterEnv(t, 2, m.Env(), "--bucket", bucket, "--replica-lag-time-max", "2s")
	const topic = "stall"
	createAcksAllTopic(t, c, topic, 2)
	created := time.Now()
	review9Produce(t, c, topic, 10)
	waitInSync(t, c, topic, 0, 2)

	// From now on the bucket holds every manifest HEAD (no answer).
	held := proxy.Add(faultproxy.Rule{Method: "HEAD", PathContains: "manifest.json", Fault: faultproxy.Hold})
	t.Cleanup(held.Release)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// Not idempotent: franz-go enforces the delivery timeout on an
		// idempotent producer only where it is safe, i.e. never here.
		kgo.DisableIdempotentWrite(), kgo.RecordDeliveryTimeout(15*time.Second), kgo.ProduceRequestTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Produce for well past the follower's first manifest refresh (30 s
	// after it started following) and replica_lag_time_max after it.
	for i := 0; time.Since(created) < 45*time.Second || held.Held() == 0; i++ {
		if time.Since(created) > 3*time.Minute {
			t.Fatalf("no manifest HEAD reached the stalled bucket in 3 min")
		}
		r := &kgo.Record{Partition: 0, Value: fmt.Appendf(nil, "w-%05d", i)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			ps := review9Partition(t, c, topic)
			t.Fatalf("%v after the topic was created, the bucket holding %d manifest read(s) (both nodes up): acks=all produce %d failed: %v; ISR %v, lag %v",
				time.Since(created).Round(time.Second), held.Held(), i, err, ps.ISR, ps.Lag)
		}
	}
	t.Logf("%d manifest reads held; replication went on", held.Held())
}
