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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// Key layout in the bucket (relative to the bucket URL's prefix):
//
//	cluster.json                                   identity marker: which cluster owns the prefix
//	topics/<topic>.json                            topic metadata (partitions, config overrides)
//	<hh>/<topic>/<partition>/manifest-<version>.json   manifest copies (20-digit version)
//	<hh>/<topic>/<partition>/<base>-<epoch>-<id>.seg   segment objects (20-digit base offset)
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
	return fmt.Sprintf("%smanifest-%020d.json", PartitionPrefix(topic, partition), version)
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
	// Deleting is the tombstone of a topic whose deletion started: a
	// restore must finish deleting it (DeleteTopic), never bring it back.
	Deleting bool `json:"deleting,omitempty"`
}

// Store is the bucket as the tiering layer sees it: identity, topic
// metadata, manifests and segment objects.
type Store struct {
	Bucket    cold.Bucket
	ClusterID string
}

type clusterMarker struct {
	ClusterID string    `json:"cluster_id"`
	Created   time.Time `json:"created"`
}

// OpenStore claims the bucket prefix for the cluster whose id is kept in
// dataDir (creating one for a new cluster). A prefix already owned by a
// different cluster is refused, so two clusters never write one prefix. A
// fresh data directory adopts the id it finds in the bucket: that is a node
// restoring its history from the bucket.
func OpenStore(ctx context.Context, b cold.Bucket, dataDir string) (*Store, error) {
	idPath := filepath.Join(dataDir, clusterIDFile)
	local := ""
	if raw, err := os.ReadFile(idPath); err == nil {
		local = strings.TrimSpace(string(raw))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	hadLocal := local != ""
	var marker clusterMarker
	rc, err := b.Get(ctx, clusterMarkerKey)
	switch {
	case err == nil:
		raw, rerr := io.ReadAll(rc)
		rc.Close()
		if rerr != nil {
			return nil, fmt.Errorf("tiering: read %s/%s: %w", b.Name(), clusterMarkerKey, rerr)
		}
		if err := json.Unmarshal(raw, &marker); err != nil || marker.ClusterID == "" {
			return nil, fmt.Errorf("tiering: %s/%s is not a tierlog cluster marker", b.Name(), clusterMarkerKey)
		}
	case errors.Is(err, cold.ErrNotFound):
	default:
		return nil, fmt.Errorf("tiering: read cluster marker in %s: %w", b.Name(), err)
	}
	switch {
	case marker.ClusterID != "" && local != "" && marker.ClusterID != local:
		return nil, fmt.Errorf("tiering: bucket %s belongs to cluster %s, but data directory %s belongs to cluster %s: one prefix has one writer; use another bucket prefix",
			b.Name(), marker.ClusterID, dataDir, local)
	case marker.ClusterID == "" && local == "":
		local = newID() + newID()
	case local == "":
		local = marker.ClusterID
	}
	if marker.ClusterID == "" {
		raw, _ := json.Marshal(clusterMarker{ClusterID: local, Created: time.Now().UTC()})
		if _, err := b.Upload(ctx, clusterMarkerKey, bytes.NewReader(raw), int64(len(raw))); err != nil {
			return nil, fmt.Errorf("tiering: write cluster marker to %s: %w", b.Name(), err)
		}
	}
	if !hadLocal {
		// Only a new or restoring node records its id; a restart has it.
		if err := fileutil.MkdirAllDurable(dataDir); err != nil {
			return nil, err
		}
		if err := fileutil.WriteFileAtomic(idPath, []byte(local+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	return &Store{Bucket: b, ClusterID: local}, nil
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

// PutTopic records a topic's metadata in the bucket.
func (s *Store) PutTopic(ctx context.Context, t TopicMeta) error {
	return retry(ctx, func() error { return s.putJSON(ctx, topicsPrefix+t.Name+".json", t) })
}

// DeleteTopic removes a topic's metadata and every object of its
// partitions from the bucket. It first turns the topic's record into a
// tombstone, so a deletion cut short (bucket down, node crashed or lost its
// disk) is finished by whoever reads the record next instead of restoring
// the topic; the record goes last, once nothing of the topic is left.
// Calling it again after a failure resumes it.
func (s *Store) DeleteTopic(ctx context.Context, name string, partitions int32) error {
	tomb := TopicMeta{Name: name, Partitions: partitions, Deleting: true}
	if err := retry(ctx, func() error { return s.putJSON(ctx, topicsPrefix+name+".json", tomb) }); err != nil {
		return fmt.Errorf("tiering: mark topic %s deleted in %s: %w", name, s.Bucket.Name(), err)
	}
	for p := range partitions {
		err := s.Bucket.Iter(ctx, PartitionPrefix(name, p), func(key string) error {
			return retry(ctx, func() error { return s.Bucket.Delete(ctx, key) })
		})
		if err != nil {
			return fmt.Errorf("tiering: delete objects of %s/%d from %s: %w", name, p, s.Bucket.Name(), err)
		}
	}
	if err := retry(ctx, func() error { return s.Bucket.Delete(ctx, topicsPrefix+name+".json") }); err != nil {
		return fmt.Errorf("tiering: delete record of topic %s from %s: %w", name, s.Bucket.Name(), err)
	}
	return nil
}

// Topics lists the topics recorded in the bucket, tombstones (Deleting)
// included.
func (s *Store) Topics(ctx context.Context) ([]TopicMeta, error) {
	var out []TopicMeta
	err := s.Bucket.Iter(ctx, topicsPrefix, func(key string) error {
		if !strings.HasSuffix(key, ".json") {
			return nil
		}
		var t TopicMeta
		if err := s.getJSON(ctx, key, &t); err != nil {
			return fmt.Errorf("tiering: %s: %w", key, err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// latestManifest finds the newest manifest copy of a partition in the
// bucket (one LIST, done only when a node has no local manifest).
func (s *Store) latestManifest(ctx context.Context, topic string, partition int32) (*Manifest, bool, error) {
	best, bestKey := int64(-1), ""
	err := s.Bucket.Iter(ctx, PartitionPrefix(topic, partition), func(key string) error {
		if v, ok := parseManifestKey(key); ok && v > best {
			best, bestKey = v, key
		}
		return nil
	})
	if err != nil || bestKey == "" {
		return nil, false, err
	}
	var raw json.RawMessage
	if err := s.getJSON(ctx, bestKey, &raw); err != nil {
		return nil, false, err
	}
	m, err := decodeManifest(raw)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", bestKey, err)
	}
	return m, true, nil
}
