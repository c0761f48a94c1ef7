package broker

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/tierlog/tierlog/internal/fileutil"
	"github.com/tierlog/tierlog/tiering"
)

// Topic lifecycle. A create or delete first reserves the name under b.mu
// (pending), then does its file and bucket work without the lock, then
// installs the result under b.mu again. Appends and fetches to other
// topics therefore never wait for a bucket request or for thousands of
// partitions to open, and a create and a delete of one name never overlap.
//
// A deletion is durable before anything is removed: topic.json says
// "deleting" and the bucket's topic record becomes a tombstone. Until the
// bucket holds nothing of the topic the name stays reserved - a create of
// it fails with ErrTopicDeletionPending - and the deletion is retried in
// the background, at every open, and by a repeated DeleteTopic. We chose
// this over a per-incarnation topic id because the bucket's key layout
// (and the restore path that reads it) stays as it is, and because it is
// Kafka's behaviour ("marked for deletion"); the cost is that a name is
// unusable while the bucket is unreachable.

// pendingTopic reserves a name whose topic is being created or deleted.
type pendingTopic struct {
	deleting bool
	parts    int32     // partitions a create reserves against the node limit
	meta     topicMeta // what a deletion removes

	mu   sync.Mutex // one deletion attempt at a time
	done bool       // guarded by mu: the deletion finished
}

// partitionsInUse counts the partitions of live topics and of creates and
// adds in flight. Called with b.mu held.
func (b *Broker) partitionsInUse() int {
	n := 0
	for _, t := range b.topics {
		n += len(t.partitions())
	}
	n += b.adding
	for _, p := range b.pending {
		if !p.deleting {
			n += int(p.parts)
		}
	}
	return n
}

// CreateTopic creates a topic with the given partitions and config
// overrides. The topic exists once its metadata file is durable.
func (b *Broker) CreateTopic(name string, partitions int32, config map[string]string) (TopicInfo, error) {
	return b.CreateTopicRF(name, partitions, 0, config)
}

// CreateTopicRF is CreateTopic with a replication factor: 0 takes the
// cluster's default (a single node's topics always have one replica). In
// a cluster the controller assigns the replicas and every node creates
// the topic; it returns once this node has.
func (b *Broker) CreateTopicRF(name string, partitions int32, rf int, config map[string]string) (TopicInfo, error) {
	if err := b.checkNewTopic(name, partitions, config); err != nil {
		return TopicInfo{}, err
	}
	if config == nil {
		config = map[string]string{}
	}
	if b.rm != nil {
		return b.rm.createTopic(name, partitions, rf, config)
	}
	if rf > 1 {
		return TopicInfo{}, fmt.Errorf("%w: replication factor %d: this node is not part of a cluster (start it with --peers)", ErrInvalidReplication, rf)
	}
	return b.createLocal(topicMeta{Name: name, Partitions: partitions, Config: maps.Clone(config)})
}

// createLocal creates a topic on this node (m's State and Created are set
// here).
func (b *Broker) createLocal(m topicMeta) (TopicInfo, error) {
	name, partitions, config := m.Name, m.Partitions, m.Config
	m.Created, m.State = time.Now().UTC(), stateCreating
	op := &pendingTopic{parts: partitions, meta: m}
	if err := b.reserve(name, op); err != nil {
		return TopicInfo{}, err
	}
	defer b.ops.Done()
	t, err := b.create(op)
	if err != nil {
		return TopicInfo{}, err
	}
	b.opts.Logger.Info("topic created", "topic", name, "partitions", partitions, "config", config)
	return t.info(), nil
}

// CheckCreateTopic reports the error CreateTopic would return for the same
// arguments now, without creating anything (Kafka's validate-only create).
func (b *Broker) CheckCreateTopic(name string, partitions int32, config map[string]string) error {
	if err := b.checkNewTopic(name, partitions, config); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.checkReserve(name, partitions)
}

// checkNewTopic validates a create's arguments.
func (b *Broker) checkNewTopic(name string, partitions int32, config map[string]string) error {
	if err := ValidateTopicName(name); err != nil {
		return err
	}
	if partitions < 1 || partitions > b.opts.MaxPartitions {
		return fmt.Errorf("%w: %d partitions: valid range is 1 to %d", ErrInvalidPartition, partitions, b.opts.MaxPartitions)
	}
	cfg, err := ParseTopicConfig(b.opts.Defaults, config)
	if err != nil {
		return err
	}
	if err := cfg.hotConfig(b.store != nil).Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return b.checkObjectLock(cfg)
}

// reserve claims name for op, or says why it cannot be.
func (b *Broker) reserve(name string, op *pendingTopic) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkReserve(name, op.parts); err != nil {
		return err
	}
	b.pending[name] = op
	b.ops.Add(1)
	return nil
}

// checkReserve says why name cannot be created with parts partitions now.
// Called with b.mu held.
func (b *Broker) checkReserve(name string, parts int32) error {
	if b.closed {
		return ErrClosed
	}
	if _, ok := b.topics[name]; ok {
		return fmt.Errorf("%w: %s", ErrTopicExists, name)
	}
	if p, ok := b.pending[name]; ok {
		if p.deleting {
			return fmt.Errorf("%w: %s: its deletion from %s is not finished yet; retry later", ErrTopicDeletionPending, name, b.bucketWhere())
		}
		return fmt.Errorf("%w: %s (being created)", ErrTopicExists, name)
	}
	return b.checkNodeLimit(parts)
}

// checkNodeLimit says whether k more partitions fit the node's limit.
// Called with b.mu held.
func (b *Broker) checkNodeLimit(k int32) error {
	if used := b.partitionsInUse(); used+int(k) > b.opts.MaxNodePartitions {
		return fmt.Errorf("%w: %d more would make %d, past the limit of %d (max_node_partitions); %d are free",
			ErrTooManyPartitions, k, used+int(k), b.opts.MaxNodePartitions, max(0, b.opts.MaxNodePartitions-used))
	}
	return nil
}

func (b *Broker) bucketWhere() string {
	if b.opts.Bucket == nil {
		return "the data directory"
	}
	return b.opts.Bucket.Name()
}

// create does the work of a reserved create. A local record saying
// "creating" is durable before the bucket hears of the topic, so whatever
// fails (or crashes) after that point is undone as a deletion - locally and
// in the bucket - and never restored as a topic nobody acknowledged.
func (b *Broker) create(op *pendingTopic) (*topic, error) {
	m, name := op.meta, op.meta.Name
	dir := b.topicDir(name)
	if err := fileutil.MkdirAllDurable(dir); err != nil {
		b.release(name, op)
		return nil, fmt.Errorf("broker: create topic %s: %w", name, err)
	}
	if err := writeTopicMeta(dir, m); err != nil {
		os.RemoveAll(dir)
		b.release(name, op)
		return nil, fmt.Errorf("broker: create topic %s: %w", name, err)
	}
	var t *topic
	err := func() error {
		if b.store != nil {
			// The bucket learns of the topic before it is acknowledged, so a
			// node restored from the bucket knows every topic that ever was.
			tm := tiering.TopicMeta{Name: name, Partitions: m.Partitions, Config: m.Config, Created: m.Created}
			if err := b.store.PutTopic(b.ctx, tm); err != nil {
				return fmt.Errorf("broker: record topic %s in %s: %w", name, b.store.Bucket.Name(), err)
			}
		}
		var err error
		if t, err = b.openTopic(b.ctx, m, true); err != nil {
			return err
		}
		live := m
		live.State = ""
		return writeTopicMeta(dir, live)
	}()
	if err != nil {
		if t != nil {
			t.close()
		}
		b.abortCreate(op, err)
		return nil, err
	}
	// Into the daemon before the topic is visible: a delete can only find
	// it after this, so its Remove always follows the Add (the other way
	// round, the daemon would keep a deleted partition for ever).
	b.addToDaemon(t)
	b.mu.Lock()
	b.topics[name] = t
	delete(b.pending, name)
	b.mu.Unlock()
	return t, nil
}

// release frees a reservation that left nothing behind.
func (b *Broker) release(name string, op *pendingTopic) {
	b.mu.Lock()
	if b.pending[name] == op {
		delete(b.pending, name)
	}
	b.mu.Unlock()
}

// abortCreate turns a failed create into a deletion of what it left.
func (b *Broker) abortCreate(op *pendingTopic, cause error) {
	op.mu.Lock() // before the retrier can see it as a deletion
	defer op.mu.Unlock()
	b.mu.Lock()
	op.deleting = true
	op.meta.State = stateDeleting
	b.mu.Unlock()
	name := op.meta.Name
	if err := writeTopicMeta(b.topicDir(name), op.meta); err != nil {
		// topic.json still says "creating", which open treats alike.
		b.opts.Logger.Warn("record failed create as deleting", "topic", name, "err", err)
	}
	if err := b.finishDeleteLocked(op); err != nil {
		b.opts.Logger.Warn("cleaning up a failed create; will retry", "topic", name, "cause", cause, "err", err)
	}
}

// DeleteTopic deletes a topic and all its data, locally and in the bucket.
// Once it returns nil nothing of the topic is left. If the bucket fails,
// the deletion is durable but unfinished: the topic is gone for clients,
// the error wraps ErrTopicDeletionPending, and the deletion is retried in
// the background (and by calling DeleteTopic again) until it completes.
func (b *Broker) DeleteTopic(name string) error {
	if b.rm != nil {
		return b.rm.deleteTopic(name)
	}
	return b.deleteLocal(name)
}

func (b *Broker) deleteLocal(name string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if op, ok := b.pending[name]; ok {
		if !op.deleting {
			b.mu.Unlock()
			return fmt.Errorf("%w: %s (still being created)", ErrUnknownTopic, name)
		}
		// Deleted before but not finished: a retried delete resumes it.
		b.ops.Add(1)
		b.mu.Unlock()
		defer b.ops.Done()
		return b.finishDelete(op)
	}
	t, ok := b.topics[name]
	if !ok {
		b.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	// Partitions is set under metaMu below, where no AddPartitions runs.
	meta := topicMeta{Name: name, Created: time.Now().UTC(), State: stateDeleting}
	op := &pendingTopic{deleting: true, meta: meta}
	// Held until this call is done with op: the background retrier must
	// not remove the directory before the tombstone is in it and the
	// partitions are closed.
	op.mu.Lock()
	defer op.mu.Unlock()
	delete(b.topics, name)
	b.pending[name] = op
	b.ops.Add(1)
	b.mu.Unlock()
	defer b.ops.Done()

	// The tombstone is durable before anything is removed: a crash from
	// here on resumes the deletion at the next open. An alter in flight
	// finishes first (metaMu), and one after it finds the topic deleted,
	// so neither topic.json nor the bucket's record is written over the
	// tombstone with a live topic.
	t.metaMu.Lock()
	t.deleted = true
	op.meta.Partitions = int32(len(t.partitions()))
	tomb := op.meta
	tomb.Config = t.settings.Load().overrides
	if err := writeTopicMeta(b.topicDir(name), tomb); err != nil {
		t.deleted = false
		t.metaMu.Unlock()
		b.mu.Lock()
		b.topics[name] = t
		delete(b.pending, name)
		b.mu.Unlock()
		op.done = true // for a retrier that found op meanwhile: nothing to do
		return fmt.Errorf("broker: delete topic %s: record the deletion: %w", name, err)
	}
	t.metaMu.Unlock()
	b.dropGroupOffsets(name)
	// Off the daemon before the bucket is cleaned: no tiering pass starts
	// on these partitions after Remove returns (and a running one is
	// waited for), so nothing is uploaded behind the deletion's back.
	b.removeFromDaemon(t)
	if err := t.close(); err != nil {
		b.opts.Logger.Warn("close deleted topic", "topic", name, "err", err)
	}
	return b.finishDeleteLocked(op)
}

// finishDelete removes a deleted topic's objects from the bucket, then its
// directory, then the reservation. It is safe to call again after a
// failure, and from several goroutines (they take turns).
func (b *Broker) finishDelete(op *pendingTopic) error {
	op.mu.Lock()
	defer op.mu.Unlock()
	return b.finishDeleteLocked(op)
}

func (b *Broker) finishDeleteLocked(op *pendingTopic) error {
	if op.done {
		return nil
	}
	name := op.meta.Name
	if b.store != nil {
		if err := b.store.DeleteTopic(b.ctx, name, op.meta.Partitions); err != nil {
			return fmt.Errorf("%w: %s: deleted here, but not yet from %s (retrying in the background): %w",
				ErrTopicDeletionPending, name, b.store.Bucket.Name(), err)
		}
	}
	if err := errors.Join(os.RemoveAll(b.topicDir(name)), fileutil.SyncDir(b.topicsDir())); err != nil {
		return fmt.Errorf("%w: %s: remove %s: %w", ErrTopicDeletionPending, name, b.topicDir(name), err)
	}
	op.done = true
	b.mu.Lock()
	if b.pending[name] == op {
		delete(b.pending, name)
	}
	b.mu.Unlock()
	b.opts.Logger.Info("topic deleted", "topic", name)
	return nil
}

// retryDeletions finishes unfinished deletions every DeleteRetryInterval
// (at once after open, for those a restart resumes) until Close.
func (b *Broker) retryDeletions() {
	defer b.ops.Done()
	tick := time.NewTicker(b.opts.DeleteRetryInterval)
	defer tick.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-b.ctx.Done():
				return
			case <-tick.C:
			}
		}
		b.mu.RLock()
		var ops []*pendingTopic
		for _, op := range b.pending {
			if op.deleting {
				ops = append(ops, op)
			}
		}
		b.mu.RUnlock()
		for _, op := range ops {
			if b.ctx.Err() != nil {
				return
			}
			if err := b.finishDelete(op); err != nil {
				b.opts.Logger.Warn("topic deletion unfinished; will retry", "topic", op.meta.Name, "in", b.opts.DeleteRetryInterval, "err", err)
			}
		}
	}
}
