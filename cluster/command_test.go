package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// threeNodes is a state with nodes 1..3 and topic "t" (2 partitions, RF 3).
func threeNodes(t *testing.T) *State {
	t.Helper()
	s := NewState()
	for id := int32(1); id <= 3; id++ {
		mustApply(t, s, Command{RegisterNode: &RegisterNode{Node: NodeInfo{ID: id, RaftAddr: "127.0.0.1:1"}}})
	}
	mustApply(t, s, Command{CreateTopic: &CreateTopic{Name: "t", ReplicationFactor: 3,
		Config: map[string]string{"retention.ms": "1000"}, Assignment: [][]int32{{1, 2, 3}, {2, 3, 1}}}})
	return s
}

// mustApply applies c through the encoding, as the FSM does, and checks the
// invariants afterwards.
func mustApply(t *testing.T, s *State, c Command) {
	t.Helper()
	if err := applyEncoded(s, c); err != nil {
		t.Fatalf("apply %+v: %v", c, err)
	}
}

func applyEncoded(s *State, c Command) error {
	b, err := c.Encode()
	if err != nil {
		return err
	}
	d, err := DecodeCommand(b)
	if err != nil {
		return err
	}
	if err := s.Apply(d); err != nil {
		return err
	}
	return s.Check()
}

// refused checks that c is refused with want and leaves s unchanged.
func refused(t *testing.T, s *State, c Command, want error) {
	t.Helper()
	before := s.Clone()
	err := applyEncoded(s, c)
	if !errors.Is(err, want) {
		t.Fatalf("apply %+v: got %v, want %v", c, err, want)
	}
	if !reflect.DeepEqual(before, s) {
		t.Fatalf("refused command changed the state:\nbefore %+v\nafter  %+v", before, s)
	}
}

func TestCreateTopicStartsWithFirstReplicaLeadingAllInSync(t *testing.T) {
	s := threeNodes(t)
	p, err := s.Partition("t", 1)
	if err != nil {
		t.Fatal(err)
	}
	if p.Leader != 2 || p.LeaderEpoch != 0 || !slices.Equal(p.ISR, []int32{2, 3, 1}) || !slices.Equal(p.Replicas, []int32{2, 3, 1}) {
		t.Fatalf("partition 1 = %+v", p)
	}
	refused(t, s, Command{CreateTopic: &CreateTopic{Name: "t", ReplicationFactor: 1, Assignment: [][]int32{{1}}}}, ErrTopicExists)
	refused(t, s, Command{CreateTopic: &CreateTopic{Name: "u", ReplicationFactor: 2, Assignment: [][]int32{{1, 9}}}}, ErrUnknownNode)
	refused(t, s, Command{CreateTopic: &CreateTopic{Name: "u", ReplicationFactor: 2, Assignment: [][]int32{{1, 1}}}}, ErrInvalidCommand)
	refused(t, s, Command{CreateTopic: &CreateTopic{Name: "u", ReplicationFactor: 3, Assignment: [][]int32{{1, 2, 3}, {1, 2}}}}, ErrInvalidCommand)
	refused(t, s, Command{CreateTopic: &CreateTopic{Name: "u", ReplicationFactor: 1}}, ErrInvalidCommand)
	refused(t, s, Command{CreateTopic: &CreateTopic{Name: "", ReplicationFactor: 1, Assignment: [][]int32{{1}}}}, ErrInvalidCommand)
}

func TestSetLeaderFromISRBumpsEpoch(t *testing.T) {
	s := threeNodes(t)
	mustApply(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: 0, Leader: 2}})
	p, _ := s.Partition("t", 0)
	if p.Leader != 2 || p.LeaderEpoch != 1 || len(p.ISR) != 3 {
		t.Fatalf("after election: %+v", p)
	}
	// A second election decided on the old epoch (a race) is refused.
	refused(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: 0, Leader: 3}}, ErrStaleEpoch)
	refused(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: 1, Leader: 9}}, ErrNotReplica)
	refused(t, s, Command{SetLeader: &SetLeader{Topic: "x", Partition: 0, LeaderEpoch: 1, Leader: 1}}, ErrUnknownTopic)
	refused(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 2, LeaderEpoch: 1, Leader: 1}}, ErrUnknownPartition)
}

func TestLeaderOutsideISRRefusedUnlessUnclean(t *testing.T) {
	s := threeNodes(t)
	mustApply(t, s, Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 0, Replicas: []int32{3}}})
	refused(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: 0, Leader: 3}}, ErrNotInISR)

	// The partition goes offline (epoch still grows, ISR kept) ...
	mustApply(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: 0, Leader: NoLeader}})
	p, _ := s.Partition("t", 0)
	if p.Leader != NoLeader || p.LeaderEpoch != 1 || !slices.Equal(p.ISR, []int32{1, 2}) {
		t.Fatalf("offline: %+v", p)
	}
	// ... and an unclean election makes the out-of-sync replica the only
	// in-sync one.
	mustApply(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: 1, Leader: 3, Unclean: true}})
	p, _ = s.Partition("t", 0)
	if p.Leader != 3 || p.LeaderEpoch != 2 || !slices.Equal(p.ISR, []int32{3}) {
		t.Fatalf("unclean: %+v", p)
	}
}

func TestISRChangesCheckEpochAndKeepLeader(t *testing.T) {
	s := threeNodes(t)
	mustApply(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 0, LeaderEpoch: 0, Leader: 2}})
	// A change made by the deposed leader in epoch 0 is refused.
	refused(t, s, Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 0, Replicas: []int32{3}}}, ErrStaleEpoch)
	refused(t, s, Command{ExpandISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 0, Replicas: []int32{3}}}, ErrStaleEpoch)
	refused(t, s, Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 1, Replicas: []int32{2}}}, ErrNotInISR)
	refused(t, s, Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 1, Replicas: []int32{7}}}, ErrNotReplica)
	refused(t, s, Command{ExpandISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 1}}, ErrInvalidCommand)

	mustApply(t, s, Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 1, Replicas: []int32{1, 3}}})
	if p, _ := s.Partition("t", 0); !slices.Equal(p.ISR, []int32{2}) {
		t.Fatalf("after shrink: %+v", p)
	}
	// Expansion keeps assignment order whatever order it names replicas in.
	mustApply(t, s, Command{ExpandISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 1, Replicas: []int32{3, 1}}})
	if p, _ := s.Partition("t", 0); !slices.Equal(p.ISR, []int32{1, 2, 3}) || p.LeaderEpoch != 1 {
		t.Fatalf("after expand: %+v", p)
	}
}

func TestRemoteLogStartOnlyForwardAndFromCurrentEpoch(t *testing.T) {
	s := threeNodes(t)
	mustApply(t, s, Command{SetRemoteLogStart: &SetRemoteLogStart{Topic: "t", Partition: 1, LeaderEpoch: 0, Offset: 100}})
	refused(t, s, Command{SetRemoteLogStart: &SetRemoteLogStart{Topic: "t", Partition: 1, LeaderEpoch: 0, Offset: 99}}, ErrOffsetBackwards)
	mustApply(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 1, LeaderEpoch: 0, Leader: 3}})
	refused(t, s, Command{SetRemoteLogStart: &SetRemoteLogStart{Topic: "t", Partition: 1, LeaderEpoch: 0, Offset: 200}}, ErrStaleEpoch)
	mustApply(t, s, Command{SetRemoteLogStart: &SetRemoteLogStart{Topic: "t", Partition: 1, LeaderEpoch: 1, Offset: 200}})
	if p, _ := s.Partition("t", 1); p.RemoteLogStart != 200 {
		t.Fatalf("remote log start %d", p.RemoteLogStart)
	}
}

func TestTopicConfigPartitionsAndDelete(t *testing.T) {
	s := threeNodes(t)
	mustApply(t, s, Command{AlterTopicConfig: &AlterTopicConfig{Name: "t", Set: map[string]string{"min.insync.replicas": "2"}, Delete: []string{"retention.ms"}}})
	if got := s.Topics["t"].Config; !reflect.DeepEqual(got, map[string]string{"min.insync.replicas": "2"}) {
		t.Fatalf("config %v", got)
	}
	mustApply(t, s, Command{AddPartitions: &AddPartitions{Name: "t", Assignment: [][]int32{{3, 1, 2}}}})
	if p, err := s.Partition("t", 2); err != nil || p.Leader != 3 || p.LeaderEpoch != 0 {
		t.Fatalf("added partition %+v %v", p, err)
	}
	refused(t, s, Command{AddPartitions: &AddPartitions{Name: "t", Assignment: [][]int32{{3, 1}}}}, ErrInvalidCommand)
	refused(t, s, Command{AlterTopicConfig: &AlterTopicConfig{Name: "x"}}, ErrUnknownTopic)
	mustApply(t, s, Command{DeleteTopic: &DeleteTopic{Name: "t"}})
	refused(t, s, Command{DeleteTopic: &DeleteTopic{Name: "t"}}, ErrUnknownTopic)
	if len(s.Topics) != 0 {
		t.Fatalf("topics left: %v", s.Topics)
	}
}

func TestEncodingRefusesOtherVersionsAndUnions(t *testing.T) {
	if _, err := (Command{}).Encode(); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("empty command encoded: %v", err)
	}
	two := Command{DeleteTopic: &DeleteTopic{Name: "a"}, SetLeader: &SetLeader{}}
	if _, err := two.Encode(); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("two kinds encoded: %v", err)
	}
	for _, raw := range []string{
		`{"v":2,"delete_topic":{"name":"a"}}`,
		`{"v":1}`,
		`{"v":1,"delete_topic":{"name":"a"},"set_leader":{}}`,
		`not json`,
	} {
		if _, err := DecodeCommand([]byte(raw)); !errors.Is(err, ErrUnknownCommand) {
			t.Errorf("%s decoded: %v", raw, err)
		}
	}
}

func TestLeaderChanges(t *testing.T) {
	s := threeNodes(t)
	old := s.Clone()
	mustApply(t, s, Command{SetLeader: &SetLeader{Topic: "t", Partition: 1, LeaderEpoch: 0, Leader: 3}})
	mustApply(t, s, Command{ShrinkISR: &ChangeISR{Topic: "t", Partition: 0, LeaderEpoch: 0, Replicas: []int32{2}}}) // no leadership change
	mustApply(t, s, Command{CreateTopic: &CreateTopic{Name: "a", ReplicationFactor: 1, Assignment: [][]int32{{1}}}})
	got := LeaderChanges(old, s)
	if len(got) != 2 || got[0].Topic != "a" || got[0].Old != nil || got[0].New.Leader != 1 ||
		got[1].Topic != "t" || got[1].Partition != 1 || got[1].Old.Leader != 2 || got[1].New.Leader != 3 {
		t.Fatalf("changes %+v", got)
	}
	mid := s.Clone()
	mustApply(t, s, Command{DeleteTopic: &DeleteTopic{Name: "a"}})
	if got := LeaderChanges(mid, s); len(got) != 1 || got[0].New != nil || got[0].Old == nil {
		t.Fatalf("delete changes %+v", got)
	}
}

// Requests only the controller carries out never change the state, should
// one reach the FSM: an unassigned CreateTopic or AddPartitions, a
// RetireNode.
func TestControllerRequestsRefusedByTheFSM(t *testing.T) {
	s := threeNodes(t)
	refused(t, s, Command{CreateTopic: &CreateTopic{Name: "u", ReplicationFactor: 1, Partitions: 3}}, ErrInvalidCommand)
	refused(t, s, Command{AddPartitions: &AddPartitions{Name: "t", Total: 5}}, ErrInvalidCommand)
	refused(t, s, Command{RetireNode: &RetireNode{ID: 1}}, ErrInvalidCommand)
}

func TestParseRefusal(t *testing.T) {
	for _, want := range refusals {
		err := ParseRefusal(fmt.Errorf("retire node 3: t/0: %w: at epoch 4", want).Error())
		if !errors.Is(err, want) || !strings.Contains(err.Error(), "retire node 3: t/0: "+want.Error()) {
			t.Errorf("%v: parsed as %v", want, err)
		}
	}
	// The first sentinel named wins: the outer one of a wrapped error.
	if err := ParseRefusal(fmt.Errorf("%w: for %w", ErrNoEligibleLeader, ErrUnknownTopic).Error()); !errors.Is(err, ErrNoEligibleLeader) || errors.Is(err, ErrUnknownTopic) {
		t.Errorf("two sentinels: %v", err)
	}
	if err := ParseRefusal("disk on fire"); err == nil || err.Error() != "disk on fire" || errors.Is(err, ErrInvalidCommand) {
		t.Errorf("plain: %v", err)
	}
}

// TestNodeInfoSameAddresses: a node's registration check ignores the
// incarnation the controller admitted, and nothing else.
func TestNodeInfoSameAddresses(t *testing.T) {
	self := NodeInfo{ID: 1, RaftAddr: "r:1", GRPCAddr: "g:1", KafkaAddr: "k:1"}
	admitted := self
	admitted.Incarnation = 42
	if !admitted.SameAddresses(self) || !self.SameAddresses(admitted) {
		t.Errorf("%+v and %+v differ only in the incarnation", admitted, self)
	}
	for _, other := range []NodeInfo{
		{ID: 2, RaftAddr: "r:1", GRPCAddr: "g:1", KafkaAddr: "k:1"},
		{ID: 1, RaftAddr: "r:2", GRPCAddr: "g:1", KafkaAddr: "k:1"},
		{ID: 1, RaftAddr: "r:1", GRPCAddr: "g:2", KafkaAddr: "k:1"},
		{ID: 1, RaftAddr: "r:1", GRPCAddr: "g:1", KafkaAddr: "k:2"},
	} {
		if admitted.SameAddresses(other) {
			t.Errorf("%+v and %+v: same addresses", admitted, other)
		}
	}
}
