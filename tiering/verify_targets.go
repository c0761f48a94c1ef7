package tiering

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
)

// Which partitions tierlog verify checks. The bucket's cluster marker and
// topic records are unsigned: anyone with write access can rewrite them.
// So the partitions come from the topic records AND from the bucket
// itself - every partition prefix holding signed checkpoints - AND from
// the trusted checkpoints given; a partition the topic records do not
// name (record deleted, a tombstone, too few partitions) is verified all
// the same, and the record's disagreement is a finding of its own.

// VerifyTarget is one partition Archive.Verify checks.
type VerifyTarget struct {
	Topic     string
	Partition int32
	// ClusterID is the cluster the bucket's marker names ("": none). The
	// partition's signed checkpoints decide its cluster; a marker naming
	// another is a finding.
	ClusterID string
	// Findings are what the bucket's unsigned records (cluster marker,
	// topic record) say against the partition's signed history.
	Findings []Finding
}

type partitionID struct {
	topic     string
	partition int32
}

// VerifyTargets lists the partitions to verify: of topic ("" every
// topic), partition (-1 every one). An error means the bucket could not
// be read, or holds nothing of what was asked.
func (a *Archive) VerifyTargets(ctx context.Context, topic string, partition int32, trusted []TrustedCheckpoint) ([]VerifyTarget, error) {
	b := a.store.Bucket
	cluster, markerProblem, err := a.verifyMarker(ctx)
	if err != nil {
		return nil, err
	}
	records, err := a.topicRecords(ctx, topic)
	if err != nil {
		return nil, err
	}
	// why a partition is verified whatever its topic record says.
	why := map[partitionID]string{}
	signed, err := a.signedPartitions(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	for _, id := range signed {
		why[id] = "the bucket holds signed checkpoints of it"
	}
	for _, t := range trusted {
		_, tp, p, err := audit.ParseOrigin(t.Checkpoint.Origin)
		if err == nil && (topic == "" || tp == topic) && (partition < 0 || p == partition) {
			id := partitionID{tp, p}
			why[id] = cmp.Or(why[id], "the trusted checkpoint "+t.Name+" names it")
		}
	}
	if id := (partitionID{topic, partition}); topic != "" && partition >= 0 && why[id] == "" {
		// Asked for by name: verified if the bucket holds anything of it.
		var any bool
		err := retry(ctx, func() error {
			return b.Iter(ctx, PartitionPrefix(topic, partition), func(string) error { any = true; return errStopIter })
		})
		if err != nil && !errors.Is(err, errStopIter) {
			return nil, fmt.Errorf("tiering: list %s in %s: %w", PartitionPrefix(topic, partition), b.Name(), err)
		}
		if any {
			why[id] = "it was asked for and the bucket holds objects of it"
		}
	}

	targets := map[partitionID]*VerifyTarget{}
	for name, r := range records {
		for p := int32(0); r.err == nil && !r.meta.Deleting && p < r.meta.Partitions; p++ {
			if partition < 0 || p == partition {
				targets[partitionID{name, p}] = &VerifyTarget{Topic: name, Partition: p}
			}
		}
	}
	for id, reason := range why {
		if targets[id] != nil {
			continue
		}
		key := topicsPrefix + id.topic + ".json"
		r, has := records[id.topic]
		var problem string
		switch {
		case !has:
			problem = fmt.Sprintf("the bucket holds no record of topic %s, but %s/%d is verified: %s (the record was deleted?)", id.topic, id.topic, id.partition, reason)
		case r.err != nil:
			problem = fmt.Sprintf("the record of topic %s is not a topic record (%v), but %s/%d is verified: %s", id.topic, r.err, id.topic, id.partition, reason)
		case r.meta.Deleting:
			problem = fmt.Sprintf("the record of topic %s is a tombstone (the topic's deletion started), but %s/%d is verified: %s", id.topic, id.topic, id.partition, reason)
		default:
			problem = fmt.Sprintf("the record of topic %s names %d partitions, but %s/%d is verified: %s", id.topic, r.meta.Partitions, id.topic, id.partition, reason)
		}
		targets[id] = &VerifyTarget{Topic: id.topic, Partition: id.partition,
			Findings: []Finding{{Object: key, Problem: problem, checkpoint: true}}}
	}
	if len(targets) == 0 {
		return nil, a.nothingToVerify(records, topic, partition)
	}
	out := make([]VerifyTarget, 0, len(targets))
	for _, t := range targets {
		t.ClusterID = cluster
		if markerProblem != "" {
			t.Findings = append(t.Findings, Finding{Object: clusterMarkerKey, Problem: markerProblem, checkpoint: true})
		}
		out = append(out, *t)
	}
	slices.SortFunc(out, func(x, y VerifyTarget) int {
		return cmp.Or(cmp.Compare(x.Topic, y.Topic), cmp.Compare(x.Partition, y.Partition))
	})
	return out, nil
}

var errStopIter = errors.New("stop")

// nothingToVerify says why there is no partition to verify.
func (a *Archive) nothingToVerify(records map[string]topicRecord, topic string, partition int32) error {
	name := a.store.Bucket.Name()
	r, has := records[topic]
	switch {
	case topic == "":
		return fmt.Errorf("%s holds no topic to verify (no topic record, no signed checkpoints)", name)
	case has && r.err == nil && !r.meta.Deleting && partition >= r.meta.Partitions:
		return fmt.Errorf("topic %s has %d partitions (0 to %d) in %s, not %d, and the bucket holds nothing of partition %d",
			topic, r.meta.Partitions, r.meta.Partitions-1, name, partition, partition)
	}
	return fmt.Errorf("%w: %s holds no topic %q (no topic record, no signed checkpoints, no objects)", ErrUnknownTopic, name, topic)
}

// verifyMarker reads the cluster marker: its cluster id, or ("", what is
// wrong with it) if it is missing or not a marker.
func (a *Archive) verifyMarker(ctx context.Context) (cluster, problem string, err error) {
	raw, err := getAll(ctx, a.store.Bucket, clusterMarkerKey)
	if errors.Is(err, cold.ErrNotFound) {
		return "", fmt.Sprintf("the cluster marker %s is missing: the prefix of a tierlog node or cluster always holds it (deleted?)", clusterMarkerKey), nil
	}
	if err != nil {
		return "", "", fmt.Errorf("tiering: read %s from %s: %w", clusterMarkerKey, a.store.Bucket.Name(), err)
	}
	var m clusterMarker
	if err := json.Unmarshal(raw, &m); err != nil || m.ClusterID == "" {
		return "", fmt.Sprintf("the cluster marker %s is not a tierlog cluster marker (%d bytes, no cluster id)", clusterMarkerKey, len(raw)), nil
	}
	return m.ClusterID, "", nil
}

// topicRecord is a topic record as the bucket holds it: err if it does
// not parse.
type topicRecord struct {
	meta TopicMeta
	err  error
}

// topicRecords reads the topic records (of topic only, unless ""), by
// the name in their key.
func (a *Archive) topicRecords(ctx context.Context, topic string) (map[string]topicRecord, error) {
	b := a.store.Bucket
	out := map[string]topicRecord{}
	err := retry(ctx, func() error {
		return b.Iter(ctx, topicsPrefix+topic, func(key string) error {
			name, ok := strings.CutSuffix(strings.TrimPrefix(key, topicsPrefix), ".json")
			if !ok || strings.Contains(name, "/") || topic != "" && name != topic {
				return nil
			}
			raw, err := getAll(ctx, b, key)
			if errors.Is(err, cold.ErrNotFound) {
				return nil // deleted since the listing
			}
			if err != nil {
				return err
			}
			var r topicRecord
			if r.err = json.Unmarshal(raw, &r.meta); r.err == nil && r.meta.Name != name {
				r.err = fmt.Errorf("it names topic %q", r.meta.Name)
			}
			out[name] = r
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("tiering: list topics in %s: %w", b.Name(), err)
	}
	return out, nil
}

// signedPartitions finds the partitions (of topic, partition if given)
// whose prefix holds signed checkpoints, from the bucket's folders - one
// LIST per level of PartitionPrefix's <hash>/<topic>/<partition>/, and
// one for the partition's tlog/ - whatever the topic records say.
func (a *Archive) signedPartitions(ctx context.Context, topic string, partition int32) ([]partitionID, error) {
	b := a.store.Bucket
	var out []partitionID
	hasCheckpoints := func(prefix string) (bool, error) {
		found := false
		err := cold.Folders(ctx, b, prefix+audit.Dir, func(f string) error {
			found = found || f == prefix+audit.Dir+"checkpoints/"
			return nil
		})
		return found, err
	}
	err := retry(ctx, func() error {
		out = out[:0]
		if topic != "" && partition >= 0 {
			ok, err := hasCheckpoints(PartitionPrefix(topic, partition))
			if ok {
				out = append(out, partitionID{topic, partition})
			}
			return err
		}
		return cold.Folders(ctx, b, "", func(hash string) error {
			if _, err := hex.DecodeString(strings.TrimSuffix(hash, "/")); err != nil || len(hash) != 5 {
				return nil // not a partition's hash folder: topics/, _tierlog/, groups/
			}
			return cold.Folders(ctx, b, hash, func(topicDir string) error {
				name := strings.TrimSuffix(strings.TrimPrefix(topicDir, hash), "/")
				if topic != "" && name != topic {
					return nil
				}
				return cold.Folders(ctx, b, topicDir, func(partDir string) error {
					p, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(partDir, topicDir), "/"), 10, 32)
					if err != nil || p < 0 || partition >= 0 && int32(p) != partition || PartitionPrefix(name, int32(p)) != partDir {
						return nil // not the prefix of a partition
					}
					ok, err := hasCheckpoints(partDir)
					if ok {
						out = append(out, partitionID{name, int32(p)})
					}
					return err
				})
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("tiering: list the partitions in %s: %w", b.Name(), err)
	}
	return out, nil
}
