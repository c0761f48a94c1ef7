package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/fileutil"
	"github.com/tierlog/tierlog/internal/partitioner"
	"github.com/tierlog/tierlog/tiering"
)

// Options configure a broker.
type Options struct {
	Dir        string      // data directory
	Defaults   TopicConfig // server-wide defaults for keys a topic does not set
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
	// MaxPartitions bounds a topic's partition count; 0 means 10000.
	MaxPartitions int32
	// Bucket is the cold tier; nil runs the node without tiering.
	Bucket cold.Bucket
	// Tiering configures the daemon (TmpDir, Logger and Registry are
	// filled in by the broker).
	Tiering tiering.DaemonOptions
	// Cache configures the remote reader's chunk cache and prefetch.
	Cache cold.ReaderOptions
	// CacheBytes is the chunk cache's budget (0: 256 MiB).
	CacheBytes int64
}

// Broker owns the topics of one node and their partition logs.
type Broker struct {
	opts    Options
	metrics *hot.Metrics
	// With a bucket: the store, the remote reader and the tiering daemon.
	store  *tiering.Store
	cache  *cold.ChunkCache
	reader *cold.Reader
	daemon *tiering.Daemon

	mu     sync.RWMutex
	topics map[string]*topic
	closed bool
}

type topic struct {
	name      string
	overrides map[string]string // what the topic sets; the rest follows the server defaults
	cfg       TopicConfig
	parts     []*tiering.Partition
	rr        atomic.Uint32 // round-robin for keyless records
}

// topicMeta is the persisted description of a topic (topic.json).
type topicMeta struct {
	Name       string            `json:"name"`
	Partitions int32             `json:"partitions"`
	Config     map[string]string `json:"config"`
	Created    time.Time         `json:"created"`
}

const topicMetaFile = "topic.json"

// Open opens every topic under opts.Dir, recovering each partition log.
// With a bucket it also claims the bucket prefix, restores topics recorded
// there when the data directory has none, and starts the tiering daemon.
func Open(ctx context.Context, opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxPartitions <= 0 {
		opts.MaxPartitions = 10000
	}
	if opts.Defaults == (TopicConfig{}) {
		opts.Defaults = DefaultTopicConfig()
	}
	if err := opts.Defaults.hotConfig(opts.Bucket != nil).Validate(); err != nil {
		return nil, fmt.Errorf("%w: server defaults: %v", ErrInvalidConfig, err)
	}
	b := &Broker{opts: opts, metrics: hot.NewMetrics(opts.Registerer), topics: map[string]*topic{}}
	if err := fileutil.MkdirAllDurable(b.topicsDir()); err != nil {
		return nil, fmt.Errorf("broker: data directory %s: %w", opts.Dir, err)
	}
	entries, err := os.ReadDir(b.topicsDir())
	if err != nil {
		return nil, err
	}
	if opts.Bucket != nil {
		if err := b.openTiering(ctx); err != nil {
			return nil, err
		}
		if len(entries) == 0 {
			// A node with no topics and a bucket that has some: restore them
			// (their partitions then restore from their manifests).
			if err := b.restoreTopics(ctx); err != nil {
				return nil, err
			}
			if entries, err = os.ReadDir(b.topicsDir()); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(b.topicsDir(), e.Name(), topicMetaFile))
		if errors.Is(err, os.ErrNotExist) {
			// A creation that crashed before its metadata landed: the topic
			// was never acknowledged, so it never existed.
			opts.Logger.Warn("removing incomplete topic directory", "dir", e.Name())
			os.RemoveAll(filepath.Join(b.topicsDir(), e.Name()))
			continue
		}
		if err != nil {
			b.Close()
			return nil, err
		}
		var m topicMeta
		if err := json.Unmarshal(raw, &m); err != nil {
			b.Close()
			return nil, fmt.Errorf("broker: %s/%s: %w", e.Name(), topicMetaFile, err)
		}
		t, err := b.openTopic(ctx, m)
		if err != nil {
			b.Close()
			return nil, err
		}
		b.topics[m.Name] = t
	}
	if b.daemon != nil {
		b.daemon.Start()
	}
	opts.Logger.Info("broker open", "dir", opts.Dir, "topics", len(b.topics), "bucket", bucketName(opts.Bucket))
	return b, nil
}

func bucketName(bk cold.Bucket) string {
	if bk == nil {
		return "none"
	}
	return bk.Name()
}

func (b *Broker) topicsDir() string { return filepath.Join(b.opts.Dir, "topics") }

func (b *Broker) topicDir(name string) string { return filepath.Join(b.topicsDir(), name) }

func (b *Broker) openTopic(ctx context.Context, m topicMeta) (*topic, error) {
	cfg, err := ParseTopicConfig(b.opts.Defaults, m.Config)
	if err != nil {
		return nil, fmt.Errorf("broker: topic %s: %w", m.Name, err)
	}
	t := &topic{name: m.Name, overrides: m.Config, cfg: cfg}
	for p := range m.Partitions {
		part, err := tiering.OpenPartition(ctx, b.partitionOptions(m.Name, p, cfg))
		if err != nil {
			t.close()
			return nil, fmt.Errorf("broker: topic %s partition %d: %w", m.Name, p, err)
		}
		t.parts = append(t.parts, part)
		if b.daemon != nil {
			b.daemon.Add(part)
		}
	}
	return t, nil
}

func (b *Broker) partitionOptions(name string, p int32, cfg TopicConfig) tiering.PartitionOptions {
	logger := b.opts.Logger.With("topic", name, "partition", p)
	return tiering.PartitionOptions{
		Dir: filepath.Join(b.topicDir(name), strconv.Itoa(int(p))), Topic: name, Partition: p,
		Hot:        cfg.hotConfig(b.store != nil),
		HotOptions: hot.Options{Logger: logger, Metrics: b.metrics, Topic: name, Partition: p},
		Store:      b.store, Reader: b.reader, Remote: cfg.RemoteStorageEnable, Retention: cfg.retention(),
		Logger: logger,
	}
}

func (t *topic) close() error {
	var errs []error
	for _, p := range t.parts {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ValidateTopicName applies Kafka's rules: 1-249 of [a-zA-Z0-9._-], not
// "." or "..".
func ValidateTopicName(name string) error {
	if !topicNameRE.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("%w: %q: use 1 to 249 characters from a-z A-Z 0-9 . _ - (not \".\" or \"..\")", ErrInvalidTopicName, name)
	}
	return nil
}

// CreateTopic creates a topic with the given partitions and config
// overrides. The topic exists once its metadata file is durable.
func (b *Broker) CreateTopic(name string, partitions int32, config map[string]string) (TopicInfo, error) {
	if err := ValidateTopicName(name); err != nil {
		return TopicInfo{}, err
	}
	if partitions < 1 || partitions > b.opts.MaxPartitions {
		return TopicInfo{}, fmt.Errorf("%w: %d partitions: valid range is 1 to %d", ErrInvalidPartition, partitions, b.opts.MaxPartitions)
	}
	if config == nil {
		config = map[string]string{}
	}
	cfg, err := ParseTopicConfig(b.opts.Defaults, config)
	if err != nil {
		return TopicInfo{}, err
	}
	if err := cfg.hotConfig(b.store != nil).Validate(); err != nil {
		return TopicInfo{}, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return TopicInfo{}, ErrClosed
	}
	if _, ok := b.topics[name]; ok {
		return TopicInfo{}, fmt.Errorf("%w: %s", ErrTopicExists, name)
	}
	m := topicMeta{Name: name, Partitions: partitions, Config: maps.Clone(config), Created: time.Now().UTC()}
	dir := b.topicDir(name)
	if err := fileutil.MkdirAllDurable(dir); err != nil {
		return TopicInfo{}, err
	}
	if b.store != nil {
		// The bucket learns of the topic first, so a node restored from the
		// bucket knows every topic that was ever acknowledged.
		if err := b.store.PutTopic(context.Background(), tiering.TopicMeta{Name: name, Partitions: partitions, Config: m.Config}); err != nil {
			return TopicInfo{}, fmt.Errorf("broker: record topic %s in %s: %w", name, b.store.Bucket.Name(), err)
		}
	}
	t, err := b.openTopic(context.Background(), m)
	if err != nil {
		os.RemoveAll(dir)
		return TopicInfo{}, err
	}
	if err := writeTopicMeta(dir, m); err != nil {
		b.removeFromDaemon(t)
		t.close()
		os.RemoveAll(dir)
		return TopicInfo{}, err
	}
	b.topics[name] = t
	b.opts.Logger.Info("topic created", "topic", name, "partitions", partitions, "config", config)
	return t.info(), nil
}

// DeleteTopic closes and removes a topic and all its data.
func (b *Broker) DeleteTopic(name string) error {
	b.mu.Lock()
	t, ok := b.topics[name]
	if ok {
		delete(b.topics, name)
	}
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	// Remove the metadata first: a crash mid-way leaves a directory without
	// topic.json, which Open cleans up, never a half-deleted live topic.
	if err := os.Remove(filepath.Join(b.topicDir(name), topicMetaFile)); err != nil {
		return err
	}
	if err := fileutil.SyncDir(b.topicDir(name)); err != nil {
		return err
	}
	b.removeFromDaemon(t)
	var errs []error
	for _, p := range t.parts {
		errs = append(errs, p.Delete())
	}
	errs = append(errs, os.RemoveAll(b.topicDir(name)), fileutil.SyncDir(b.topicsDir()))
	if b.store != nil {
		errs = append(errs, b.store.DeleteTopic(context.Background(), name, int32(len(t.parts))))
	}
	b.opts.Logger.Info("topic deleted", "topic", name)
	return errors.Join(errs...)
}

// PartitionInfo describes one partition.
type PartitionInfo struct {
	Partition              int32
	StartOffset, EndOffset int64
	Segments               int
	Bytes                  int64
}

// TopicInfo describes one topic: its partitions and every config value in
// effect (overrides and defaults).
type TopicInfo struct {
	Name       string
	Partitions []PartitionInfo
	Config     map[string]string
	// Overrides are the keys the topic sets itself.
	Overrides map[string]string
}

func (t *topic) info() TopicInfo {
	ti := TopicInfo{Name: t.name, Config: t.cfg.Map(), Overrides: maps.Clone(t.overrides)}
	for p, part := range t.parts {
		pi := PartitionInfo{Partition: int32(p), StartOffset: part.StartOffset(), EndOffset: part.EndOffset()}
		for _, s := range part.Log().Segments() {
			pi.Segments++
			pi.Bytes += s.Size
		}
		ti.Partitions = append(ti.Partitions, pi)
	}
	return ti
}

// Topics describes every topic, sorted by name.
func (b *Broker) Topics() []TopicInfo {
	b.mu.RLock()
	ts := slices.Collect(maps.Values(b.topics))
	b.mu.RUnlock()
	slices.SortFunc(ts, func(a, c *topic) int {
		if a.name < c.name {
			return -1
		}
		return 1
	})
	out := make([]TopicInfo, len(ts))
	for i, t := range ts {
		out[i] = t.info()
	}
	return out
}

// Topic describes one topic.
func (b *Broker) Topic(name string) (TopicInfo, error) {
	t, err := b.topic(name)
	if err != nil {
		return TopicInfo{}, err
	}
	return t.info(), nil
}

func (b *Broker) topic(name string) (*topic, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	t, ok := b.topics[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	return t, nil
}

// Partition returns a topic's partition.
func (b *Broker) Partition(name string, partition int32) (*tiering.Partition, error) {
	t, err := b.topic(name)
	if err != nil {
		return nil, err
	}
	if partition < 0 || int(partition) >= len(t.parts) {
		return nil, fmt.Errorf("%w: topic %s has partitions 0 to %d, not %d", ErrInvalidPartition, name, len(t.parts)-1, partition)
	}
	return t.parts[partition], nil
}

// PickPartition chooses a partition the way Kafka's default partitioner
// does: murmur2 of the key, or round-robin for records without a key.
func (b *Broker) PickPartition(name string, key []byte) (int32, error) {
	t, err := b.topic(name)
	if err != nil {
		return 0, err
	}
	n := int32(len(t.parts))
	if key != nil {
		return partitioner.ForKey(key, n), nil
	}
	return int32((t.rr.Add(1) - 1) % uint32(n)), nil
}

// Append appends one batch to a partition; see hot.Log.Append for what the
// result promises.
func (b *Broker) Append(name string, partition int32, batch []byte) (hot.AppendResult, error) {
	p, err := b.Partition(name, partition)
	if err != nil {
		return hot.AppendResult{}, err
	}
	return p.Append(batch)
}

// Fetch reads whole batches from the batch containing offset, from the hot
// tier or, below the local log start, from the bucket.
func (b *Broker) Fetch(ctx context.Context, name string, partition int32, offset int64, maxBytes int) (hot.FetchResult, error) {
	p, err := b.Partition(name, partition)
	if err != nil {
		return hot.FetchResult{}, err
	}
	return p.Read(ctx, offset, maxBytes)
}

// OffsetForTime returns the first offset whose batch has a timestamp >= ts
// (Unix ms), or the end offset if none.
func (b *Broker) OffsetForTime(ctx context.Context, name string, partition int32, ts int64) (int64, error) {
	p, err := b.Partition(name, partition)
	if err != nil {
		return 0, err
	}
	return p.OffsetForTime(ctx, ts)
}

// Offsets returns a partition's log start (remote or local) and end offsets.
func (b *Broker) Offsets(name string, partition int32) (start, end int64, err error) {
	p, err := b.Partition(name, partition)
	if err != nil {
		return 0, 0, err
	}
	return p.StartOffset(), p.EndOffset(), nil
}

// Wait blocks until the partition's end offset is past offset or ctx ends.
func (b *Broker) Wait(ctx context.Context, name string, partition int32, offset int64) error {
	p, err := b.Partition(name, partition)
	if err != nil {
		return err
	}
	return p.Wait(ctx, offset)
}

// Close stops the tiering daemon and closes every partition log (fsyncing
// and sealing what is pending).
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	ts := b.topics
	b.mu.Unlock()
	if b.daemon != nil {
		b.daemon.Close()
	}
	var errs []error
	for _, t := range ts {
		errs = append(errs, t.close())
	}
	if b.reader != nil {
		errs = append(errs, b.reader.Close())
		b.cache.Close()
	}
	if b.opts.Bucket != nil {
		errs = append(errs, b.opts.Bucket.Close())
	}
	b.opts.Logger.Info("broker closed")
	return errors.Join(errs...)
}
