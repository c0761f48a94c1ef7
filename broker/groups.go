package broker

import (
	"path/filepath"

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
func (b *Broker) dropGroupOffsets(topic string) {
	if err := b.groups.DropTopics(func(t string) bool { return t != topic }); err != nil {
		b.opts.Logger.Warn("committed offsets of a deleted topic not dropped; the next start drops them", "topic", topic, "err", err)
	}
}
