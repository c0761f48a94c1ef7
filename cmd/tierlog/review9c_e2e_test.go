package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/testutil"
)

// Third review of issue 9. Each test proves a defect and FAILS on main as
// it is; its comment says what should happen.

// TestReview9c_NodeRestartedAfterTopicDeletedNeverSettles: a node that was
// down while a topic it holds was deleted never settles once it is back.
// settle (broker/replicas.go:159-186) waits, after importLocalTopics,
// until "every local topic is in this node's metadata with its id"
// (replicas.go:170-178). On a restart the import marker exists, so
// importLocalTopics does nothing, and a topic the cluster deleted while
// the node was away is a local topic the metadata lacks - exactly what
// settle is there to let reconcileTopics delete. The condition can never
// hold: waitFor times out every 15 s and settle retries for ever.
// Unsettled, reconcileTopics (reconcile.go:131-133) deletes nothing - the
// deleted topic's data stays on the node for good - and a topic created
// again under the same name is never created on it (reconcile.go:160-162:
// the old id is "pending deletion"), so the node never replicates it and
// never returns to its ISR; its heartbeats report Reconciled 0 for good,
// so every create/add-partitions anywhere waits the full 5 s (waitOthers).
//
// What should happen: settle waits only for the topics importLocalTopics
// imported in this run (or for the metadata to be caught up, as
// WaitCaughtUp already ensures) - a local topic the metadata lacks after
// the import is done is a deleted one; the node deletes it, creates the
// new topic of the name and follows it.
func TestReview9c_NodeRestartedAfterTopicDeletedNeverSettles(t *testing.T) {
	c := startCluster(t, 3, "--bucket", "none", "--replica-lag-time-max", "2s")
	adm := kadmFor(t, c)
	for _, name := range []string{"gone", "again"} {
		resp, err := adm.CreateTopic(context.Background(), 1, 3, nil, name)
		if err != nil || resp.Err != nil {
			t.Fatalf("create topic %s: %v %v", name, err, resp.Err)
		}
	}
	gone := filepath.Join(c.dirs[2], "topics", "gone")
	eventually(t, "node 3 holds topic gone", func() error {
		_, err := os.Stat(gone)
		return err
	})

	// Node 3 is away while both topics are deleted.
	c.kill(3, syscall.SIGKILL)
	adm = kadmFor(t, c)
	eventually(t, "delete topics", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rs, err := adm.DeleteTopics(ctx, "gone", "again")
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
				return r.Err
			}
		}
		return nil
	})
	t.Log("topics deleted; restarting node 3")
	c.start(3)
	c.waitAlive(3)
	t.Log("node 3 back and alive; re-creating topic again")

	// "again" is created anew, with node 3 among its replicas.
	createAcksAllTopic(t, c, "again", 3)
	// When node 3 is the new topic's first replica it is its leader in
	// the metadata, yet it never takes the role (its local "again" is the
	// old one): then no record is accepted at all, and no failover follows
	// (node 3 heartbeats). Bounded here so the test fails instead of
	// retrying for ever.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafkaAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic("again"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := cl.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: fmt.Appendf(nil, "v-%d", i)}).FirstErr()
		cancel()
		if err != nil {
			t.Fatalf("produce %d to the re-created topic: %v (cluster status: %v)", i, err, statusOf(t, c, "again"))
		}
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		for _, ps := range clusterStatusJSON(t, c.anyNode()).Partitions {
			if ps.Topic == "again" && ps.Partition == 0 {
				return len(ps.ISR) == 3 && ps.Lag[3] == 0 && ps.HighWatermark == 5
			}
		}
		return false
	}, "node 3 never follows the re-created topic again (cluster status: %+v)", statusOf(t, c, "again"))
	testutil.Eventually(t, 30*time.Second, func() bool {
		_, err := os.Stat(gone)
		return errors.Is(err, os.ErrNotExist)
	}, "node 3 still holds %s, a topic the cluster deleted while it was away", gone)
}

// statusOf prints topic/0's cluster status (for failure messages).
type statusOfT struct {
	t     *testing.T
	c     *testCluster
	topic string
}

func statusOf(t *testing.T, c *testCluster, topic string) fmt.Stringer { return statusOfT{t, c, topic} }

func (s statusOfT) String() string {
	for _, ps := range clusterStatusJSON(s.t, s.c.anyNode()).Partitions {
		if ps.Topic == s.topic && ps.Partition == 0 {
			return fmt.Sprintf("%+v", ps)
		}
	}
	return "no " + s.topic + "/0"
}
