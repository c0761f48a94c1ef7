package cluster

import (
	"fmt"
	"slices"
)

// Consumer groups' committed offsets are kept in the Raft log too, so that
// they survive the loss of the node coordinating the groups (the
// controller): the coordinator commits each batch of offsets here before
// it answers, and a node that becomes coordinator loads them all. They are
// kept beside State, not in it, so the frequent commits neither copy nor
// signal the topic metadata.

// GroupOffset is a group's committed offset for one partition; Offset < 0
// deletes it.
type GroupOffset struct {
	Group       string `json:"g"`
	Topic       string `json:"t"`
	Partition   int32  `json:"p"`
	Offset      int64  `json:"o"`
	LeaderEpoch int32  `json:"e"`
	Metadata    string `json:"m,omitempty"`
	CommitMs    int64  `json:"c"`
	ExpireMs    int64  `json:"x,omitempty"`
}

// CommitGroupOffsets records a batch of offsets and deletions, in order.
type CommitGroupOffsets struct {
	Offsets []GroupOffset `json:"offsets"`
}

type groupKey struct {
	group, topic string
	partition    int32
}

// groupOffsets is every live committed offset.
type groupOffsets map[groupKey]GroupOffset

func (g groupOffsets) apply(c *CommitGroupOffsets) error {
	for _, o := range c.Offsets {
		if o.Group == "" || o.Topic == "" || o.Partition < 0 {
			return fmt.Errorf("%w: group offset %+v", ErrInvalidCommand, o)
		}
	}
	for _, o := range c.Offsets {
		k := groupKey{o.Group, o.Topic, o.Partition}
		if o.Offset < 0 {
			delete(g, k)
		} else {
			g[k] = o
		}
	}
	return nil
}

// dropTopic forgets every group's offsets of a deleted topic.
func (g groupOffsets) dropTopic(topic string) {
	for k := range g {
		if k.topic == topic {
			delete(g, k)
		}
	}
}

func (g groupOffsets) list() []GroupOffset {
	out := make([]GroupOffset, 0, len(g))
	for _, o := range g {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b GroupOffset) int {
		if a.Group != b.Group {
			return compareStrings(a.Group, b.Group)
		}
		if a.Topic != b.Topic {
			return compareStrings(a.Topic, b.Topic)
		}
		return int(a.Partition - b.Partition)
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// GroupOffsets lists every committed group offset this node has applied.
func (n *Node) GroupOffsets() []GroupOffset {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return n.fsm.groups.list()
}
