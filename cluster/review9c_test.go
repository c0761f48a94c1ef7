package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestReview9c_RestartedFlagStuckOnOtherControllersShrinksISROnTakeover:
// every node's controller takes every node's heartbeats, so every one of
// them marks a restarted node (Heartbeat: restarted[id] = true), but only
// the Raft leader's evaluate ever clears the mark (readmitRestarted). On
// the other nodes it stays set for good: their Alive() leaves the node out
// (waitOthers does not wait for it), and when one of them takes over the
// controller seat - long after the node was readmitted and is back in
// sync - it takes that healthy node for dead: ShrinkDead drops it from the
// ISR of every partition with an alive leader (and Failover moves its
// leaderships away, or takes a partition offline when the other ISR member
// is the dead controller).
//
// What should happen: the restart mark is the current controller's
// business only - a controller that is not the Raft leader does not keep
// it (or drops it on takeover and judges the node by its last beat, or
// the readmission is visible to all), so a takeover leaves a readmitted,
// in-sync replica in the ISR.
func TestReview9c_RestartedFlagStuckOnOtherControllersShrinksISROnTakeover(t *testing.T) {
	c := newCtlCluster(t, time.Minute, nil) // no session ends: only the restart mark can make a node dead
	c.registered()
	leader, rest := c.others()
	if err := c.ctl(leader).CreateTopic(context.Background(), "t", "", 3, 3, nil); err != nil {
		t.Fatal(err)
	}
	// Both other nodes restart (either may take the seat later; each one's
	// controller marks the other). The controller moves them out of every
	// ISR and leadership and readmits them.
	c.restart(rest[0])
	c.restart(rest[1])
	testutil.Eventually(t, wait, func() bool {
		for i := range int32(3) {
			p := c.part("t", i)
			if p.Leader != leader || len(p.ISR) != 1 {
				return false
			}
		}
		alive := c.ctl(c.leader().opts.ID).Alive()
		_, ok0 := alive[rest[0]]
		_, ok1 := alive[rest[1]]
		return ok0 && ok1
	}, "restarted nodes %v never left the ISRs and came back alive on the controller", rest)

	// They catch up: their partition leader takes them back into the ISR
	// (as broker/leader.go proposes), and each partition goes back to its
	// preferred leader.
	for i := range int32(3) {
		p := c.part("t", i)
		if err := c.propose(leader, Command{ExpandISR: &ChangeISR{Topic: "t", Partition: i, LeaderEpoch: p.LeaderEpoch, Replicas: rest}}); err != nil {
			t.Fatal(err)
		}
		if p.Replicas[0] != leader {
			if err := c.propose(leader, Command{SetLeader: &SetLeader{Topic: "t", Partition: i, LeaderEpoch: p.LeaderEpoch, Leader: p.Replicas[0]}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := map[int32]Partition{}
	for i := range int32(3) {
		p := c.part("t", i)
		if len(p.ISR) != 3 || p.Leader != p.Replicas[0] {
			t.Fatalf("t/%d: %+v, want all in sync under the preferred leader", i, p)
		}
		before[i] = p
	}
	for _, id := range rest {
		for _, other := range rest {
			if _, ok := c.ctl(id).Alive()[other]; id != other && !ok {
				t.Logf("node %d's controller (not the leader) still counts the readmitted node %d as not alive", id, other)
			}
		}
	}

	// The controller dies; one of the others takes the seat.
	c.kill(leader)
	heir := c.leader().opts.ID
	other := rest[0]
	if other == heir {
		other = rest[1]
	}
	testutil.Eventually(t, wait, func() bool { return c.metric(heir, "tierlog_cluster_is_controller", "") == 1 },
		"node %d never became the controller", heir)
	testutil.Eventually(t, wait, func() bool { _, ok := c.ctl(heir).Alive()[other]; return ok },
		"new controller %d never counts the healthy node %d as alive", heir, other)
	for i := range int32(3) {
		p, was := c.part("t", i), before[i]
		if p.Leader != was.Leader {
			t.Errorf("t/%d: leader moved from %d to %d (epoch %d) on the takeover; nobody died but the controller %d", i, was.Leader, p.Leader, p.LeaderEpoch, leader)
		}
		if p.Leader == heir && !slices.Contains(p.ISR, other) {
			t.Errorf("t/%d (leader %d): the new controller took the readmitted, in-sync node %d out of the ISR (now %v): its restart mark from long ago was still set", i, p.Leader, other, p.ISR)
		}
	}
}
