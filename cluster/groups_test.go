package cluster

import (
	"reflect"
	"testing"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestGroupOffsetsReplicatedSnapshottedAndDroppedWithTopic: committed
// offsets reach every node, deletions remove them, a lagging node gets
// them by snapshot, and deleting a topic drops its offsets.
func TestGroupOffsetsReplicatedSnapshottedAndDroppedWithTopic(t *testing.T) {
	c := newCluster(t, 3, func(o *Options) { o.TrailingLogs = 1; o.SnapshotThreshold = 1 << 20 })
	c.registerAndCreate("t")
	c.converged()
	var lag int32
	for id, n := range c.nodes {
		if !n.IsLeader() {
			lag = id
		}
	}
	c.stop(lag)
	c.mustApply(Command{CommitGroupOffsets: &CommitGroupOffsets{Offsets: []GroupOffset{
		{Group: "g", Topic: "t", Partition: 0, Offset: 10, LeaderEpoch: 1, Metadata: "m", CommitMs: 5},
		{Group: "g", Topic: "t", Partition: 1, Offset: 20, CommitMs: 5},
		{Group: "h", Topic: "t", Partition: 0, Offset: 7, CommitMs: 6},
	}}})
	c.mustApply(Command{CommitGroupOffsets: &CommitGroupOffsets{Offsets: []GroupOffset{
		{Group: "g", Topic: "t", Partition: 1, Offset: -1},
		{Group: "g", Topic: "t", Partition: 0, Offset: 11, LeaderEpoch: 1, CommitMs: 9},
	}}})
	want := []GroupOffset{
		{Group: "g", Topic: "t", Partition: 0, Offset: 11, LeaderEpoch: 1, CommitMs: 9},
		{Group: "h", Topic: "t", Partition: 0, Offset: 7, CommitMs: 6},
	}
	if got := c.leader().GroupOffsets(); !reflect.DeepEqual(got, want) {
		t.Fatalf("leader offsets %+v, want %+v", got, want)
	}
	if err := c.leader().Snapshot(); err != nil {
		t.Fatal(err)
	}
	n := c.start(lag) // catches up by snapshot (trailing logs 1)
	testutil.Eventually(t, wait, func() bool { return reflect.DeepEqual(n.GroupOffsets(), want) }, "lagging node did not get the offsets")
	if err := n.Apply(t.Context(), Command{CommitGroupOffsets: &CommitGroupOffsets{Offsets: []GroupOffset{{Group: "", Topic: "t"}}}}); err == nil {
		t.Fatal("a commit without a group was accepted (or applied on a follower)")
	}
	c.mustApply(Command{DeleteTopic: &DeleteTopic{Name: "t"}})
	testutil.Eventually(t, wait, func() bool { return len(n.GroupOffsets()) == 0 }, "offsets of a deleted topic kept")
}
