package groups

import (
	"fmt"
	"time"
)

// PartitionOffset is one partition's offset in a commit.
type PartitionOffset struct {
	Topic     string
	Partition int32
	Offset
}

// CommitRequest commits offsets for a group: from a member of its current
// generation, or (Generation < 0, no member id) from a client that uses
// the group only to store offsets, which the group must then be Empty for.
type CommitRequest struct {
	Group, MemberID, InstanceID string
	Generation                  int32
	Offsets                     []PartitionOffset
}

// Commit checks a commit against the group's state and queues it; the
// returned wait reports when it is durable: written and fsynced to the
// offset log, so it survives a crash of the process or the machine. Until
// then OffsetFetch does not return it. Commits are applied in the order
// Commit is called.
//
// Offsets of partitions Options.PartitionExists refuses are left out: the
// check and the queueing happen under the lock DropTopics takes, so a
// commit is wholly before a topic's deletion (which then deletes its
// offsets, queued or not) or after it (and finds the topic gone). Leaving
// out the offsets of a topic deleted since the caller checked it is the
// commit ordered just before the deletion.
func (c *Coordinator) Commit(r CommitRequest) func() error {
	fail := func(err error) func() error { return func() error { return err } }
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fail(ErrUnavailable)
	}
	if err := c.checkCommit(r); err != nil {
		return fail(err)
	}
	now := time.Now()
	es := make([]entry, 0, len(r.Offsets))
	for _, o := range r.Offsets {
		if len(o.Metadata) > MaxMetadataBytes {
			return fail(fmt.Errorf("%w: %d bytes for %s/%d (at most %d)", ErrMetadataTooLarge, len(o.Metadata), o.Topic, o.Partition, MaxMetadataBytes))
		}
		if o.CommitTime.IsZero() {
			o.CommitTime = now
		}
		if c.opts.PartitionExists != nil && !c.opts.PartitionExists(o.Topic, o.Partition) {
			continue
		}
		es = append(es, entry{group: r.Group, topic: o.Topic, partition: o.Partition, Offset: o.Offset})
	}
	if len(es) == 0 {
		return func() error { return nil }
	}
	return c.store.enqueue(es)
}

// checkCommit applies Kafka's rules for who may commit.
func (c *Coordinator) checkCommit(r CommitRequest) error {
	g := c.groups[r.Group]
	if g == nil {
		if r.Generation < 0 {
			return nil // a group used only to store offsets
		}
		return fmt.Errorf("%w: group %q has no generation %d", ErrIllegalGeneration, r.Group, r.Generation)
	}
	if r.Generation < 0 && len(g.members) == 0 {
		return nil
	}
	if err := g.checkMember(r.MemberID, r.InstanceID); err != nil {
		return err
	}
	if r.Generation != g.generation {
		return fmt.Errorf("%w: %d, the group is at %d", ErrIllegalGeneration, r.Generation, g.generation)
	}
	if g.state == CompletingRebalance {
		// The member's assignment is about to change.
		return ErrRebalanceInProgress
	}
	return nil
}

// Offsets returns a group's committed offsets by topic and partition.
func (c *Coordinator) Offsets(group string) map[string]map[int32]Offset {
	out := map[string]map[int32]Offset{}
	for k, o := range c.store.get(group) {
		if out[k.topic] == nil {
			out[k.topic] = map[int32]Offset{}
		}
		out[k.topic][k.partition] = o
	}
	return out
}

// DeleteOffsets deletes a group's committed offsets of some partitions;
// subscribed lists the topics the group's members consume (nil for a
// group without members), whose offsets are kept (ErrSubscribed).
func (c *Coordinator) DeleteOffsets(group string, parts []PartitionOffset, subscribed func(protocolType string, metadata []byte) []string) ([]error, func() error) {
	errs := make([]error, len(parts))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, func() error { return ErrUnavailable }
	}
	have := c.store.pending(group) // a commit on its way is deleted too
	g := c.groups[group]
	if g == nil && len(have) == 0 {
		return nil, func() error { return fmt.Errorf("%w: %s", ErrGroupNotFound, group) }
	}
	subs := map[string]bool{}
	if g != nil {
		for _, m := range g.members {
			for _, t := range subscribed(g.protocolType, m.metadata(g.protocol)) {
				subs[t] = true
			}
		}
	}
	var es []entry
	for i, p := range parts {
		if subs[p.Topic] {
			errs[i] = ErrSubscribed
			continue
		}
		if have[tp{p.Topic, p.Partition}] {
			es = append(es, entry{group: group, topic: p.Topic, partition: p.Partition, Offset: Offset{Offset: -1}})
		}
	}
	if len(es) == 0 {
		return errs, func() error { return nil }
	}
	return errs, c.store.enqueue(es)
}

// OffsetOf is one group's committed offset of one partition.
type OffsetOf struct {
	Group string
	PartitionOffset
}

// ReviseOffsets replaces, durably, the committed offsets revise changes:
// revise gets each durable offset and returns it changed (an Offset below
// 0 deletes it) and true, or false to keep it. It is for repairs at open
// (a restore from the bucket): offsets still on their way to the log are
// not offered, and revise runs with no lock of the store held.
func (c *Coordinator) ReviseOffsets(revise func(OffsetOf) (Offset, bool)) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrUnavailable
	}
	var es []entry
	for _, o := range c.store.all() {
		if n, ok := revise(o); ok {
			es = append(es, entry{group: o.Group, topic: o.Topic, partition: o.Partition, Offset: n})
		}
	}
	var wait func() error
	if len(es) > 0 {
		wait = c.store.enqueue(es)
	}
	c.mu.Unlock()
	if wait == nil {
		return nil
	}
	return wait()
}

// DropTopics deletes, durably, every group's offsets of the topics keep
// refuses: a deleted topic's offsets are not offered to a topic created
// later under its name.
func (c *Coordinator) DropTopics(keep func(topic string) bool) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrUnavailable
	}
	es := c.store.topicTombstones(keep)
	var wait func() error
	if len(es) > 0 {
		wait = c.store.enqueue(es)
	}
	c.mu.Unlock()
	if wait == nil {
		return nil
	}
	return wait()
}

// Load replaces every committed offset with what read returns, durably,
// without replicating them: a node that becomes a cluster's group coordinator
// takes the cluster's copy (Options.Replicate). Groups' members and
// generations are not part of it: members rejoin, as they do when Kafka's
// coordinator moves.
//
// Groups and members this coordinator knew from an earlier time in the
// seat are dropped (their pending joins and syncs answered NOT_COORDINATOR),
// and commits still queued from then fail: another coordinator may have
// moved the groups on meanwhile.
func (c *Coordinator) Load(read func() []OffsetOf) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrUnavailable
	}
	c.dropGroupsLocked(ErrNotCoordinator)
	c.mu.Unlock()
	// Not under c.mu: load waits for a replication in flight (a Raft round
	// trip). Group requests are refused until the caller says it
	// coordinates, after this returns.
	if err := c.store.load(read); err != nil {
		return err
	}
	// As at open: the loaded groups have no members here; their offsets'
	// retention counts from now.
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.emptySince = map[string]time.Time{}
	for _, id := range c.store.groupIDs() {
		c.emptySince[id] = now
	}
	return nil
}
