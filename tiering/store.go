package tiering

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// Key layout in the bucket (relative to the bucket URL's prefix):
//
//	cluster.json                                   identity marker: which cluster owns the prefix
//	topics/<topic>.json                            topic metadata (partitions, config overrides)
//	<hh>/<topic>/<partition>/manifest-<version>.json   manifest copies (20-digit version)
//	<hh>/<topic>/<partition>/<base>-<epoch>-<id>.seg   segment objects (20-digit base offset)
//	groups/offsets                                 the consumer groups' committed offsets (groupoffsets.go)
//
// <hh> is 4 hex digits of SHA-256("<topic>/<partition>"): S3 scales request
// rates per key prefix, so partitions spread over many prefixes instead of
// sharing one.

const (
	clusterMarkerKey = "cluster.json"
	topicsPrefix     = "topics/"
	clusterIDFile    = "cluster-id"
)

// PartitionPrefix is the key prefix of a partition's objects, ending in "/".
func PartitionPrefix(topic string, partition int32) string {
	h := sha256.Sum256([]byte(topic + "/" + strconv.Itoa(int(partition))))
	return fmt.Sprintf("%s/%s/%d/", hex.EncodeToString(h[:2]), topic, partition)
}

func segmentKey(topic string, partition int32, base int64, epoch int32, id string) string {
	return fmt.Sprintf("%s%020d-%d-%s.seg", PartitionPrefix(topic, partition), base, epoch, id)
}

func manifestKey(topic string, partition int32, version int64) string {
	return fmt.Sprintf("%s%020d.json", manifestKeyPrefix(topic, partition), version)
}

// manifestKeyPrefix is what the keys of a partition's manifest copies
// begin with.
func manifestKeyPrefix(topic string, partition int32) string {
	return PartitionPrefix(topic, partition) + "manifest-"
}

// parseManifestKey returns the version of a manifest copy's key.
func parseManifestKey(key string) (int64, bool) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	v, ok := strings.CutPrefix(name, "manifest-")
	if !ok {
		return 0, false
	}
	v, ok = strings.CutSuffix(v, ".json")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TopicMeta is what the bucket records of a topic, so a node that lost its
// disk can recreate it.
type TopicMeta struct {
	Name       string            `json:"name"`
	Partitions int32             `json:"partitions"`
	Config     map[string]string `json:"config"`
	// Created is when the topic was created (zero in records written
	// before it was recorded). A restore drops the committed offsets older
	// than it: they belong to a deleted topic of the same name.
	Created time.Time `json:"created,omitzero"`
	// Deleting is the tombstone of a topic whose deletion started: a
	// restore must finish deleting it (DeleteTopic), never bring it back.
	Deleting bool `json:"deleting,omitempty"`
}

// Store is the bucket as the tiering layer sees it: identity, topic
// metadata, manifests and segment objects.
type Store struct {
	// Bucket writes only while this node owns the prefix: its uploads
	// and deletes fail with ErrFenced once another node took it over.
	Bucket    cold.Bucket
	ClusterID string
	owner     *ownership
	// tiles is Bucket for the Merkle tree's tile writes (see tileBucket).
	tiles cold.Bucket
	// shared: the prefix is a cluster's (StoreOptions.Shared); topicWriter
	// says whether this node writes the topic records (SetTopicWriter).
	shared      bool
	topicWriter atomic.Bool

	// groupsMu serialises PutGroupOffsets; groupsETag is the ETag of the
	// group offsets' copy as this node last wrote it ("": read it first).
	groupsMu   sync.Mutex
	groupsETag string

	// logger and keptVersions report what purgeAll leaves in the bucket
	// (OpenStore sets them; a Store without them reports nothing).
	logger       *slog.Logger
	keptVersions prometheus.Counter
	// versioningSeen: the bucket's versioning as deletions found it.
	versioningSeen versioningSeen
}

// Fenced returns nil while this node owns the bucket prefix, and the
// reason (wrapping ErrFenced) once another node took it over.
func (s *Store) Fenced() error {
	if s.owner == nil {
		return nil
	}
	return s.owner.isFenced()
}

// OpenStore claims the bucket prefix for this node (see owner.go) and for
// the cluster whose id is kept in dataDir (creating one for a new
// cluster). A prefix owned by a different cluster is refused, so two
// clusters never write one prefix; a prefix owned by another node of the
// cluster is refused unless opts.Takeover. A fresh data directory adopts
// the cluster id it finds in the bucket: that is a node restoring its
// history from the bucket, which needs opts.Takeover if the prefix has an
// owner. Reads and writes of the marker are retried like every request.
func OpenStore(ctx context.Context, b cold.Bucket, dataDir string, opts StoreOptions) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Shared {
		s, err := openShared(ctx, b, dataDir, opts)
		if err != nil {
			return nil, err
		}
		s.observe(opts)
		return s, nil
	}
	idPath := filepath.Join(dataDir, clusterIDFile)
	local := ""
	if raw, err := os.ReadFile(idPath); err == nil {
		local = strings.TrimSpace(string(raw))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	node, err := nodeID(dataDir)
	if err != nil {
		return nil, fmt.Errorf("tiering: node id in %s: %w", dataDir, err)
	}
	host, _ := os.Hostname()
	abs, _ := filepath.Abs(dataDir)
	o := &ownership{b: b, logger: opts.Logger, me: ownerRecord{NodeID: node, Host: host, PID: os.Getpid(), DataDir: abs}}
	if opts.ClaimTimeout <= 0 {
		opts.ClaimTimeout = 2 * time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, opts.ClaimTimeout)
	cluster, err := o.claim(cctx, local, dataDir, opts.Takeover)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, fmt.Errorf("tiering: claim the prefix of %s: no answer within %v: %w", b.Name(), opts.ClaimTimeout, err)
	}
	if err != nil {
		return nil, err
	}
	if local == "" {
		// Only a new or restoring node records its id; a restart has it.
		if err := fileutil.WriteFileAtomic(idPath, []byte(cluster+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	registerOwnerMetrics(opts.Registerer, o)
	s := &Store{Bucket: o.bucket(), ClusterID: cluster, owner: o, tiles: tileBucket{ownedBucket{Bucket: o.b, o: o}}}
	s.observe(opts)
	return s, nil
}

// observe gives the store opts' logger and its metrics.
func (s *Store) observe(opts StoreOptions) {
	s.logger = opts.Logger
	s.keptVersions = promauto.With(opts.Registerer).NewCounter(prometheus.CounterOpts{
		Name: "tierlog_tiering_locked_versions_left_total",
		Help: "Object versions a deletion that nothing retries (a topic's, superseded partial tiles) left in the bucket, behind a delete marker, because the bucket refused to delete them: Object Lock retention or legal hold (on S3, also credentials without s3:DeleteObjectVersion). README, WORM retention, says how to remove them.",
	})
}

func (s *Store) putJSON(ctx context.Context, key string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = s.Bucket.Upload(ctx, key, bytes.NewReader(raw), int64(len(raw)))
	return err
}

func (s *Store) getJSON(ctx context.Context, key string, v any) error {
	rc, err := s.Bucket.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// PutTopic records a topic's metadata in the bucket. On a shared prefix
// only the topic writer writes (SetTopicWriter); on other nodes it does
// nothing.
func (s *Store) PutTopic(ctx context.Context, t TopicMeta) error {
	if !s.writesTopics() {
		return nil
	}
	return retry(ctx, func() error { return s.putJSON(ctx, topicsPrefix+t.Name+".json", t) })
}

// DeleteTopic removes a topic's metadata and every object of its
// partitions from the bucket, every version of each on a versioned bucket
// (see versions.go). It first turns the topic's record into a tombstone,
// so a deletion cut short (bucket down, node crashed or lost its disk) is
// finished by whoever reads the record next instead of restoring the
// topic; the record goes last, once nothing of the topic is left.
// Calling it again after a failure resumes it. On a shared prefix only the
// topic writer deletes (SetTopicWriter); on other nodes it does nothing.
//
// A version the bucket refuses to delete (Object Lock) does not fail the
// deletion, which could then never finish, nor keep the topic's name
// from being used again until its date: it stays behind a delete marker,
// so nothing that lists keys sees it, and is logged and counted
// (purgeAll) for an operator to remove after its date (README, WORM
// retention). Nothing retries it: the topic and its partitions are gone.
func (s *Store) DeleteTopic(ctx context.Context, name string, partitions int32) error {
	if !s.writesTopics() {
		return nil
	}
	tomb := TopicMeta{Name: name, Partitions: partitions, Deleting: true}
	if err := retry(ctx, func() error { return s.putJSON(ctx, topicsPrefix+name+".json", tomb) }); err != nil {
		return fmt.Errorf("tiering: mark topic %s deleted in %s: %w", name, s.Bucket.Name(), err)
	}
	prefixes := make([]string, partitions)
	for p := range partitions {
		prefixes[p] = PartitionPrefix(name, p)
	}
	if err := s.purgeAll(ctx, "topic deletion", name, prefixes, nil); err != nil {
		return fmt.Errorf("tiering: delete objects of topic %s from %s: %w", name, s.Bucket.Name(), err)
	}
	record := topicsPrefix + name + ".json"
	if err := s.purgeAll(ctx, "topic deletion", name, []string{record}, func(key string) bool { return key == record }); err != nil {
		return fmt.Errorf("tiering: delete record of topic %s from %s: %w", name, s.Bucket.Name(), err)
	}
	return nil
}

// purgeAll deletes every version of the keys under each of prefixes
// (those match picks; nil: all) for a deletion (by) of topic's objects
// that nothing retries. What the bucket refuses stays hidden (see purge),
// and is logged and counted, per prefix, for an operator to remove after
// its date.
func (s *Store) purgeAll(ctx context.Context, by, topic string, prefixes []string, match func(key string) bool) error {
	left := make([][]cold.ObjectVersion, len(prefixes))
	bv := s.versioning(nil)
	pass := func() error {
		for i, prefix := range prefixes {
			err := versionsByKey(ctx, s.Bucket, prefix, func(key string, vs []cold.ObjectVersion) error {
				if match != nil && !match(key) {
					return nil
				}
				r, err := purge(ctx, s.Bucket, bv, key, vs, nil)
				left[i] = append(left[i], r.refused...)
				return err
			})
			if err != nil {
				return fmt.Errorf("%s: %w", prefix, err)
			}
		}
		return nil
	}
	err := pass()
	if err == nil {
		// Versioning turned on meanwhile: what the deletes by key left
		// behind markers is listed now, and goes by version id.
		var on bool
		if on, err = bv.turnedOn(ctx); on {
			err = pass()
		}
	}
	for i, vs := range left {
		s.reportLeft(ctx, by, topic, prefixes[i], vs)
	}
	return err
}

// reportLeft logs and counts the versions a deletion under prefix left
// because the bucket refused them.
func (s *Store) reportLeft(ctx context.Context, by, topic, prefix string, vs []cold.ObjectVersion) {
	if len(vs) == 0 {
		return
	}
	newest := vs[0]
	for _, v := range vs[1:] {
		if v.LastModified.After(newest.LastModified) {
			newest = v
		}
	}
	until, hold := lockOf(ctx, s.Bucket, newest.Key, newest.VersionID)
	if s.keptVersions != nil {
		s.keptVersions.Add(float64(len(vs)))
	}
	if s.logger != nil {
		s.logger.Warn(by+" left object versions the bucket refused to delete (Object Lock); they stay, behind delete markers, until an operator removes them after their retain-until date (see README, WORM retention)",
			"topic", topic, "bucket", s.Bucket.Name(), "prefix", prefix, "versions", len(vs), "first_key", vs[0].Key,
			"newest_key", newest.Key, "newest_version_id", newest.VersionID, "newest_retain_until", until, "newest_legal_hold", hold)
	}
}

// Topics lists the topics recorded in the bucket, tombstones (Deleting)
// included.
func (s *Store) Topics(ctx context.Context) ([]TopicMeta, error) {
	var out []TopicMeta
	err := retry(ctx, func() error {
		out = out[:0]
		return s.Bucket.Iter(ctx, topicsPrefix, func(key string) error {
			if !strings.HasSuffix(key, ".json") {
				return nil
			}
			var t TopicMeta
			// No retry of its own: the listing's retry reads it again.
			if err := s.getJSON(ctx, key, &t); err != nil {
				return fmt.Errorf("tiering: %s: %w", key, err)
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// latestManifest finds the newest manifest copy of a partition in the
// bucket (one LIST, done only when a node has no local manifest). It
// lists the copies only: the partition's prefix also holds its segments
// and its Merkle tree's tiles, one per 256 records.
func (s *Store) latestManifest(ctx context.Context, topic string, partition int32) (*Manifest, bool, error) {
	best, bestKey := int64(-1), ""
	err := retry(ctx, func() error {
		return s.Bucket.Iter(ctx, manifestKeyPrefix(topic, partition), func(key string) error {
			if v, ok := parseManifestKey(key); ok && v > best {
				best, bestKey = v, key
			}
			return nil
		})
	})
	if err != nil || bestKey == "" {
		return nil, false, err
	}
	raw, err := getAll(ctx, s.Bucket, bestKey)
	if err != nil {
		return nil, false, err
	}
	m, err := decodeManifestAt(raw, bestKey)
	if err != nil {
		return nil, false, err
	}
	return m, true, nil
}

// treeBucket is the bucket the Merkle tree writes its tiles through.
func (s *Store) treeBucket() cold.Bucket {
	if s.tiles == nil {
		return s.Bucket
	}
	return s.tiles
}
