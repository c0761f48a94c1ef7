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

	"github.com/tierlog/tierlog/broker/groups"
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
	// MaxPartitions bounds a topic's partition count; 0 means 10000 (or
	// MaxNodePartitions if lower).
	MaxPartitions int32
	// MaxNodePartitions bounds the partitions of all topics on this node
	// together (each holds open files and memory); 0 means
	// DefaultMaxNodePartitions. A create past it is refused.
	MaxNodePartitions int
	// DeleteRetryInterval is how often a topic deletion the bucket did not
	// complete is retried in the background; 0 means 10s.
	DeleteRetryInterval time.Duration
	// Bucket is the cold tier; nil runs the node without tiering.
	Bucket cold.Bucket
	// Takeover claims the bucket prefix even if another node owns it,
	// fencing that node off (tiering.StoreOptions.Takeover).
	Takeover bool
	// Tiering configures the daemon (TmpDir, Logger and Registry are
	// filled in by the broker). Its LocalDiskMaxBytes is the node's
	// local-disk ceiling: 0 means tiering.DefaultLocalDiskMax of Dir, -1 none.
	Tiering tiering.DaemonOptions
	// SigningKey is the file of the node's Ed25519 key that signs the
	// partitions' checkpoints (created, mode 0600, if missing; its public
	// key is written to the bucket). Empty: Dir/signing.key.
	SigningKey string
	// Cache configures the remote reader's chunk cache and prefetch.
	Cache cold.ReaderOptions
	// CacheBytes is the chunk cache's budget (0: 256 MiB).
	CacheBytes int64
	// Groups configures the consumer-group coordinator (Dir, Logger and
	// Registerer are filled in by the broker).
	Groups groups.Options
	// GroupsCopyInterval is how often the committed group offsets are
	// copied to the bucket when they changed (0: 30 s); see groupcopy.go
	// for what survives what.
	GroupsCopyInterval time.Duration
	// Cluster makes the broker a node of a replicated cluster (nil: a
	// single node).
	Cluster *ClusterOptions
	// OpenFile opens the partition logs' segment files (nil: os.OpenFile);
	// tests inject slow or failing fsyncs through it.
	OpenFile hot.OpenFileFunc
}

// Broker owns the topics of one node and their partition logs.
type Broker struct {
	opts    Options
	metrics *hot.Metrics
	sched   *hot.Scheduler // runs every partition log's background work
	// With a bucket: the store, the remote reader and the tiering daemon.
	store  *tiering.Store
	cache  *cold.ChunkCache
	reader *cold.Reader
	daemon *tiering.Daemon

	groups *groups.Coordinator
	gcopy  *groupCopy // copies of the group offsets to the bucket

	lock *dirLock // the data directory's, held until Close
	// clusterID names the node's data for Kafka clients (see ClusterID).
	clusterID string
	// pids hands out idempotent producers' ids (producerid.go).
	pids *producerIDs
	// rm keeps the partitions in their cluster roles (nil: a single node).
	rm *replicaManager

	// mu guards the maps and closed, and is held only for map updates:
	// never across bucket requests or bulk file I/O, which appends and
	// fetches would otherwise wait for (they take it to find a partition).
	mu     sync.RWMutex
	topics map[string]*topic
	// pending reserves the names of topics being created or deleted, so
	// create and delete of one name are serialised end to end while the
	// slow part of each runs without mu.
	pending map[string]*pendingTopic
	adding  int // partitions AddPartitions calls are opening
	closed  bool
	ctx     context.Context // cancelled by Close: ends bucket retries of lifecycle work
	cancel  context.CancelFunc
	ops     sync.WaitGroup // creates and deletes in flight and the deletion retrier
}

// DefaultMaxNodePartitions is the node's partition limit when
// Options.MaxNodePartitions is 0.
const DefaultMaxNodePartitions = 10000

type topic struct {
	name     string
	created  time.Time
	rf       int                           // replication factor (0 or 1: not replicated)
	id       string                        // the cluster's topic id ("" for a single node)
	settings atomic.Pointer[topicSettings] // replaced whole by AlterTopicConfig
	// parts is replaced whole (copy on write) by AddPartitions, so
	// appends and fetches read it without a lock.
	parts atomic.Pointer[[]*tiering.Partition]
	rr    atomic.Uint32 // round-robin for keyless records

	// metaMu serialises the writers of the topic's metadata (topic.json
	// and the bucket's topic record): AlterTopicConfig, and DeleteTopic's
	// tombstone. Appends and fetches never take it.
	metaMu  sync.Mutex
	deleted bool // guarded by metaMu: DeleteTopic has begun; alters refuse
}

// topicSettings is a topic's configuration as one immutable value.
type topicSettings struct {
	overrides map[string]string // what the topic sets; the rest follows the server defaults
	cfg       TopicConfig
}

// topicMeta is the persisted description of a topic (topic.json).
type topicMeta struct {
	Name       string            `json:"name"`
	Partitions int32             `json:"partitions"`
	Config     map[string]string `json:"config"`
	// Created is when the topic was created; zero for a topic restored
	// from a bucket record that did not say.
	Created time.Time `json:"created"`
	// State is empty for a live topic. A topic.json saying "creating" or
	// "deleting" is a topic that never was acknowledged or is being
	// deleted: open finishes deleting it, locally and in the bucket.
	State string `json:"state,omitempty"`
	// BucketStale is set while the bucket's topic record may differ from
	// Config (an alter between its two writes, or one whose bucket write
	// failed perhaps after landing): open writes the record again.
	BucketStale bool `json:"bucket_stale,omitempty"`
	// ReplicationFactor and ID are the cluster's (cluster mode); 0 and ""
	// for a single node's topic, which has one replica.
	ReplicationFactor int    `json:"replication_factor,omitempty"`
	ID                string `json:"id,omitempty"`
}

const (
	stateCreating = "creating"
	stateDeleting = "deleting"
)

const topicMetaFile = "topic.json"

// restoreMarkerFile, in the data directory, says a restore of topics from
// the bucket began and has not finished.
const restoreMarkerFile = "restore-in-progress"

// Open opens every topic under opts.Dir, recovering each partition log.
// It locks the data directory first: a second broker on it fails with
// ErrDirLocked. With a bucket it also claims the bucket prefix, restores
// topics recorded there when the data directory has none, and starts the
// tiering daemon. Deletions cut short are resumed in the background.
func Open(ctx context.Context, opts Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxNodePartitions <= 0 {
		opts.MaxNodePartitions = DefaultMaxNodePartitions
	}
	if opts.MaxPartitions <= 0 {
		opts.MaxPartitions = 10000
	}
	opts.MaxPartitions = int32(min(int(opts.MaxPartitions), opts.MaxNodePartitions))
	if opts.DeleteRetryInterval <= 0 {
		opts.DeleteRetryInterval = 10 * time.Second
	}
	if opts.GroupsCopyInterval <= 0 {
		opts.GroupsCopyInterval = 30 * time.Second
	}
	if opts.Defaults == (TopicConfig{}) {
		opts.Defaults = DefaultTopicConfig()
	}
	if err := opts.Defaults.hotConfig(opts.Bucket != nil).Validate(); err != nil {
		return nil, fmt.Errorf("%w: server defaults: %v", ErrInvalidConfig, err)
	}
	if err := fileutil.MkdirAllDurable(opts.Dir); err != nil {
		return nil, fmt.Errorf("broker: data directory %s: %w", opts.Dir, err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	b := &Broker{opts: opts, metrics: hot.NewMetrics(opts.Registerer), topics: map[string]*topic{},
		pending: map[string]*pendingTopic{}, lock: lock, sched: hot.NewScheduler(hot.SchedulerOptions{}),
		gcopy: newGroupCopy(opts.Registerer)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if err := b.open(ctx); err != nil {
		b.abortOpen()
		b.cancel()
		b.gcopy.stop()
		lock.release()
		return nil, err
	}
	if opts.Cluster != nil {
		b.rm = newReplicaManager(b, *opts.Cluster)
		b.rm.start()
	}
	return b, nil
}

func (b *Broker) open(ctx context.Context) error {
	opts := b.opts
	var err error
	if opts.Cluster != nil {
		// The cluster names the node's data (and the bucket prefix it
		// shares with the other nodes): wait for the controller to have
		// named it.
		if b.clusterID, err = waitClusterID(ctx, opts.Cluster.Node); err != nil {
			return err
		}
	} else if opts.Bucket == nil {
		// With a bucket the tiering store's cluster id names the node's
		// data (it follows a restore); without one, a local id does.
		if b.clusterID, err = loadClusterID(opts.Dir); err != nil {
			return err
		}
	}
	if b.pids, err = loadProducerIDs(opts.Dir, time.Now()); err != nil {
		return err
	}
	if err := fileutil.MkdirAllDurable(b.topicsDir()); err != nil {
		return fmt.Errorf("broker: data directory %s: %w", opts.Dir, err)
	}
	entries, err := os.ReadDir(b.topicsDir())
	if err != nil {
		return err
	}
	marker := filepath.Join(opts.Dir, restoreMarkerFile)
	restoring := false
	if opts.Bucket != nil {
		if err := b.openTiering(ctx); err != nil {
			return err
		}
		_, statErr := os.Stat(marker)
		// A cluster node's topics are the cluster's (reconcile.go), and a
		// wiped replica's partitions read their history from the shared
		// manifests: nothing to restore.
		if opts.Cluster == nil && (len(entries) == 0 || statErr == nil) {
			restoring = true
			// A node with no topics and a bucket that has some: restore them
			// (their partitions then restore from their manifests). The
			// marker makes a restore cut short resume at the next open:
			// the topics it recorded locally no longer leave the directory
			// empty.
			if err := fileutil.WriteFileAtomic(marker, nil, 0o644); err != nil {
				return fmt.Errorf("broker: data directory %s: %w", opts.Dir, err)
			}
			if err := b.restoreTopics(ctx); err != nil {
				return err
			}
			if err := b.restoreGroupOffsets(ctx); err != nil {
				return err
			}
			if entries, err = os.ReadDir(b.topicsDir()); err != nil {
				return err
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
			// was never acknowledged, and nothing of it reached the bucket.
			opts.Logger.Warn("removing incomplete topic directory", "dir", e.Name())
			os.RemoveAll(filepath.Join(b.topicsDir(), e.Name()))
			continue
		}
		if err != nil {
			return err
		}
		var m topicMeta
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("broker: %s/%s: %w", e.Name(), topicMetaFile, err)
		}
		if m.State != "" {
			// Deleted, or created and never acknowledged: finish deleting it.
			opts.Logger.Info("resuming deletion of topic", "topic", m.Name, "state", m.State)
			b.pending[m.Name] = &pendingTopic{deleting: true, meta: m}
			continue
		}
		t, err := b.openTopic(ctx, m, false)
		if err != nil {
			return err
		}
		if m.BucketStale && b.store != nil {
			if err := b.putTopicRecord(ctx, m); err != nil {
				opts.Logger.Warn("topic record in the bucket may be stale; the next open retries", "topic", m.Name, "err", err)
			}
		}
		b.topics[m.Name] = t
		b.addToDaemon(t)
	}
	for _, t := range b.topics {
		for _, p := range t.partitions() {
			b.pids.raiseAbove(b.producerCounterAbove(p.Log().MaxProducerID()))
		}
	}
	if err := b.openGroups(); err != nil {
		return err
	}
	if restoring {
		// The marker goes once the restored offsets are revised against
		// the restored topics: a crash before revises them again.
		if err := b.reviseRestoredOffsets(); err != nil {
			return err
		}
		if err := errors.Join(os.Remove(marker), fileutil.SyncDir(opts.Dir)); err != nil {
			return fmt.Errorf("broker: data directory %s: %w", opts.Dir, err)
		}
	}
	if b.daemon != nil {
		b.daemon.Start()
	}
	b.ops.Add(1)
	go b.retryDeletions()
	if b.store != nil && opts.Cluster == nil {
		b.ops.Add(1)
		go b.copyGroupOffsetsLoop()
	}
	opts.Logger.Info("broker open", "dir", opts.Dir, "topics", len(b.topics), "bucket", bucketName(opts.Bucket))
	return nil
}

// abortOpen closes what a failed open opened. The daemon has not started
// and the bucket stays the caller's to close.
func (b *Broker) abortOpen() {
	if b.groups != nil {
		b.groups.Close()
	}
	for _, t := range b.topics {
		t.close()
	}
	b.sched.Close()
	if b.reader != nil {
		b.reader.Close()
		b.cache.Close()
	}
}

func bucketName(bk cold.Bucket) string {
	if bk == nil {
		return "none"
	}
	return bk.Name()
}

func (b *Broker) topicsDir() string { return filepath.Join(b.opts.Dir, "topics") }

func (b *Broker) topicDir(name string) string { return filepath.Join(b.topicsDir(), name) }

// openTopic opens every partition of a topic; isNew says the topic is
// being created, so its partitions need not look for history in the bucket.
func (b *Broker) openTopic(ctx context.Context, m topicMeta, isNew bool) (*topic, error) {
	cfg, err := ParseTopicConfig(b.opts.Defaults, m.Config)
	if err != nil {
		return nil, fmt.Errorf("broker: topic %s: %w", m.Name, err)
	}
	t := &topic{name: m.Name, created: m.Created, rf: m.ReplicationFactor, id: m.ID}
	t.settings.Store(&topicSettings{overrides: m.Config, cfg: cfg})
	parts, err := b.openPartitions(ctx, t, 0, m.Partitions, cfg, isNew)
	if err != nil {
		return nil, err
	}
	t.parts.Store(&parts)
	return t, nil
}

// openPartitions opens partitions from to to-1 of a topic; on an error it
// closes those it opened.
func (b *Broker) openPartitions(ctx context.Context, t *topic, from, to int32, cfg TopicConfig, isNew bool) ([]*tiering.Partition, error) {
	name := t.name
	var parts []*tiering.Partition
	for p := from; p < to; p++ {
		po := b.partitionOptions(name, p, cfg)
		// A replicated partition's readers see only what every in-sync
		// replica holds (the high watermark), not its log end.
		po.HotOptions.Replicated = t.rf > 1 && b.opts.Cluster != nil
		po.New = isNew
		part, err := tiering.OpenPartition(ctx, po)
		if err != nil {
			closeAll(parts)
			return nil, fmt.Errorf("broker: topic %s partition %d: %w", name, p, err)
		}
		parts = append(parts, part)
	}
	return parts, nil
}

// partitions is the topic's partitions now (never modified in place).
func (t *topic) partitions() []*tiering.Partition {
	if p := t.parts.Load(); p != nil {
		return *p
	}
	return nil
}

func (b *Broker) partitionOptions(name string, p int32, cfg TopicConfig) tiering.PartitionOptions {
	// hot and tiering add topic and partition to their own lines.
	logger := b.opts.Logger
	return tiering.PartitionOptions{
		Dir: filepath.Join(b.topicDir(name), strconv.Itoa(int(p))), Topic: name, Partition: p,
		Hot:        cfg.hotConfig(b.store != nil),
		HotOptions: hot.Options{Logger: logger, Metrics: b.metrics, Topic: name, Partition: p, Scheduler: b.sched, OpenFile: b.opts.OpenFile},
		Store:      b.store, Reader: b.reader, Remote: cfg.RemoteStorageEnable, Retention: cfg.retention(),
		LocalMaxBytes: cfg.LocalDiskMaxBytes, ObjectLock: cfg.objectLock(), Logger: logger,
	}
}

func (t *topic) close() error { return closeAll(t.partitions()) }

func closeAll(parts []*tiering.Partition) error {
	var errs []error
	for _, p := range parts {
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

// TopicDefaults is the server's topic config: what a topic gets for every
// key it does not set.
func (b *Broker) TopicDefaults() TopicConfig { return b.opts.Defaults }

// PartitionInfo describes one partition.
type PartitionInfo struct {
	Partition              int32
	StartOffset, EndOffset int64
	// LeaderEpoch is the epoch the log stamps on appended batches.
	LeaderEpoch int32
	Segments    int
	Bytes       int64
}

// TopicInfo describes one topic: its partitions and every config value in
// effect (overrides and defaults).
type TopicInfo struct {
	Name       string
	Partitions []PartitionInfo
	Config     map[string]string
	// Overrides are the keys the topic sets itself.
	Overrides map[string]string
	// ReplicationFactor is the replicas of each partition (1 on a single
	// node).
	ReplicationFactor int
}

func (t *topic) info() TopicInfo {
	st := t.settings.Load()
	ti := TopicInfo{Name: t.name, Config: st.cfg.Map(), Overrides: maps.Clone(st.overrides), ReplicationFactor: max(t.rf, 1)}
	for p, part := range t.partitions() {
		pi := PartitionInfo{Partition: int32(p), StartOffset: part.StartOffset(), EndOffset: part.EndOffset(),
			LeaderEpoch: part.Log().LeaderEpoch()}
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
	parts := t.partitions()
	if partition < 0 || int(partition) >= len(parts) {
		return nil, fmt.Errorf("%w: topic %s has partitions 0 to %d, not %d", ErrInvalidPartition, name, len(parts)-1, partition)
	}
	return parts[partition], nil
}

// PickPartition chooses a partition the way Kafka's default partitioner
// does: murmur2 of the key, or round-robin for records without a key.
func (b *Broker) PickPartition(name string, key []byte) (int32, error) {
	t, err := b.topic(name)
	if err != nil {
		return 0, err
	}
	n := int32(len(t.partitions()))
	if key != nil {
		return partitioner.ForKey(key, n), nil
	}
	return int32((t.rr.Add(1) - 1) % uint32(n)), nil
}

// Append appends one batch to a partition and waits for the flush
// policy's promise (acks=1 in a cluster: the leader's); see hot.Log.Append
// for what the result promises. Front ends that pipeline use AppendAcks.
func (b *Broker) Append(name string, partition int32, batch []byte) (hot.AppendResult, error) {
	pa, _, err := b.AppendAcks(name, partition, batch, 1)
	if err != nil {
		return hot.AppendResult{}, err
	}
	return pa.Wait()
}

// Fetch reads whole batches from the batch containing offset, from the hot
// tier or, below the local log start, from the bucket.
func (b *Broker) Fetch(ctx context.Context, name string, partition int32, offset int64, maxBytes int) (hot.FetchResult, error) {
	p, err := b.Partition(name, partition)
	if err != nil {
		return hot.FetchResult{}, err
	}
	if err := b.CheckLeader(name, partition); err != nil {
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
	if err := b.CheckLeader(name, partition); err != nil {
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
	if err := b.CheckLeader(name, partition); err != nil {
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
	if err := b.CheckLeader(name, partition); err != nil {
		return err
	}
	return p.Wait(ctx, offset)
}

// Close stops the tiering daemon and closes every partition log (fsyncing
// and sealing what is pending). Creates and deletes in flight are cut
// short (their bucket retries end) and waited for; a deletion left
// unfinished resumes at the next open. The data directory is unlocked last.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	if b.rm != nil {
		// Roles end first: no follower appends or leader loop outlives
		// the logs they use.
		b.rm.close()
	}
	b.cancel()
	b.gcopy.stop()
	b.ops.Wait()
	errs := []error{b.groups.Close()}
	b.mu.RLock()
	ts := b.topics
	b.mu.RUnlock()
	if b.daemon != nil {
		b.daemon.Close()
	}
	for _, t := range ts {
		errs = append(errs, t.close())
	}
	errs = append(errs, b.sched.Close())
	if b.reader != nil {
		errs = append(errs, b.reader.Close())
		b.cache.Close()
	}
	if b.opts.Bucket != nil {
		errs = append(errs, b.opts.Bucket.Close())
	}
	b.lock.release()
	b.opts.Logger.Info("broker closed")
	return errors.Join(errs...)
}
