package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
	"github.com/tierlog/tierlog/tiering"
)

// openTiering claims the bucket and builds the remote reader and the
// tiering daemon. The broker owns the bucket from here on and closes it.
func (b *Broker) openTiering(ctx context.Context) error {
	// A cluster's nodes share one prefix; only partition leaders write it.
	store, err := tiering.OpenStore(ctx, b.opts.Bucket, b.opts.Dir, tiering.StoreOptions{
		Takeover: b.opts.Takeover, Logger: b.opts.Logger, Registerer: b.opts.Registerer,
		Shared: b.opts.Cluster != nil, ClusterID: b.clusterID})
	if err != nil {
		return err
	}
	b.store = store
	budget := b.opts.CacheBytes
	if budget <= 0 {
		budget = 256 << 20
	}
	cache, err := cold.NewChunkCache(cold.ChunkCacheOptions{MaxBytes: budget, Registerer: b.opts.Registerer})
	if err != nil {
		return err
	}
	ro := b.opts.Cache
	ro.Logger = b.opts.Logger
	ro.Registerer = b.opts.Registerer
	if b.reader, err = cold.NewReader(b.opts.Bucket, cache, ro); err != nil {
		cache.Close()
		return err
	}
	b.cache = cache
	do := b.opts.Tiering
	// The signing key is read or created only now, with the data directory
	// locked: two processes starting on one directory never make two keys.
	keyPath := b.opts.SigningKey
	if keyPath == "" {
		keyPath = filepath.Join(b.opts.Dir, "signing.key")
	}
	node := 0 // a single node's key is node 0's
	if b.opts.Cluster != nil {
		node = int(b.opts.Cluster.NodeID)
	}
	if do.Signer, err = audit.LoadOrCreateKey(keyPath, audit.KeyName(node)); err != nil {
		cache.Close()
		return err
	}
	b.opts.Logger.Info("checkpoint signing key", "file", keyPath, "public_key", do.Signer.Public)
	do.TmpDir = filepath.Join(b.opts.Dir, "tiering-tmp")
	do.Logger = b.opts.Logger
	do.Registry = b.opts.Registerer
	if do.LocalDiskMaxBytes == 0 {
		if do.LocalDiskMaxBytes, err = tiering.DefaultLocalDiskMax(b.opts.Dir); err != nil {
			cache.Close()
			return err
		}
	}
	b.opts.Logger.Info("local disk ceiling", "local_disk_max_bytes", do.LocalDiskMaxBytes, "dir", b.opts.Dir)
	b.daemon = tiering.NewDaemon(store, do)
	return nil
}

// restoreTopics recreates, in an empty data directory, the topics the
// bucket records. Resuming a restore cut short, it keeps the topics it
// already recorded as they are.
func (b *Broker) restoreTopics(ctx context.Context) error {
	ts, err := b.store.Topics(ctx)
	if err != nil {
		return fmt.Errorf("broker: list topics in %s: %w", b.opts.Bucket.Name(), err)
	}
	for _, t := range ts {
		if err := ValidateTopicName(t.Name); err != nil {
			return fmt.Errorf("broker: bucket %s records a bad topic: %w", b.opts.Bucket.Name(), err)
		}
		// The creation time is the bucket's (zero when its record predates
		// it): the restore of the group offsets compares commits with it.
		m := topicMeta{Name: t.Name, Partitions: t.Partitions, Config: t.Config, Created: t.Created}
		if m.Config == nil {
			m.Config = map[string]string{}
		}
		if t.Deleting {
			// A tombstone: the topic was deleted and the deletion cut short.
			// Recorded locally as deleting, open finishes it.
			m.State = stateDeleting
			b.opts.Logger.Info("finishing deletion of topic recorded in the bucket", "topic", t.Name, "bucket", b.opts.Bucket.Name())
		}
		dir := b.topicDir(t.Name)
		if _, err := os.Stat(filepath.Join(dir, topicMetaFile)); err == nil {
			continue // recorded by the restore a crash cut short
		}
		if err := fileutil.MkdirAllDurable(dir); err != nil {
			return err
		}
		if err := writeTopicMeta(dir, m); err != nil {
			return err
		}
		if t.Deleting {
			continue
		}
		b.opts.Logger.Info("restoring topic from the bucket", "topic", t.Name, "partitions", t.Partitions, "bucket", b.opts.Bucket.Name())
	}
	return nil
}

func writeTopicMeta(dir string, m topicMeta) error {
	raw, _ := json.MarshalIndent(m, "", "  ")
	return fileutil.WriteFileAtomic(filepath.Join(dir, topicMetaFile), raw, 0o644)
}

func (b *Broker) addToDaemon(t *topic) {
	if b.daemon == nil {
		return
	}
	for _, p := range t.partitions() {
		b.daemon.Add(p)
	}
}

func (b *Broker) removeFromDaemon(t *topic) {
	if b.daemon == nil {
		return
	}
	for _, p := range t.partitions() {
		b.daemon.Remove(p)
	}
}

// retention is the topic's total retention, which the tiering daemon
// enforces on remote segments.
func (c TopicConfig) retention() tiering.Retention {
	return tiering.Retention{Age: msDuration(c.RetentionMs), Bytes: c.RetentionBytes}
}

// TierStatus reports the tiering state of every partition of a topic, or
// of every topic when name is empty.
func (b *Broker) TierStatus(name string) ([]tiering.Status, error) {
	var ts []*topic
	if name != "" {
		t, err := b.topic(name)
		if err != nil {
			return nil, err
		}
		ts = []*topic{t}
	} else {
		b.mu.RLock()
		for _, t := range b.topics {
			ts = append(ts, t)
		}
		b.mu.RUnlock()
	}
	now := time.Now()
	var out []tiering.Status
	for _, t := range ts {
		for _, p := range t.partitions() {
			out = append(out, p.Status(now))
		}
	}
	return out, nil
}

// DiskStatus is the node's local disk use against its ceiling (zero with
// no bucket: then nothing is held back for upload and there is no ceiling).
func (b *Broker) DiskStatus() tiering.DiskStatus {
	if b.daemon == nil {
		return tiering.DiskStatus{}
	}
	return b.daemon.DiskStatus()
}

// CacheHitRate is the remote chunk cache's hit rate (0 with no bucket).
func (b *Broker) CacheHitRate() float64 {
	if b.cache == nil {
		return 0
	}
	return b.cache.HitRate()
}

// Tiering returns the tiering daemon (nil without a bucket), for tests and
// operator commands that want a pass now.
func (b *Broker) Tiering() *tiering.Daemon { return b.daemon }

// BucketName is the bucket's URL without secrets, or "" without tiering.
func (b *Broker) BucketName() string {
	if b.opts.Bucket == nil {
		return ""
	}
	return b.opts.Bucket.Name()
}

// PublicKey is the public key of the node's checkpoint signing key, or
// fails with tiering.ErrNotTiered on a node with no bucket.
func (b *Broker) PublicKey() (string, error) {
	if b.daemon == nil || b.daemon.PublicKey() == "" {
		return "", fmt.Errorf("broker: the node has no bucket (%w), so it signs no checkpoints", tiering.ErrNotTiered)
	}
	return b.daemon.PublicKey(), nil
}

// Prover makes proofs of a partition's history from the bucket (see
// tiering.Prover), on the partition's leader.
func (b *Broker) Prover(name string, partition int32) (*tiering.Prover, error) {
	p, err := b.Partition(name, partition)
	if err != nil {
		return nil, err
	}
	if err := b.CheckLeader(name, partition); err != nil {
		return nil, err
	}
	return p.Prover()
}
