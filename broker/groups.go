package broker

import (
	"path/filepath"
	"time"

	"github.com/tierlog/tierlog/broker/groups"
)

// groupsDir holds the consumer-group coordinator's committed offsets.
const groupsDir = "groups"

// openGroups opens the group coordinator once the topics are open, and
// drops the committed offsets of topics that no longer exist (a deletion
// that crashed before it dropped them).
func (b *Broker) openGroups() error {
	opts := b.opts.Groups
	opts.Dir = filepath.Join(b.opts.Dir, groupsDir)
	opts.Logger = b.opts.Logger
	opts.Registerer = b.opts.Registerer
	// A topic is out of b.topics before DeleteTopic drops its offsets, so
	// a commit that finds it is queued before the drop (see Commit).
	opts.PartitionExists = func(topic string, partition int32) bool {
		_, err := b.Partition(topic, partition)
		return err == nil
	}
	if b.opts.Cluster != nil {
		opts.Replicate = b.replicateGroupOffsets
	}
	g, err := groups.Open(opts)
	if err != nil {
		return err
	}
	b.groups = g
	live := make(map[string]bool, len(b.topics))
	for name := range b.topics {
		live[name] = true
	}
	return g.DropTopics(func(topic string) bool { return live[topic] })
}

// Groups is the node's consumer-group coordinator.
func (b *Broker) Groups() *groups.Coordinator { return b.groups }

// dropGroupOffsets forgets every group's offsets of a deleted topic, so a
// topic created later under its name does not inherit them. A failure
// leaves them to the next open, which drops offsets of missing topics.
// The bucket's copy is brought up to date now rather than at the next
// interval (a restore also drops offsets committed before their topic's
// creation, see reviseRestoredOffsets).
func (b *Broker) dropGroupOffsets(topic string) {
	if err := b.groups.DropTopics(func(t string) bool { return t != topic }); err != nil {
		b.opts.Logger.Warn("committed offsets of a deleted topic not dropped; the next start drops them", "topic", topic, "err", err)
	}
	if b.store != nil {
		b.copyGroupOffsetsSoon()
	}
}

// reviseRestoredOffsets fixes the group offsets a restore took from the
// bucket against the topics it restored:
//
//   - An offset committed before its topic was created belongs to a
//     deleted topic of the same name (the bucket's copy predates the
//     deletion): it is dropped. Topics whose bucket record does not say
//     when they were created keep their offsets.
//   - An offset past its partition's restored log end (the copy runs
//     ahead of the segments the bucket holds) is lowered to that end, so
//     the records appended after the restore, which reuse those offsets,
//     are not skipped by the group.
//
// Each change is logged at Warn.
func (b *Broker) reviseRestoredOffsets() error {
	return b.groups.ReviseOffsets(func(o groups.OffsetOf) (groups.Offset, bool) {
		log := b.opts.Logger.With("group", o.Group, "topic", o.Topic, "partition", o.Partition)
		t, err := b.topic(o.Topic)
		if err != nil {
			return o.Offset, false // openGroups dropped the offsets of missing topics
		}
		// Commit times are stored in milliseconds.
		if created := t.created.Truncate(time.Millisecond); o.CommitTime.Before(created) {
			log.Warn("restore: dropped a committed offset older than its topic (it was a deleted topic's of the same name)",
				"offset", o.Offset.Offset, "committed", o.CommitTime, "topic_created", t.created)
			return groups.Offset{Offset: -1}, true
		}
		parts := t.partitions()
		if int(o.Partition) >= len(parts) {
			return o.Offset, false
		}
		if end := parts[o.Partition].EndOffset(); o.Offset.Offset > end {
			log.Warn("restore: committed offset beyond the restored log end lowered to it, so records appended after the restore are consumed",
				"old", o.Offset.Offset, "new", end)
			n := o.Offset
			n.Offset = end
			return n, true
		}
		return o.Offset, false
	})
}
