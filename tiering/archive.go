package tiering

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
)

// Archive is a bucket prefix's history as a reader with no node sees it:
// an auditor, or a new system replaying what a cluster kept. It finds each
// partition's newest manifest as a node restoring from the bucket does (the
// shared manifest of a cluster's prefix, else the newest versioned copy of
// a single node's) and reads the committed segments through a cold.Reader,
// the one serve uses. It never writes: open the bucket with
// cold.ReadOnly. Segment objects no manifest names (an upload cut short
// before its commit) are not part of the archive.
type Archive struct {
	store  *Store
	reader *cold.Reader
}

// ErrUnknownTopic is returned (wrapped) by Archive.Topic for a topic the
// bucket holds no record of.
var ErrUnknownTopic = errors.New("tiering: topic not in the bucket")

// NewArchive reads the history in b through r (a Reader over b).
func NewArchive(b cold.Bucket, r *cold.Reader) *Archive {
	return &Archive{store: &Store{Bucket: b}, reader: r}
}

// Topic returns the topic's record. A topic the bucket does not record
// fails with ErrUnknownTopic and the names it does record; a topic whose
// deletion started (its record is a tombstone) fails too: what is left of
// it is no longer its history.
func (a *Archive) Topic(ctx context.Context, name string) (TopicMeta, error) {
	var t TopicMeta
	err := retry(ctx, func() error { return a.store.getJSON(ctx, topicsPrefix+name+".json", &t) })
	if errors.Is(err, cold.ErrNotFound) {
		ts, lerr := a.store.Topics(ctx)
		if lerr != nil {
			return t, fmt.Errorf("%w: %s holds no topic %q", ErrUnknownTopic, a.store.Bucket.Name(), name)
		}
		var names []string
		for _, t := range ts {
			if !t.Deleting {
				names = append(names, t.Name)
			}
		}
		if len(names) == 0 {
			return t, fmt.Errorf("%w: %s holds no topic %q, nor any other (is this the prefix a node tiers to?)", ErrUnknownTopic, a.store.Bucket.Name(), name)
		}
		return t, fmt.Errorf("%w: %s holds no topic %q; it holds %q", ErrUnknownTopic, a.store.Bucket.Name(), name, names)
	}
	if err != nil {
		return t, fmt.Errorf("tiering: read topic %s from %s: %w", name, a.store.Bucket.Name(), err)
	}
	if t.Deleting {
		return t, fmt.Errorf("%w: topic %q in %s is being deleted (its deletion was cut short)", ErrUnknownTopic, name, a.store.Bucket.Name())
	}
	return t, nil
}

// ArchivedPartition is one partition's history in the bucket: the
// committed segments of its newest manifest.
type ArchivedPartition struct {
	Topic     string
	Partition int32
	// Start is the first offset the archive serves (remote retention may
	// have deleted what came before), End the offset after its last
	// record; Start == End: the archive holds nothing of the partition.
	Start, End int64
	// Segments are the committed segments, in offset order.
	Segments []RemoteSegment
	// ManifestVersion is the version of the manifest read (0: none).
	ManifestVersion int64
	// TreeSize and TreeRoot (lowercase hex) are the partition's Merkle
	// tree after the last committed segment (0, "": no tree yet).
	TreeSize int64
	TreeRoot string

	bucket cold.Bucket
	reader *cold.Reader
}

// Partition reads the partition's newest manifest. A partition with no
// manifest in the bucket (nothing tiered yet) is an empty archive.
func (a *Archive) Partition(ctx context.Context, topic string, partition int32) (*ArchivedPartition, error) {
	m, _, _, err := a.store.readShared(ctx, topic, partition)
	if err != nil {
		return nil, fmt.Errorf("tiering: %s/%d: read manifest from %s: %w", topic, partition, a.store.Bucket.Name(), err)
	}
	ap := &ArchivedPartition{Topic: topic, Partition: partition, bucket: a.store.Bucket, reader: a.reader}
	if m == nil {
		return ap, nil
	}
	ap.ManifestVersion = m.Version
	ap.TreeSize, ap.TreeRoot = m.treeSize()
	ap.Segments = m.committed()
	ap.Start, ap.End = m.LogStartOffset, m.LogStartOffset
	if n := len(ap.Segments); n > 0 {
		ap.Start, ap.End = m.remoteStart(), ap.Segments[n-1].NextOffset
	}
	return ap, nil
}

// Read returns whole batches from the segment holding offset (the first
// batch may start below it), up to about maxBytes and never past that
// segment's end, as Partition.Read serves remote offsets: the caller goes
// on at the offset after the last batch. An offset in a gap between
// segments (a restore that skipped offsets) reads from the next segment.
// At or past End it returns io.EOF; below Start a
// *hot.OffsetOutOfRangeError.
func (ap *ArchivedPartition) Read(ctx context.Context, offset int64, maxBytes int) ([]byte, error) {
	if offset < ap.Start {
		return nil, &hot.OffsetOutOfRangeError{Offset: offset, Start: ap.Start, End: ap.End}
	}
	i := sort.Search(len(ap.Segments), func(i int) bool { return ap.Segments[i].NextOffset > offset })
	if i == len(ap.Segments) {
		return nil, io.EOF
	}
	seg := ap.Segments[i]
	offset = max(offset, seg.BaseOffset)
	prefetchNext(ap.reader, ap.Segments, seg, offset)
	data, err := ap.reader.Read(ctx, seg.ref(), offset, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("tiering: %s/%d: read offset %d from %s: %w", ap.Topic, ap.Partition, offset, seg.Key, err)
	}
	return data, nil
}

// OffsetForTime returns the base offset of the first batch whose max
// timestamp is >= ts (Unix ms), as Partition.OffsetForTime answers it, or
// End if no record is that late.
func (ap *ArchivedPartition) OffsetForTime(ctx context.Context, ts int64) (int64, error) {
	for _, s := range ap.Segments {
		if s.MaxTimestamp < ts {
			continue
		}
		off, found, err := ap.reader.OffsetForTime(ctx, s.ref(), ts)
		if err != nil {
			return 0, fmt.Errorf("tiering: %s/%d: time lookup in %s: %w", ap.Topic, ap.Partition, s.Key, err)
		}
		if found {
			return max(off, ap.Start), nil
		}
	}
	return ap.End, nil
}

// prefetchNext has r fetch the footer and first chunks of the segment
// after seg once a replay at offset is half way through seg, so the
// boundary does not stall it. view is the committed segments.
func prefetchNext(r *cold.Reader, view []RemoteSegment, seg RemoteSegment, offset int64) {
	if next, ok := findSegment(view, seg.NextOffset); ok && offset >= seg.BaseOffset+(seg.NextOffset-seg.BaseOffset)/2 {
		r.Prefetch(next.ref())
	}
}
