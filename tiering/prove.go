package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
)

// Proofs of a partition's history (package audit): a node serving
// `tierlog prove` and a reader of the bucket with no server make them the
// same way, from what the bucket holds.

var (
	// ErrNotInTree: the offset is not a leaf of the partition's tree as
	// the bucket's committed manifest records it (not tiered yet).
	ErrNotInTree = errors.New("not in the tree yet")
	// ErrNoRecord: the offset is a leaf of the tree but no record holds
	// it (an absent leaf: compaction, or before the archive began).
	ErrNoRecord = errors.New("no record")
	// ErrNoCheckpoint: no checkpoint was made at the tree size asked for
	// (checkpoints are made after each uploaded segment).
	ErrNoCheckpoint = errors.New("no checkpoint")
	// ErrBadRange: a consistency proof asked from a tree size of 0, or from
	// a larger tree to a smaller one.
	ErrBadRange = errors.New("want 0 < from <= to")
)

// treeSize is the size of the partition's tree after the last segment the
// manifest commits (0: no tree yet). Segments retention is deleting still
// count: the tree keeps their leaves.
func (m *Manifest) treeSize() (int64, string) {
	size, root := m.TreeSize, m.TreeRoot
	for _, s := range m.Segments {
		if (s.State == CopyFinished || s.State == DeleteStarted) && s.TreeSize > 0 && s.TreeSize >= size {
			size, root = s.TreeSize, s.TreeRoot
		}
	}
	return size, root
}

// Prover makes one partition's proof files from the bucket: the tree size
// of its committed manifest, its checkpoints and tiles, and its records
// as the partition's read path (the cold reader for remote offsets) gives
// them. It only reads.
type Prover struct {
	bucket    cold.Bucket
	topic     string
	partition int32
	size      uint64 // the committed tree's size
	read      func(ctx context.Context, offset int64, maxBytes int) ([]byte, error)
}

// Prover proves the partition's records as this node holds them (local
// segments, then the bucket's). A partition with no bucket fails with
// ErrNotTiered.
func (p *Partition) Prover() (*Prover, error) {
	if p.store == nil {
		return nil, fmt.Errorf("tiering: %s/%d: %w: the node has no bucket, so no Merkle tree", p.topic, p.partition, ErrNotTiered)
	}
	size, _ := p.Manifest().treeSize()
	if size == 0 && !p.remoteOn.Load() {
		return nil, fmt.Errorf("tiering: %s/%d: %w: remote.storage.enable=false, so no Merkle tree", p.topic, p.partition, ErrNotTiered)
	}
	return &Prover{bucket: p.store.Bucket, topic: p.topic, partition: p.partition, size: uint64(size),
		read: func(ctx context.Context, offset int64, maxBytes int) ([]byte, error) {
			res, err := p.Read(ctx, offset, maxBytes)
			return res.Records, err
		}}, nil
}

// Prover proves the archived partition's records, read from the bucket.
func (ap *ArchivedPartition) Prover() *Prover {
	return &Prover{bucket: ap.bucket, topic: ap.Topic, partition: ap.Partition, size: uint64(ap.TreeSize), read: ap.Read}
}

// TreeSize is the size of the tree the proofs are made against (the
// offset after its last leaf; 0: none yet).
func (pr *Prover) TreeSize() uint64 { return pr.size }

func (pr *Prover) prefix() string { return PartitionPrefix(pr.topic, pr.partition) }

// Inclusion returns the proof file of the record at offset against the
// checkpoint of the committed tree. An offset past the tree fails with
// ErrNotInTree, one below the partition's start with a
// *hot.OffsetOutOfRangeError. The proof is checked against the
// checkpoint's root before it is returned: a bucket whose tiles or
// records were altered fails here (the signature is the verifier's to
// check, with a key it trusts).
func (pr *Prover) Inclusion(ctx context.Context, offset int64) (*audit.InclusionFile, error) {
	if offset < 0 || uint64(offset) >= pr.size {
		return nil, pr.notInTree(offset)
	}
	rec, err := pr.record(ctx, offset)
	if err != nil {
		return nil, err
	}
	signed, c, err := pr.checkpoint(ctx, pr.size)
	if err != nil {
		return nil, err
	}
	proof, err := audit.InclusionProof(ctx, pr.bucket, pr.prefix(), uint64(offset), pr.size)
	if err != nil {
		return nil, fmt.Errorf("tiering: %s/%d: inclusion proof of offset %d: %w", pr.topic, pr.partition, offset, err)
	}
	f := audit.NewInclusionFile(pr.topic, pr.partition, rec, pr.size, proof, signed)
	if err := audit.VerifyInclusion(audit.LeafHash(f.Leaf), uint64(offset), pr.size, proof, c.Hash); err != nil {
		return nil, fmt.Errorf("tiering: %s/%d: the record at offset %d and the tiles in %s do not give the root the checkpoint at size %d signs (was the bucket altered? 'tierlog verify' finds where): %w",
			pr.topic, pr.partition, offset, pr.bucket.Name(), pr.size, err)
	}
	return f, nil
}

func (pr *Prover) notInTree(offset int64) error {
	if pr.size == 0 {
		return fmt.Errorf("offset %d of %s/%d is %w: no segment of it is in the bucket with a tree", offset, pr.topic, pr.partition, ErrNotInTree)
	}
	return fmt.Errorf("offset %d of %s/%d is %w: the tree ends at %d (it grows as segments are tiered)", offset, pr.topic, pr.partition, ErrNotInTree, pr.size)
}

// record reads the record at offset (a copy, owning its bytes).
func (pr *Prover) record(ctx context.Context, offset int64) (audit.Record, error) {
	data, err := pr.read(ctx, offset, 1<<20)
	if errors.Is(err, io.EOF) {
		err = nil // the archive ends: no record there
	}
	if err != nil {
		return audit.Record{}, err
	}
	var rec audit.Record
	found := false
	for len(data) > 0 && !found {
		h, err := batch.Peek(data)
		if err == nil && h.Size() > len(data) {
			err = batch.ErrShortBatch
		}
		if err != nil {
			return rec, fmt.Errorf("tiering: %s/%d: read offset %d: %w", pr.topic, pr.partition, offset, err)
		}
		if h.BaseOffset <= offset && offset < h.NextOffset() {
			err := audit.EachRecord(data[:h.Size()], func(r audit.Record) error {
				if r.Offset == offset {
					rec, found = cloneRecord(r), true
				}
				return nil
			})
			if err != nil {
				return rec, fmt.Errorf("tiering: %s/%d: read offset %d: %w", pr.topic, pr.partition, offset, err)
			}
		}
		if h.BaseOffset > offset {
			break
		}
		data = data[h.Size():]
	}
	if !found {
		return rec, fmt.Errorf("offset %d of %s/%d holds %w: its leaf is absent (compacted, or before the archive began)", offset, pr.topic, pr.partition, ErrNoRecord)
	}
	return rec, nil
}

func cloneRecord(r audit.Record) audit.Record {
	r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
	r.Headers = slices.Clone(r.Headers)
	for i := range r.Headers {
		r.Headers[i].Value = bytes.Clone(r.Headers[i].Value)
	}
	return r
}

// Consistency returns the proof file that the tree at the checkpoint of
// size2 (0: the committed tree's) extends the tree at the checkpoint of
// size1. Both must be checkpoints the bucket keeps.
func (pr *Prover) Consistency(ctx context.Context, size1, size2 uint64) (*audit.ConsistencyFile, error) {
	latest := size2 == 0
	if latest {
		size2 = pr.size
	}
	switch {
	case size1 == 0 || !latest && size1 > size2:
		return nil, fmt.Errorf("tiering: %s/%d: consistency from tree size %d to %d: %w", pr.topic, pr.partition, size1, size2, ErrBadRange)
	case pr.size == 0:
		return nil, pr.notInTree(0)
	case size1 > pr.size:
		return nil, fmt.Errorf("tree size %d of %s/%d is %w: the tree ends at %d", size1, pr.topic, pr.partition, ErrNotInTree, pr.size)
	case size2 > pr.size:
		return nil, fmt.Errorf("tree size %d of %s/%d is %w: the tree ends at %d", size2, pr.topic, pr.partition, ErrNotInTree, pr.size)
	}
	older, c1, err := pr.checkpoint(ctx, size1)
	if err != nil {
		return nil, err
	}
	newer, c2, err := pr.checkpoint(ctx, size2)
	if err != nil {
		return nil, err
	}
	proof, err := audit.ConsistencyProof(ctx, pr.bucket, pr.prefix(), size1, size2)
	if err != nil {
		return nil, fmt.Errorf("tiering: %s/%d: consistency proof from %d to %d: %w", pr.topic, pr.partition, size1, size2, err)
	}
	if err := audit.VerifyConsistency(size1, size2, proof, c1.Hash, c2.Hash); err != nil {
		return nil, fmt.Errorf("tiering: %s/%d: the tiles in %s do not prove the checkpoint at size %d extends the one at %d (was the bucket altered? 'tierlog verify' finds where): %w",
			pr.topic, pr.partition, pr.bucket.Name(), size2, size1, err)
	}
	return audit.NewConsistencyFile(pr.topic, pr.partition, older, newer, proof), nil
}

// Checkpoint returns the signed checkpoint of tree size (0: the committed
// tree's), unchecked: the caller verifies it with a key it trusts.
func (pr *Prover) Checkpoint(ctx context.Context, size uint64) ([]byte, error) {
	if size == 0 {
		if pr.size == 0 {
			return nil, pr.notInTree(0)
		}
		size = pr.size
	}
	signed, _, err := pr.checkpoint(ctx, size)
	return signed, err
}

// checkpoint reads the checkpoint of size and parses its body (its
// signature is not checked: the prover has no key to trust).
func (pr *Prover) checkpoint(ctx context.Context, size uint64) ([]byte, *audit.Checkpoint, error) {
	signed, err := audit.GetCheckpoint(ctx, pr.bucket, pr.prefix(), int64(size))
	if errors.Is(err, cold.ErrNotFound) {
		return nil, nil, pr.noCheckpoint(ctx, size)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tiering: %s/%d: %w", pr.topic, pr.partition, err)
	}
	c, err := audit.PeekCheckpoint(signed)
	if err == nil && c.Size != size {
		err = fmt.Errorf("it names tree size %d", c.Size)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tiering: %s/%d: checkpoint %s: %w", pr.topic, pr.partition, audit.CheckpointKey(pr.prefix(), size), err)
	}
	return signed, c, nil
}

// noCheckpoint says that no checkpoint of size is kept, and the kept sizes
// next to it.
func (pr *Prover) noCheckpoint(ctx context.Context, size uint64) error {
	err := fmt.Errorf("%s/%d has %w at tree size %d", pr.topic, pr.partition, ErrNoCheckpoint, size)
	sizes, lerr := audit.ListCheckpoints(ctx, pr.bucket, pr.prefix())
	if lerr != nil || len(sizes) == 0 {
		return err
	}
	i, _ := slices.BinarySearch(sizes, size)
	var near []uint64
	if i > 0 {
		near = append(near, sizes[i-1])
	}
	if i < len(sizes) {
		near = append(near, sizes[i])
	}
	return fmt.Errorf("%w (one is made after each segment; the nearest are at %v, of %d from %d to %d)", err, near, len(sizes), sizes[0], sizes[len(sizes)-1])
}
