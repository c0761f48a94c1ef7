package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/tiering"
)

// AlterTopicConfig changes a running topic's settings: set overlays keys
// on what the topic sets, del returns keys to the server defaults. The
// result is validated as CreateTopic validates a config; a bad key or
// value changes nothing. The new settings are durable in topic.json and,
// with a bucket, in the bucket's topic record (so a restore from the
// bucket gets them) before the open partitions apply them.
//
// If the bucket cannot be written the error says so and topic.json is put
// back. topic.json is marked bucket_stale until the bucket's record is
// written, so a crash between the two writes (or a bucket write that
// failed after landing) is repaired by the next open.
func (b *Broker) AlterTopicConfig(name string, set map[string]string, del []string) (TopicInfo, error) {
	if err := b.CheckAlterTopicConfig(name, set, del); err != nil {
		return TopicInfo{}, err
	}
	if b.rm != nil {
		return b.rm.alterTopic(name, set, del)
	}
	return b.alterLocal(name, set, del)
}

func (b *Broker) alterLocal(name string, set map[string]string, del []string) (TopicInfo, error) {
	t, done, err := b.beginTopicChange(name)
	if err != nil {
		return TopicInfo{}, err
	}
	defer done()
	old := t.settings.Load()
	over, cfg, hc, err := b.altered(old, set, del)
	if err != nil {
		return TopicInfo{}, err
	}

	// BucketStale until the bucket's record is written: a crash between the
	// two writes, or a bucket write that failed (perhaps after landing), is
	// repaired by the next open writing the record again.
	m := topicMeta{Name: name, Partitions: int32(len(t.partitions())), Config: over, Created: t.created, BucketStale: b.store != nil, ReplicationFactor: t.rf, ID: t.id}
	dir := b.topicDir(name)
	if err := writeTopicMeta(dir, m); err != nil {
		return TopicInfo{}, fmt.Errorf("broker: alter topic %s: %w", name, err)
	}
	if b.store != nil {
		if err := b.putTopicRecord(b.ctx, m); err != nil {
			m.Config = old.overrides
			if rerr := writeTopicMeta(dir, m); rerr != nil {
				b.opts.Logger.Warn("alter topic: put back topic.json", "topic", name, "err", rerr)
			}
			return TopicInfo{}, fmt.Errorf("broker: alter topic %s: record the config in %s: %w", name, b.store.Bucket.Name(), err)
		}
	}
	t.settings.Store(&topicSettings{overrides: over, cfg: cfg})
	for i, p := range t.partitions() {
		if err := p.SetConfig(hc, cfg.RemoteStorageEnable, cfg.retention()); err != nil {
			// Validated above: a failure here is a bug, not bad input.
			return TopicInfo{}, fmt.Errorf("broker: alter topic %s partition %d: %w", name, i, err)
		}
		p.SetLocalMaxBytes(cfg.LocalDiskMaxBytes)
		p.SetObjectLock(cfg.objectLock())
	}
	b.opts.Logger.Info("topic config altered", "topic", name, "set", set, "deleted", slices.Sorted(slices.Values(del)))
	return t.info(), nil
}

// beginTopicChange starts a change of a live topic's metadata (an alter,
// an add of partitions): counted in b.ops like creates and deletes, so
// Close waits for it and no topic.json is written after Close has unlocked
// the data directory, and holding the topic's metaMu, so it serialises
// with the other changes and DeleteTopic. done ends it.
func (b *Broker) beginTopicChange(name string) (t *topic, done func(), err error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, nil, ErrClosed
	}
	b.ops.Add(1)
	b.mu.Unlock()
	if t, err = b.topic(name); err != nil {
		b.ops.Done()
		return nil, nil, err
	}
	t.metaMu.Lock()
	done = func() {
		t.metaMu.Unlock()
		b.ops.Done()
	}
	if t.deleted {
		done()
		return nil, nil, fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	return t, done, nil
}

// CheckAlterTopicConfig reports the error AlterTopicConfig would return
// for the same change, without making it (Kafka's validate-only alter).
// Like a create's checks, it runs where the change is asked for: a node
// applying a change the cluster committed (alterLocal) does not ask the
// bucket again whether it can lock objects.
func (b *Broker) CheckAlterTopicConfig(name string, set map[string]string, del []string) error {
	if err := checkDeletes(set, del); err != nil {
		return err
	}
	t, err := b.topic(name)
	if err != nil {
		return err
	}
	_, cfg, _, err := b.altered(t.settings.Load(), set, del)
	if err != nil {
		return err
	}
	return b.checkObjectLock(cfg)
}

func checkDeletes(set map[string]string, del []string) error {
	for _, k := range del {
		if _, ok := configKeys[k]; !ok {
			return fmt.Errorf("%w: delete unknown key %q (valid keys: %s)", ErrInvalidConfig, k, strings.Join(ConfigKeys(), ", "))
		}
		if _, ok := set[k]; ok {
			return fmt.Errorf("%w: key %q is both set and deleted; do one", ErrInvalidConfig, k)
		}
	}
	return nil
}

// altered is old with set and del applied: the new overrides, the config
// they make and the partition log's config, validated.
func (b *Broker) altered(old *topicSettings, set map[string]string, del []string) (map[string]string, TopicConfig, hot.Config, error) {
	over := maps.Clone(old.overrides)
	if over == nil {
		over = map[string]string{}
	}
	maps.Copy(over, set)
	for _, k := range del {
		delete(over, k)
	}
	cfg, err := ParseTopicConfig(b.opts.Defaults, over)
	if err != nil {
		return nil, TopicConfig{}, hot.Config{}, err
	}
	hc := cfg.hotConfig(b.store != nil)
	if err := hc.Validate(); err != nil {
		return nil, TopicConfig{}, hot.Config{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return over, cfg, hc, nil
}

// putTopicRecord writes a live topic's record to the bucket from m (its
// topic.json, marked BucketStale), then clears the marker. Clearing it is
// best effort: the settings are durable on both sides by then, and a marker
// left behind only makes the next open write the same record again.
func (b *Broker) putTopicRecord(ctx context.Context, m topicMeta) error {
	tm := tiering.TopicMeta{Name: m.Name, Partitions: m.Partitions, Config: m.Config, Created: m.Created}
	if err := b.store.PutTopic(ctx, tm); err != nil {
		return err
	}
	m.BucketStale = false
	if err := writeTopicMeta(b.topicDir(m.Name), m); err != nil {
		b.opts.Logger.Warn("clear bucket_stale in topic.json", "topic", m.Name, "err", err)
	}
	return nil
}
