package cluster

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// commandVersion is the version of the command encoding this code writes
// and applies. A node refuses (does not half-apply) entries of another
// version, so a mixed-version cluster fails loudly, the same on every node.
const commandVersion = 1

// Command is one change to the cluster state: exactly one field is set. It
// is encoded as JSON in the Raft log: {"v":1,"create_topic":{...}}.
type Command struct {
	SetClusterID       *SetClusterID       `json:"set_cluster_id,omitempty"`
	SetRaftID          *SetRaftID          `json:"set_raft_id,omitempty"`
	CommitGroupOffsets *CommitGroupOffsets `json:"commit_group_offsets,omitempty"`
	RegisterNode       *RegisterNode       `json:"register_node,omitempty"`
	CreateTopic        *CreateTopic        `json:"create_topic,omitempty"`
	DeleteTopic        *DeleteTopic        `json:"delete_topic,omitempty"`
	AlterTopicConfig   *AlterTopicConfig   `json:"alter_topic_config,omitempty"`
	AddPartitions      *AddPartitions      `json:"add_partitions,omitempty"`
	SetLeader          *SetLeader          `json:"set_leader,omitempty"`
	ShrinkISR          *ChangeISR          `json:"shrink_isr,omitempty"`
	ExpandISR          *ChangeISR          `json:"expand_isr,omitempty"`
	SetRemoteLogStart  *SetRemoteLogStart  `json:"set_remote_log_start,omitempty"`
	// RetireNode is a request to the controller, never a Raft log entry:
	// Controller.Propose on the Raft leader carries it out (see
	// Controller.Retire); State.Apply refuses it.
	RetireNode *RetireNode `json:"retire_node,omitempty"`
}

// SetClusterID names the cluster, once: a second SetClusterID with another
// id is refused (ErrInvalidCommand), one with the same id is a no-op.
type SetClusterID struct {
	ID string `json:"id"`
}

// SetRaftID names the Raft group, once (State.RaftID): a second one with
// another id is refused (ErrInvalidCommand), one with the same id is a
// no-op.
type SetRaftID struct {
	ID string `json:"id"`
}

// RegisterNode adds a node or updates its addresses.
type RegisterNode struct {
	Node NodeInfo `json:"node"`
}

// CreateTopic creates a topic with an assignment computed by the caller (the
// controller, see AssignReplicas): one replica list per partition. Each
// partition starts with its first replica as leader at epoch 0 and all
// replicas in sync (they are all empty).
type CreateTopic struct {
	Name              string            `json:"name"`
	ID                string            `json:"id,omitempty"`
	ReplicationFactor int               `json:"replication_factor"`
	Config            map[string]string `json:"config,omitempty"`
	Assignment        [][]int32         `json:"assignment"`
	// Partitions asks the controller to assign: a CreateTopic with no
	// Assignment sent to Controller.Propose gets this many partitions
	// assigned on the Raft leader, over the nodes it sees alive. The Raft
	// log only ever holds the assignment.
	Partitions int32 `json:"partitions,omitempty"`
}

// DeleteTopic removes a topic and its partitions' metadata.
type DeleteTopic struct {
	Name string `json:"name"`
}

// AlterTopicConfig sets and deletes config keys (Kafka's incremental
// alter); keys in both are set.
type AlterTopicConfig struct {
	Name   string            `json:"name"`
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// AddPartitions appends partitions, with their assignment, to a topic.
type AddPartitions struct {
	Name       string    `json:"name"`
	Assignment [][]int32 `json:"assignment"`
	// Total asks the controller to assign (like CreateTopic.Partitions): an
	// AddPartitions with no Assignment sent to Controller.Propose grows the
	// topic to Total partitions, counted on the Raft leader.
	Total int32 `json:"total,omitempty"`
}

// RetireNode asks the controller to move leadership of every partition
// node ID leads to another alive in-sync replica and to take the node for
// dead until it heartbeats again (a controlled shutdown).
type RetireNode struct {
	ID int32 `json:"id"`
}

// SetLeader makes Leader the partition's leader at epoch LeaderEpoch+1.
// LeaderEpoch is the epoch the caller decided on; if the partition has moved
// on, the command is refused with ErrStaleEpoch. Leader must be in the ISR
// unless Unclean, in which case the ISR becomes just the new leader (its log
// is the truth from now on). Leader may be NoLeader (the partition is
// offline); the ISR is then kept, so a member can lead once it is back.
type SetLeader struct {
	Topic       string `json:"topic"`
	Partition   int32  `json:"partition"`
	LeaderEpoch int32  `json:"leader_epoch"`
	Leader      int32  `json:"leader"`
	Unclean     bool   `json:"unclean,omitempty"`
}

// ChangeISR removes (ShrinkISR) or adds (ExpandISR) replicas to a
// partition's in-sync set. LeaderEpoch is the epoch the change was decided
// in; a change from a deposed leader is refused with ErrStaleEpoch. The
// leader cannot be removed.
type ChangeISR struct {
	Topic       string  `json:"topic"`
	Partition   int32   `json:"partition"`
	LeaderEpoch int32   `json:"leader_epoch"`
	Replicas    []int32 `json:"replicas"`
}

// SetRemoteLogStart records the first offset the bucket still holds, as the
// partition's leader of LeaderEpoch deletes remote segments.
type SetRemoteLogStart struct {
	Topic       string `json:"topic"`
	Partition   int32  `json:"partition"`
	LeaderEpoch int32  `json:"leader_epoch"`
	Offset      int64  `json:"offset"`
}

// envelope is the encoded form: the version beside the union.
type envelope struct {
	V int `json:"v"`
	Command
}

// Encode returns the command's log entry.
func (c Command) Encode() ([]byte, error) {
	if c.count() != 1 {
		return nil, fmt.Errorf("%w: %d kinds set, want 1", ErrInvalidCommand, c.count())
	}
	return json.Marshal(envelope{V: commandVersion, Command: c})
}

// DecodeCommand parses a log entry written by Encode.
func DecodeCommand(b []byte) (Command, error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrUnknownCommand, err)
	}
	if e.V != commandVersion {
		return Command{}, fmt.Errorf("%w: version %d", ErrUnknownCommand, e.V)
	}
	if e.count() != 1 {
		return Command{}, fmt.Errorf("%w: %d kinds set", ErrUnknownCommand, e.count())
	}
	return e.Command, nil
}

func (c Command) count() int {
	n := 0
	for _, set := range []bool{c.SetClusterID != nil, c.SetRaftID != nil, c.CommitGroupOffsets != nil, c.RegisterNode != nil, c.CreateTopic != nil, c.DeleteTopic != nil,
		c.AlterTopicConfig != nil, c.AddPartitions != nil, c.SetLeader != nil, c.ShrinkISR != nil,
		c.ExpandISR != nil, c.SetRemoteLogStart != nil, c.RetireNode != nil} {
		if set {
			n++
		}
	}
	return n
}

// Apply applies c to s. It validates everything before it changes anything,
// so a refused command leaves s as it was; it depends on nothing but s and
// c, so every node computes the same result.
func (s *State) Apply(c Command) error {
	switch {
	case c.SetClusterID != nil:
		switch id := c.SetClusterID.ID; {
		case id == "":
			return fmt.Errorf("%w: empty cluster id", ErrInvalidCommand)
		case s.ClusterID != "" && s.ClusterID != id:
			return fmt.Errorf("%w: the cluster is %s already, not %s", ErrInvalidCommand, s.ClusterID, id)
		}
		s.ClusterID = c.SetClusterID.ID
		return nil
	case c.SetRaftID != nil:
		switch id := c.SetRaftID.ID; {
		case id == "":
			return fmt.Errorf("%w: empty raft id", ErrInvalidCommand)
		case s.RaftID != "" && s.RaftID != id:
			return fmt.Errorf("%w: the raft group is %s already, not %s", ErrInvalidCommand, s.RaftID, id)
		}
		s.RaftID = c.SetRaftID.ID
		return nil
	case c.RegisterNode != nil:
		return s.registerNode(c.RegisterNode)
	case c.CreateTopic != nil:
		return s.createTopic(c.CreateTopic)
	case c.DeleteTopic != nil:
		if _, ok := s.Topics[c.DeleteTopic.Name]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownTopic, c.DeleteTopic.Name)
		}
		delete(s.Topics, c.DeleteTopic.Name)
		return nil
	case c.AlterTopicConfig != nil:
		return s.alterTopicConfig(c.AlterTopicConfig)
	case c.AddPartitions != nil:
		return s.addPartitions(c.AddPartitions)
	case c.SetLeader != nil:
		return s.setLeader(c.SetLeader)
	case c.ShrinkISR != nil:
		return s.changeISR(c.ShrinkISR, false)
	case c.ExpandISR != nil:
		return s.changeISR(c.ExpandISR, true)
	case c.SetRemoteLogStart != nil:
		return s.setRemoteLogStart(c.SetRemoteLogStart)
	case c.RetireNode != nil:
		return fmt.Errorf("%w: retire_node is a request to the controller, not a state change", ErrInvalidCommand)
	}
	return fmt.Errorf("%w: no kind set", ErrUnknownCommand)
}

func (s *State) registerNode(c *RegisterNode) error {
	if c.Node.ID < 0 || c.Node.RaftAddr == "" {
		return fmt.Errorf("%w: node needs an id >= 0 and a raft address", ErrInvalidCommand)
	}
	s.Nodes[c.Node.ID] = c.Node
	return nil
}

func (s *State) createTopic(c *CreateTopic) error {
	if c.Name == "" {
		return fmt.Errorf("%w: empty topic name", ErrInvalidCommand)
	}
	if _, ok := s.Topics[c.Name]; ok {
		return fmt.Errorf("%w: %q", ErrTopicExists, c.Name)
	}
	if len(c.Assignment) == 0 {
		return fmt.Errorf("%w: no partitions", ErrInvalidCommand)
	}
	parts, err := s.newPartitions(c.Assignment, c.ReplicationFactor)
	if err != nil {
		return err
	}
	s.Topics[c.Name] = &Topic{Name: c.Name, ID: c.ID, ReplicationFactor: c.ReplicationFactor,
		Config: maps.Clone(c.Config), Partitions: parts}
	return nil
}

// newPartitions checks an assignment and builds its partitions: leader the
// first replica, epoch 0, all in sync.
func (s *State) newPartitions(assignment [][]int32, rf int) ([]Partition, error) {
	parts := make([]Partition, len(assignment))
	for i, replicas := range assignment {
		if err := s.checkReplicas(replicas, rf); err != nil {
			return nil, fmt.Errorf("partition %d: %w", i, err)
		}
		parts[i] = Partition{Replicas: slices.Clone(replicas), Leader: replicas[0], ISR: slices.Clone(replicas)}
	}
	return parts, nil
}

func (s *State) alterTopicConfig(c *AlterTopicConfig) error {
	t, ok := s.Topics[c.Name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Name)
	}
	for _, k := range c.Delete {
		delete(t.Config, k)
	}
	if len(c.Set) > 0 && t.Config == nil {
		t.Config = make(map[string]string, len(c.Set))
	}
	for k, v := range c.Set {
		t.Config[k] = v
	}
	return nil
}

func (s *State) addPartitions(c *AddPartitions) error {
	t, ok := s.Topics[c.Name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Name)
	}
	if len(c.Assignment) == 0 {
		return fmt.Errorf("%w: no partitions to add", ErrInvalidCommand)
	}
	parts, err := s.newPartitions(c.Assignment, t.ReplicationFactor)
	if err != nil {
		return err
	}
	t.Partitions = append(t.Partitions, parts...)
	return nil
}

// current finds a partition and refuses a command made for another epoch.
func (s *State) current(topic string, partition, epoch int32) (*Partition, error) {
	p, err := s.partition(topic, partition)
	if err != nil {
		return nil, err
	}
	if epoch != p.LeaderEpoch {
		return nil, fmt.Errorf("%w: %s/%d is at epoch %d, command for %d", ErrStaleEpoch, topic, partition, p.LeaderEpoch, epoch)
	}
	return p, nil
}

func (s *State) setLeader(c *SetLeader) error {
	p, err := s.current(c.Topic, c.Partition, c.LeaderEpoch)
	if err != nil {
		return err
	}
	isr := p.ISR
	if c.Leader != NoLeader {
		if !slices.Contains(p.Replicas, c.Leader) {
			return fmt.Errorf("%w: %d for %s/%d", ErrNotReplica, c.Leader, c.Topic, c.Partition)
		}
		if !slices.Contains(p.ISR, c.Leader) {
			if !c.Unclean {
				return fmt.Errorf("%w: %d for %s/%d (unclean election is off)", ErrNotInISR, c.Leader, c.Topic, c.Partition)
			}
			isr = []int32{c.Leader}
		}
	}
	p.Leader, p.ISR = c.Leader, isr
	p.LeaderEpoch++
	return nil
}

func (s *State) changeISR(c *ChangeISR, expand bool) error {
	p, err := s.current(c.Topic, c.Partition, c.LeaderEpoch)
	if err != nil {
		return err
	}
	if len(c.Replicas) == 0 {
		return fmt.Errorf("%w: no replicas named", ErrInvalidCommand)
	}
	for _, r := range c.Replicas {
		if !slices.Contains(p.Replicas, r) {
			return fmt.Errorf("%w: %d for %s/%d", ErrNotReplica, r, c.Topic, c.Partition)
		}
		if !expand && r == p.Leader {
			return fmt.Errorf("%w: the leader %d cannot leave the ISR of %s/%d", ErrNotInISR, r, c.Topic, c.Partition)
		}
	}
	// Rebuild in assignment order so every node holds the same slice.
	isr := make([]int32, 0, len(p.Replicas))
	for _, r := range p.Replicas {
		in := slices.Contains(p.ISR, r)
		named := slices.Contains(c.Replicas, r)
		if (expand && (in || named)) || (!expand && in && !named) {
			isr = append(isr, r)
		}
	}
	p.ISR = isr
	return nil
}

func (s *State) setRemoteLogStart(c *SetRemoteLogStart) error {
	p, err := s.current(c.Topic, c.Partition, c.LeaderEpoch)
	if err != nil {
		return err
	}
	if c.Offset < p.RemoteLogStart {
		return fmt.Errorf("%w: %d < %d for %s/%d", ErrOffsetBackwards, c.Offset, p.RemoteLogStart, c.Topic, c.Partition)
	}
	p.RemoteLogStart = c.Offset
	return nil
}
