package main

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// Second review of issue 9 (the replicated cluster). Each test proves a
// defect and FAILS on main as it is; its comment says what should happen.

// review9bAdmin is a kadm client seeded with the given nodes' Kafka
// addresses (a fresh one: no coordinator cached from earlier steps).
func review9bAdmin(t *testing.T, addrs []string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RetryTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// review9bController asks the nodes (not stopped ones) which node is the
// controller; -1 if they do not know or do not agree.
func review9bController(t *testing.T, c *testCluster, running []int) int {
	t.Helper()
	id := -2
	for _, n := range running {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		md, err := review9bAdmin(t, []string{c.node(n).kafkaAddr}).BrokerMetadata(ctx)
		cancel()
		if err != nil {
			return -1
		}
		switch {
		case id == -2:
			id = int(md.Controller)
		case id != int(md.Controller):
			return -1
		}
	}
	return id
}

// review9bCommitted fetches group's committed offset of topic/0 from its
// coordinator (-1: none), retrying while the coordinator moves.
func review9bCommitted(t *testing.T, c *testCluster, group, topic string) int64 {
	t.Helper()
	var got int64
	eventually(t, "fetch committed offsets", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rs, err := review9bAdmin(t, c.kafkaAddrs()).FetchOffsets(ctx, group)
		if err != nil {
			return err
		}
		got = -1
		if r, ok := rs.Lookup(topic, 0); ok {
			if r.Err != nil {
				return r.Err
			}
			got = r.At
		}
		return nil
	})
	return got
}

// review9bCommit commits group's offset of topic/0, retrying while the
// coordinator moves; it returns once the commit is acknowledged.
func review9bCommit(t *testing.T, c *testCluster, group, topic string, at int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("commit offset %d", at), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var os kadm.Offsets
		os.AddOffset(topic, 0, at, -1)
		rs, err := review9bAdmin(t, c.kafkaAddrs()).CommitOffsets(ctx, group, os)
		if err != nil {
			return err
		}
		return rs.Error()
	})
}

// TestReview9b_StaleCoordinatorServesLostOffsetCommit: a node decides
// whether it coordinates the consumer groups in topicsPass
// (broker/replicas.go:177 rm.coordinate()), which runs in the topics loop
// behind reconcileTopics - the loop that waits for the bucket (a deletion
// writes the bucket's tombstone with b.ctx, no deadline, on the
// controller). coordinating is set once, when the node becomes the
// controller, and is cleared only by a later pass that finds the node not
// leading (broker/groupsync.go:70-90). IsGroupCoordinator
// (broker/groupsync.go:63) then trusts "coordinating && IsLeader()".
//
// Here the bucket holds the PUT of a deleted topic's tombstone, so the
// controller A's topics loop is stuck. A loses the controller seat (it is
// paused a few seconds), a new controller loads the offsets from Raft and
// acknowledges a commit of offset 20 (committed to Raft before the
// answer). When A becomes controller again, its topics loop is still
// stuck: coordinating is still true from its first term and it never
// reloaded the offsets - it serves its in-memory offset 10 to the group.
// The acknowledged commit of 20 is lost (consumers re-read 10..19), and
// A's next commits write over the Raft copy from its stale memory.
//
// What should happen: the coordinator's seat is tied to one Raft leader
// term (or leadership observation): a node that lost the seat reloads the
// offsets from Raft before it answers again, whatever its topics loop is
// doing; coordination follows leadership in its own loop (or the roles
// loop), never behind bucket I/O.
func TestReview9b_StaleCoordinatorServesLostOffsetCommit(t *testing.T) {
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	bucket := "minio://" + proxy.Addr + "/" + m.Bucket + "/tierlog?secure=false"
	c := startClusterEnv(t, 3, m.Env(), "--bucket", bucket)
	all := []int{1, 2, 3}
	adm := kadmFor(t, c)
	for _, name := range []string{"data", "doomed"} {
		resp, err := adm.CreateTopic(context.Background(), 1, 3, nil, name)
		if err != nil || resp.Err != nil {
			t.Fatalf("create topic %s: %v %v", name, err, resp.Err)
		}
	}
	const group = "g"
	review9bCommit(t, c, group, "data", 10)
	if got := review9bCommitted(t, c, group, "data"); got != 10 {
		t.Fatalf("committed offset %d, want 10", got)
	}

	var a int
	eventually(t, "a controller", func() error {
		if a = review9bController(t, c, all); a < 0 {
			return fmt.Errorf("no agreed controller")
		}
		return nil
	})
	t.Logf("controller: node %d", a)

	// The bucket stops answering the deleted topic's record writes: the
	// controller's topics loop waits in the deletion.
	held := proxy.Add(faultproxy.Rule{Method: "PUT", PathContains: "doomed.json", Fault: faultproxy.Hold})
	t.Cleanup(held.Release)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _ = review9bAdmin(t, c.kafkaAddrs()).DeleteTopics(ctx, "doomed")
	}()
	testutil.Eventually(t, 30*time.Second, func() bool { return held.Held() > 0 }, "the controller's tombstone PUT reached the bucket")

	// pause moves the controller seat off node id: it is stopped until
	// the others agree on another controller.
	pause := func(id int) int {
		others := slices.DeleteFunc(slices.Clone(all), func(n int) bool { return n == id })
		if err := c.node(id).cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		var next int
		eventually(t, fmt.Sprintf("a controller other than paused node %d", id), func() error {
			if next = review9bController(t, c, others); next < 0 || next == id {
				return fmt.Errorf("controller %d", next)
			}
			return nil
		})
		if err := c.node(id).cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		eventually(t, "every node agrees on the controller", func() error {
			if got := review9bController(t, c, all); got != next {
				return fmt.Errorf("controller %d, want %d", got, next)
			}
			return nil
		})
		return next
	}
	b := pause(a)
	t.Logf("controller moved from node %d to node %d", a, b)

	review9bCommit(t, c, group, "data", 20)
	if got := review9bCommitted(t, c, group, "data"); got != 20 {
		t.Fatalf("committed offset on the new controller %d: %d, want 20", b, got)
	}

	// Give the seat back to A: pause whoever holds it until A is elected.
	cur := b
	for i := 0; cur != a; i++ {
		if i == 10 {
			t.Fatalf("node %d never became the controller again", a)
		}
		cur = pause(cur)
	}
	t.Logf("node %d is the controller again (its topics loop still waits for the bucket: %d PUT(s) held)", a, held.Held())

	if got := review9bCommitted(t, c, group, "data"); got != 20 {
		t.Fatalf("group %q's committed offset of data/0 is %d after the controller seat went %d -> %d -> %d; the commit of 20 was acknowledged (and is in Raft): lost", group, got, a, b, a)
	}
}
