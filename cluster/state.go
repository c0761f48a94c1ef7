package cluster

import (
	"fmt"
	"maps"
	"slices"
)

// NoLeader is a partition's leader while none of its replicas may lead
// (every in-sync replica is down and unclean election is off).
const NoLeader int32 = -1

// NodeInfo is a registered node and the addresses it serves on. Liveness
// (heartbeats) is not part of the replicated state: it is the controller's
// in-memory view, so a heartbeat never costs a Raft write.
type NodeInfo struct {
	ID        int32  `json:"id"`
	RaftAddr  string `json:"raft_addr"`
	GRPCAddr  string `json:"grpc_addr,omitempty"`
	KafkaAddr string `json:"kafka_addr,omitempty"`
	// Incarnation is the node's process incarnation the controller last
	// admitted (0: not recorded). A node whose heartbeats carry another
	// one restarted since: it leads nothing and is in no ISR until the
	// controller admits the new one (cluster/controller_loop.go).
	Incarnation uint64 `json:"incarnation,omitempty"`
}

// SameAddresses reports whether o is the same node at the same addresses,
// whatever incarnation either records: what a node's own registration
// check compares.
func (n NodeInfo) SameAddresses(o NodeInfo) bool {
	n.Incarnation, o.Incarnation = 0, 0
	return n == o
}

// Partition is one partition's replication metadata.
type Partition struct {
	// Replicas is the assignment; the first is the preferred leader.
	Replicas []int32 `json:"replicas"`
	// Leader is the node that takes writes, or NoLeader.
	Leader int32 `json:"leader"`
	// LeaderEpoch grows by one with every leader change (including a change
	// to NoLeader); it never goes down.
	LeaderEpoch int32 `json:"leader_epoch"`
	// ISR is the in-sync replica set, in assignment order. The leader, when
	// there is one, is always in it.
	ISR []int32 `json:"isr"`
	// RemoteLogStart is the first offset still held in the bucket (0 while
	// nothing was tiered or deleted); it only grows.
	RemoteLogStart int64 `json:"remote_log_start"`
}

// Topic is a topic's metadata.
type Topic struct {
	Name string `json:"name"`
	// ID is the caller-chosen topic id (Kafka's topic UUID), which tells a
	// topic from an earlier one of the same name. May be empty.
	ID                string            `json:"id,omitempty"`
	ReplicationFactor int               `json:"replication_factor"`
	Config            map[string]string `json:"config,omitempty"`
	Partitions        []Partition       `json:"partitions"`
}

// State is the whole replicated cluster metadata. Values returned by
// Node.State are copies the caller owns.
type State struct {
	// Index is the Raft log index of the last entry applied; equal Index
	// means equal State on any two nodes.
	Index uint64 `json:"index"`
	// ClusterID names the cluster (Kafka's cluster id, the bucket prefix's
	// owner); set once by the first controller, never changed.
	ClusterID string `json:"cluster_id,omitempty"`
	// RaftID names this Raft group: random, chosen once by its first
	// leader (identity.go). Two groups bootstrapped apart from the same
	// --peers (a lost majority) have different ones, and their nodes
	// refuse each other's Raft connections.
	RaftID string             `json:"raft_id,omitempty"`
	Nodes  map[int32]NodeInfo `json:"nodes"`
	Topics map[string]*Topic  `json:"topics"`
}

// NewState returns the empty state of a new cluster.
func NewState() *State {
	return &State{Nodes: map[int32]NodeInfo{}, Topics: map[string]*Topic{}}
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := &State{Index: s.Index, ClusterID: s.ClusterID, RaftID: s.RaftID, Nodes: maps.Clone(s.Nodes), Topics: make(map[string]*Topic, len(s.Topics))}
	if c.Nodes == nil {
		c.Nodes = map[int32]NodeInfo{}
	}
	for name, t := range s.Topics {
		c.Topics[name] = t.clone()
	}
	return c
}

func (t *Topic) clone() *Topic {
	c := *t
	c.Config = maps.Clone(t.Config)
	c.Partitions = make([]Partition, len(t.Partitions))
	for i, p := range t.Partitions {
		c.Partitions[i] = p.clone()
	}
	return &c
}

func (p Partition) clone() Partition {
	p.Replicas = slices.Clone(p.Replicas)
	p.ISR = slices.Clone(p.ISR)
	return p
}

// Partition returns a copy of one partition's metadata.
func (s *State) Partition(topic string, partition int32) (Partition, error) {
	p, err := s.partition(topic, partition)
	if err != nil {
		return Partition{}, err
	}
	return p.clone(), nil
}

func (s *State) partition(topic string, partition int32) (*Partition, error) {
	t, ok := s.Topics[topic]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, topic)
	}
	if partition < 0 || int(partition) >= len(t.Partitions) {
		return nil, fmt.Errorf("%w: %s/%d", ErrUnknownPartition, topic, partition)
	}
	return &t.Partitions[partition], nil
}

// Check verifies the invariants every applied command keeps: each
// partition's leader is NoLeader or in its ISR, the ISR is a subset of the
// replicas, replicas are distinct registered nodes. A restore of a snapshot
// that breaks them is refused.
func (s *State) Check() error {
	for name, t := range s.Topics {
		if name != t.Name {
			return fmt.Errorf("%w: topic %q stored under %q", ErrInvalidCommand, t.Name, name)
		}
		for i, p := range t.Partitions {
			if err := s.checkReplicas(p.Replicas, t.ReplicationFactor); err != nil {
				return fmt.Errorf("%s/%d: %w", name, i, err)
			}
			for _, r := range p.ISR {
				if !slices.Contains(p.Replicas, r) {
					return fmt.Errorf("%s/%d: ISR member %d: %w", name, i, r, ErrNotReplica)
				}
			}
			if p.Leader != NoLeader && !slices.Contains(p.ISR, p.Leader) {
				return fmt.Errorf("%s/%d: leader %d: %w", name, i, p.Leader, ErrNotInISR)
			}
			if p.LeaderEpoch < 0 || p.RemoteLogStart < 0 {
				return fmt.Errorf("%w: %s/%d: negative epoch or offset", ErrInvalidCommand, name, i)
			}
		}
	}
	return nil
}

// checkReplicas checks one partition's assignment: rf distinct registered
// nodes.
func (s *State) checkReplicas(replicas []int32, rf int) error {
	if len(replicas) != rf || rf < 1 {
		return fmt.Errorf("%w: %d replicas for replication factor %d", ErrInvalidCommand, len(replicas), rf)
	}
	for i, r := range replicas {
		if _, ok := s.Nodes[r]; !ok {
			return fmt.Errorf("%w: %d", ErrUnknownNode, r)
		}
		if slices.Contains(replicas[:i], r) {
			return fmt.Errorf("%w: replica %d listed twice", ErrInvalidCommand, r)
		}
	}
	return nil
}

// PartitionChange is a partition whose leadership differs between two
// states. Old or New is nil when the partition did not exist on that side
// (created, or deleted with its topic).
type PartitionChange struct {
	Topic     string
	Partition int32
	Old, New  *Partition
}

// LeaderChanges lists the partitions whose leader or leader epoch differ
// from old to new, or that exist on one side only, in topic, partition
// order. A watcher calls it after each Watch signal to learn which of its
// replicas must become leader or follower.
func LeaderChanges(old, new *State) []PartitionChange {
	var out []PartitionChange
	get := func(s *State, topic string, i int) *Partition {
		if t, ok := s.Topics[topic]; ok && i < len(t.Partitions) {
			p := t.Partitions[i].clone()
			return &p
		}
		return nil
	}
	names := make([]string, 0, len(old.Topics)+len(new.Topics))
	for name := range old.Topics {
		names = append(names, name)
	}
	for name := range new.Topics {
		names = append(names, name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	for _, name := range names {
		count := 0
		for _, s := range []*State{old, new} {
			if t, ok := s.Topics[name]; ok {
				count = max(count, len(t.Partitions))
			}
		}
		for i := range count {
			o, n := get(old, name, i), get(new, name, i)
			if o != nil && n != nil && o.Leader == n.Leader && o.LeaderEpoch == n.LeaderEpoch &&
				old.Topics[name].ID == new.Topics[name].ID {
				continue
			}
			out = append(out, PartitionChange{Topic: name, Partition: int32(i), Old: o, New: n})
		}
	}
	return out
}
