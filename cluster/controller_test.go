package cluster

import (
	"errors"
	"slices"
	"testing"
)

func TestAssignReplicasRoundRobin(t *testing.T) {
	got, err := AssignReplicas([]int32{3, 1, 2, 2}, 6, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	leads := map[int32]int{}
	for p, replicas := range got {
		if len(replicas) != 3 || len(slices.Compact(slices.Sorted(slices.Values(replicas)))) != 3 {
			t.Fatalf("partition %d: %v", p, replicas)
		}
		leads[replicas[0]]++
	}
	if !slices.Equal(got[0], []int32{1, 2, 3}) || !slices.Equal(got[1], []int32{2, 3, 1}) || !slices.Equal(got[2], []int32{3, 1, 2}) {
		t.Fatalf("assignment %v", got)
	}
	if leads[1] != 2 || leads[2] != 2 || leads[3] != 2 {
		t.Fatalf("preferred leaders not spread: %v", leads)
	}
	shifted, _ := AssignReplicas([]int32{1, 2, 3}, 1, 2, 4)
	if !slices.Equal(shifted[0], []int32{2, 3}) {
		t.Fatalf("start 4: %v", shifted)
	}
	if _, err := AssignReplicas([]int32{1, 2}, 1, 3, 0); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("rf above node count: %v", err)
	}
	if _, err := AssignReplicas([]int32{1}, 0, 1, 0); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("zero partitions: %v", err)
	}
}

func aliveSet(ids ...int32) func(int32) bool {
	return func(id int32) bool { return slices.Contains(ids, id) }
}

func TestElectLeader(t *testing.T) {
	p := Partition{Replicas: []int32{1, 2, 3}, Leader: 1, ISR: []int32{1, 3}}
	cases := []struct {
		name    string
		alive   func(int32) bool
		unclean bool
		leader  int32
		clean   bool
		err     error
	}{
		{"preferred replica alive", aliveSet(1, 2, 3), false, 1, true, nil},
		{"first alive in ISR, skipping out-of-sync 2", aliveSet(2, 3), false, 3, true, nil},
		{"only out-of-sync alive, clean", aliveSet(2), false, NoLeader, false, ErrNoEligibleLeader},
		{"only out-of-sync alive, unclean", aliveSet(2), true, 2, false, nil},
		{"none alive", aliveSet(), true, NoLeader, false, ErrNoEligibleLeader},
	}
	for _, c := range cases {
		leader, clean, err := ElectLeader(p, c.alive, c.unclean)
		if leader != c.leader || clean != c.clean || !errors.Is(err, c.err) {
			t.Errorf("%s: got %d %v %v, want %d %v %v", c.name, leader, clean, err, c.leader, c.clean, c.err)
		}
	}
}

func TestFailoverCommandsApply(t *testing.T) {
	s := threeNodes(t) // t/0 led by 1, t/1 led by 2
	mustApply(t, s, Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 1, LeaderEpoch: 0, Replicas: []int32{3}}})

	// Node 2 dies: t/1 moves to 1 (the only other ISR member); t/0 stays.
	cmds := Failover(s, aliveSet(1, 3), nil)
	if len(cmds) != 1 || cmds[0].SetLeader.Partition != 1 || cmds[0].SetLeader.Leader != 1 {
		t.Fatalf("failover %+v", cmds)
	}
	for _, c := range cmds {
		mustApply(t, s, c)
	}
	// Nodes 1 and 2 dead: t/0 moves to 3; t/1 (ISR 1,2) goes offline.
	cmds = Failover(s, aliveSet(3), nil)
	for _, c := range cmds {
		mustApply(t, s, c)
	}
	p0, _ := s.Partition("t", 0)
	p1, _ := s.Partition("t", 1)
	if p0.Leader != 3 || p0.LeaderEpoch != 1 || p1.Leader != NoLeader || p1.LeaderEpoch != 2 {
		t.Fatalf("after second failover: %+v %+v", p0, p1)
	}
	// Still offline: no more commands (no epoch bump for nothing) ...
	if cmds := Failover(s, aliveSet(3), nil); len(cmds) != 0 {
		t.Fatalf("offline partition re-elected: %+v", cmds)
	}
	// ... until an ISR member returns, or unclean election is on.
	if cmds := Failover(s, aliveSet(3), func(string) bool { return true }); len(cmds) != 1 || !cmds[0].SetLeader.Unclean || cmds[0].SetLeader.Leader != 3 {
		t.Fatalf("unclean failover %+v", cmds)
	}
	cmds = Failover(s, aliveSet(2, 3), nil)
	for _, c := range cmds {
		mustApply(t, s, c)
	}
	if p1, _ := s.Partition("t", 1); p1.Leader != 2 || p1.LeaderEpoch != 3 {
		t.Fatalf("back online: %+v", p1)
	}
}

func TestFailoverUncleanPerTopic(t *testing.T) {
	s := threeNodes(t)
	mustApply(t, s, Command{CreateTopic: &CreateTopic{Name: "u", ReplicationFactor: 3, Assignment: [][]int32{{1, 2, 3}}}})
	for _, name := range []string{"t", "u"} {
		mustApply(t, s, Command{ShrinkISR: &ChangeISR{Topic: name, Partition: 0, LeaderEpoch: 0, Replicas: []int32{2, 3}}})
	}
	// Node 1, the only in-sync replica of t/0 and u/0, dies; u allows unclean.
	cmds := Failover(s, aliveSet(2, 3), func(topic string) bool { return topic == "u" })
	if len(cmds) != 2 {
		t.Fatalf("failover %+v", cmds)
	}
	if c := cmds[0].SetLeader; c.Topic != "t" || c.Leader != NoLeader || c.Unclean {
		t.Fatalf("t/0: %+v", c)
	}
	if c := cmds[1].SetLeader; c.Topic != "u" || c.Leader != 2 || !c.Unclean {
		t.Fatalf("u/0: %+v", c)
	}
}

func TestShrinkDeadKeepsLeaderAndSkipsOffline(t *testing.T) {
	s := threeNodes(t) // "t": partition 0 led by 1, partition 1 by 2
	// Node 3 is dead: it leaves both ISRs. A dead leader's partition is
	// Failover's, not ShrinkDead's.
	cmds := ShrinkDead(s, aliveSet(1, 2))
	if len(cmds) != 2 {
		t.Fatalf("commands %+v, want one shrink per partition", cmds)
	}
	for _, c := range cmds {
		if c.ShrinkISR == nil || len(c.ShrinkISR.Replicas) != 1 || c.ShrinkISR.Replicas[0] != 3 {
			t.Fatalf("command %+v, want node 3 out", c)
		}
		mustApply(t, s, c)
	}
	if got := s.Topics["t"].Partitions[0].ISR; len(got) != 2 {
		t.Fatalf("ISR %v after shrink", got)
	}
	if cmds := ShrinkDead(s, aliveSet(2)); len(cmds) != 1 || cmds[0].ShrinkISR.Partition != 1 {
		t.Fatalf("leader 1 dead: partition 0 is Failover's; got %+v", cmds)
	}
	if cmds := ShrinkDead(s, aliveSet(1, 2)); len(cmds) != 0 {
		t.Fatalf("nothing left to shrink, got %+v", cmds)
	}
}
