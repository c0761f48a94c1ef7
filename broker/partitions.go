package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tierlog/tierlog/tiering"
)

// AddPartitions grows a topic to total partitions (Kafka's
// CreatePartitions); a topic never shrinks, so total must exceed the
// current count. Existing partitions are untouched: records keep their
// partitions and offsets (keys hash differently from now on, as in Kafka).
//
// The new count is durable in topic.json and, with a bucket, in the
// bucket's topic record (so a restore from the bucket opens every
// partition) before the new partitions are visible, so an acknowledged add
// survives a crash. Until the bucket's record is written topic.json is
// marked bucket_stale, as an alter marks it: a crash between the two
// writes is repaired by the next open. If the bucket cannot be written
// the add is undone and the error says so.
//
// It serialises with AlterTopicConfig and DeleteTopic on the topic's
// metaMu; appends and fetches never wait for it (they read the partition
// list without a lock). The new partitions join the tiering daemon only
// once installed, and a deletion that follows finds them in the list and
// removes them from the daemon and the bucket with the rest.
func (b *Broker) AddPartitions(name string, total int32) (TopicInfo, error) {
	if b.rm != nil {
		if err := b.CheckAddPartitions(name, total); err != nil {
			return TopicInfo{}, err
		}
		return b.rm.addPartitions(name, total)
	}
	return b.addLocal(name, total)
}

func (b *Broker) addLocal(name string, total int32) (TopicInfo, error) {
	t, done, err := b.beginTopicChange(name)
	if err != nil {
		return TopicInfo{}, err
	}
	defer done()
	old := t.partitions()
	n := int32(len(old))
	if err := b.checkGrow(name, n, total); err != nil {
		return TopicInfo{}, err
	}
	if err := b.reserveAdded(total - n); err != nil {
		return TopicInfo{}, err
	}
	installed := false
	defer func() {
		if !installed {
			b.releaseAdded(total-n, nil, nil)
		}
	}()

	// Directories of numbers past the count are left by an add that
	// crashed before topic.json recorded it: never acknowledged and never
	// written to, so they go.
	dir := b.topicDir(name)
	for p := n; p < total; p++ {
		if err := os.RemoveAll(filepath.Join(dir, strconv.Itoa(int(p)))); err != nil {
			return TopicInfo{}, fmt.Errorf("broker: add partitions to %s: %w", name, err)
		}
	}
	st := t.settings.Load()
	added, err := b.openPartitions(b.ctx, t, n, total, st.cfg, true)
	if err != nil {
		return TopicInfo{}, err
	}
	undo := func() {
		closeAll(added)
		for p := n; p < total; p++ {
			os.RemoveAll(filepath.Join(dir, strconv.Itoa(int(p))))
		}
	}
	m := topicMeta{Name: name, Partitions: total, Config: st.overrides, Created: t.created, BucketStale: b.store != nil, ReplicationFactor: t.rf, ID: t.id}
	if err := writeTopicMeta(dir, m); err != nil {
		undo()
		return TopicInfo{}, fmt.Errorf("broker: add partitions to %s: %w", name, err)
	}
	if b.store != nil {
		if err := b.putTopicRecord(b.ctx, m); err != nil {
			// Back to the old count, still marked stale: the bucket write
			// may have landed, and the next open writes the record again.
			m.Partitions = n
			if rerr := writeTopicMeta(dir, m); rerr != nil {
				// topic.json says total: the next open opens the new
				// partitions (empty) and records them in the bucket.
				b.opts.Logger.Warn("add partitions: put back topic.json", "topic", name, "err", rerr)
			}
			undo()
			return TopicInfo{}, fmt.Errorf("broker: add partitions to %s: record the count in %s: %w", name, b.store.Bucket.Name(), err)
		}
	}
	b.releaseAdded(total-n, t, append(old[:n:n], added...))
	installed = true
	if b.daemon != nil {
		for _, p := range added {
			b.daemon.Add(p)
		}
	}
	b.opts.Logger.Info("partitions added", "topic", name, "from", n, "to", total)
	return t.info(), nil
}

// CheckAddPartitions reports the error AddPartitions would return for the
// same arguments now, without adding anything (Kafka's validate-only
// CreatePartitions).
func (b *Broker) CheckAddPartitions(name string, total int32) error {
	t, err := b.topic(name)
	if err != nil {
		return err
	}
	n := int32(len(t.partitions()))
	if err := b.checkGrow(name, n, total); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.checkNodeLimit(total - n)
}

func (b *Broker) checkGrow(name string, n, total int32) error {
	if total <= n {
		return fmt.Errorf("%w: topic %s has %d partitions; the new count must be larger, not %d", ErrInvalidPartition, name, n, total)
	}
	if total > b.opts.MaxPartitions {
		return fmt.Errorf("%w: %d partitions: valid range is 1 to %d", ErrInvalidPartition, total, b.opts.MaxPartitions)
	}
	return nil
}

// reserveAdded counts k partitions being added against the node's limit.
func (b *Broker) reserveAdded(k int32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkNodeLimit(k); err != nil {
		return err
	}
	b.adding += int(k)
	return nil
}

// releaseAdded ends a reservation of k partitions, installing parts as
// t's partitions (when t is not nil) in the same step so the node's count
// never holds them twice.
func (b *Broker) releaseAdded(k int32, t *topic, parts []*tiering.Partition) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.adding -= int(k)
	if t != nil {
		t.parts.Store(&parts)
	}
}
