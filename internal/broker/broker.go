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

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/fileutil"
	"github.com/tierlog/tierlog/internal/partitioner"
)

// Options configure a broker.
type Options struct {
	Dir        string      // data directory
	Defaults   TopicConfig // server-wide defaults for keys a topic does not set
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
	// MaxPartitions bounds a topic's partition count; 0 means 10000.
	MaxPartitions int32
}

// Broker owns the topics of one node and their partition logs.
type Broker struct {
	opts    Options
	metrics *hot.Metrics

	mu     sync.RWMutex
	topics map[string]*topic
	closed bool
}

type topic struct {
	name      string
	overrides map[string]string // what the topic sets; the rest follows the server defaults
	cfg       TopicConfig
	logs      []*hot.Log
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
func Open(opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxPartitions <= 0 {
		opts.MaxPartitions = 10000
	}
	if opts.Defaults == (TopicConfig{}) {
		opts.Defaults = DefaultTopicConfig()
	}
	if err := opts.Defaults.hotConfig().Validate(); err != nil {
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
		t, err := b.openTopic(m)
		if err != nil {
			b.Close()
			return nil, err
		}
		b.topics[m.Name] = t
	}
	opts.Logger.Info("broker open", "dir", opts.Dir, "topics", len(b.topics))
	return b, nil
}

func (b *Broker) topicsDir() string { return filepath.Join(b.opts.Dir, "topics") }

func (b *Broker) topicDir(name string) string { return filepath.Join(b.topicsDir(), name) }

func (b *Broker) openTopic(m topicMeta) (*topic, error) {
	cfg, err := ParseTopicConfig(b.opts.Defaults, m.Config)
	if err != nil {
		return nil, fmt.Errorf("broker: topic %s: %w", m.Name, err)
	}
	t := &topic{name: m.Name, overrides: m.Config, cfg: cfg}
	for p := range m.Partitions {
		l, err := hot.Open(filepath.Join(b.topicDir(m.Name), strconv.Itoa(int(p))), cfg.hotConfig(), hot.Options{
			Logger: b.opts.Logger.With("topic", m.Name, "partition", p), Metrics: b.metrics, Topic: m.Name, Partition: p,
		})
		if err != nil {
			for _, l := range t.logs {
				l.Close()
			}
			return nil, fmt.Errorf("broker: topic %s partition %d: %w", m.Name, p, err)
		}
		t.logs = append(t.logs, l)
	}
	return t, nil
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
	if err := cfg.hotConfig().Validate(); err != nil {
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
	t, err := b.openTopic(m)
	if err != nil {
		os.RemoveAll(dir)
		return TopicInfo{}, err
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := fileutil.WriteFileAtomic(filepath.Join(dir, topicMetaFile), raw, 0o644); err != nil {
		for _, l := range t.logs {
			l.Close()
		}
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
	var errs []error
	for _, l := range t.logs {
		errs = append(errs, l.Delete())
	}
	errs = append(errs, os.RemoveAll(b.topicDir(name)), fileutil.SyncDir(b.topicsDir()))
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
	for p, l := range t.logs {
		pi := PartitionInfo{Partition: int32(p), StartOffset: l.StartOffset(), EndOffset: l.EndOffset()}
		for _, s := range l.Segments() {
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

// Log returns a partition's log.
func (b *Broker) Log(name string, partition int32) (*hot.Log, error) {
	t, err := b.topic(name)
	if err != nil {
		return nil, err
	}
	if partition < 0 || int(partition) >= len(t.logs) {
		return nil, fmt.Errorf("%w: topic %s has partitions 0 to %d, not %d", ErrInvalidPartition, name, len(t.logs)-1, partition)
	}
	return t.logs[partition], nil
}

// PickPartition chooses a partition the way Kafka's default partitioner
// does: murmur2 of the key, or round-robin for records without a key.
func (b *Broker) PickPartition(name string, key []byte) (int32, error) {
	t, err := b.topic(name)
	if err != nil {
		return 0, err
	}
	n := int32(len(t.logs))
	if key != nil {
		return partitioner.ForKey(key, n), nil
	}
	return int32((t.rr.Add(1) - 1) % uint32(n)), nil
}

// Append appends one batch to a partition; see hot.Log.Append for what the
// result promises.
func (b *Broker) Append(name string, partition int32, batch []byte) (hot.AppendResult, error) {
	l, err := b.Log(name, partition)
	if err != nil {
		return hot.AppendResult{}, err
	}
	return l.Append(batch)
}

// Fetch reads whole batches from the batch containing offset.
func (b *Broker) Fetch(name string, partition int32, offset int64, maxBytes int) (hot.FetchResult, error) {
	l, err := b.Log(name, partition)
	if err != nil {
		return hot.FetchResult{}, err
	}
	return l.Read(offset, maxBytes)
}

// OffsetForTime returns the first offset whose batch has a timestamp >= ts
// (Unix ms), or the end offset if none.
func (b *Broker) OffsetForTime(name string, partition int32, ts int64) (int64, error) {
	l, err := b.Log(name, partition)
	if err != nil {
		return 0, err
	}
	return l.OffsetForTime(ts)
}

// Offsets returns a partition's log start and end offsets.
func (b *Broker) Offsets(name string, partition int32) (start, end int64, err error) {
	l, err := b.Log(name, partition)
	if err != nil {
		return 0, 0, err
	}
	return l.StartOffset(), l.EndOffset(), nil
}

// Wait blocks until the partition's end offset is past offset or ctx ends.
func (b *Broker) Wait(ctx context.Context, name string, partition int32, offset int64) error {
	l, err := b.Log(name, partition)
	if err != nil {
		return err
	}
	return l.Wait(ctx, offset)
}

// Close closes every partition log (fsyncing and sealing what is pending).
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	ts := b.topics
	b.mu.Unlock()
	var errs []error
	for _, t := range ts {
		for _, l := range t.logs {
			errs = append(errs, l.Close())
		}
	}
	b.opts.Logger.Info("broker closed")
	return errors.Join(errs...)
}
