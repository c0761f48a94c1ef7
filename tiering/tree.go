package tiering

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
)

// The partition's Merkle tree (package audit, see DESIGN.md "Audit-grade
// history"): build computes a segment's leaf hashes beside its object, off
// the produce path; upload appends them to the tree, writes the changed
// tiles and a signed checkpoint after the object is verified and before
// the manifest commit, and records the tree's size and root in the
// segment's entry. The tree's state between uploads is p.tree (guarded by
// tierMu); the bucket's tiles at the manifest's last tree size are the
// truth it is reloaded from after a restart, a restore, a change of
// leader or a failed attempt.

// segmentLeaves computes the leaf hashes of the local segment file at
// path for offsets [from, next): the batches from the one starting at
// from (see skipTo), absent leaves for offsets no record holds.
func segmentLeaves(path string, from, next int64) (*audit.Leaves, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := skipTo(f, from); err != nil {
		return nil, err
	}
	l := audit.NewLeaves(from)
	r := bufio.NewReaderSize(f, 1<<20)
	var buf []byte
	for {
		var prefix [batch.LengthFieldEnd]byte
		if _, err := io.ReadFull(r, prefix[:]); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("leaves of %s: %w", path, err)
		}
		length := int(int32(binary.BigEndian.Uint32(prefix[8:])))
		if length < batch.HeaderSize-batch.LengthFieldEnd || length > 1<<30 {
			return nil, fmt.Errorf("leaves of %s: %w: batch length %d", path, batch.ErrCorrupt, length)
		}
		buf = append(append(buf[:0], prefix[:]...), make([]byte, length)...)
		if _, err := io.ReadFull(r, buf[batch.LengthFieldEnd:]); err != nil {
			return nil, fmt.Errorf("leaves of %s: %w", path, err)
		}
		if err := l.AddBatch(buf); err != nil {
			return nil, fmt.Errorf("leaves of %s: %w", path, err)
		}
	}
	if l.End() > next {
		return nil, fmt.Errorf("leaves of %s: records up to offset %d, the segment ends at %d", path, l.End(), next)
	}
	l.FillTo(next)
	return l, nil
}

// appendTree appends a segment's leaves to the partition's tree and
// writes the tiles that changed. upload runs it beside the object's upload
// (tiles of leaves no checkpoint names yet are harmless), with tierMu held.
func (d *Daemon) appendTree(ctx context.Context, p *Partition, l *audit.Leaves) error {
	if err := d.putKey(ctx); err != nil {
		return err
	}
	t, err := d.treeBefore(ctx, p, l.Start())
	if err != nil {
		return err
	}
	if err := t.Append(ctx, l); err != nil {
		p.tree = nil // reload from the bucket next time
		return fmt.Errorf("tiering: %s/%d: extend the Merkle tree: %w", p.topic, p.partition, err)
	}
	return nil
}

// checkpoint signs and writes the checkpoint of the partition's tree as
// appendTree left it, and records its size and root in entry. upload calls
// it once the object is verified, before the commit: a checkpoint never
// names leaves whose segment the bucket does not hold.
func (d *Daemon) checkpoint(ctx context.Context, p *Partition, entry *RemoteSegment) error {
	if p.shared() {
		// A leader deposed while its upload was in flight must not sign:
		// its segment is never committed (the manifest write is fenced)
		// and the new leader sweeps it, so its checkpoint would name
		// records the bucket does not hold - a rollback to verify until
		// the new leader uploads past it. Left: a claim landing between
		// this check and the checkpoint's PUT.
		if err := p.checkCurrent(ctx, p.passLead); err != nil {
			return err
		}
	}
	t := p.tree
	size, root := t.Size(), t.Root()
	if int64(size) != entry.NextOffset {
		return fmt.Errorf("tiering: %s/%d: the Merkle tree holds %d leaves, the segment ends at %d", p.topic, p.partition, size, entry.NextOffset)
	}
	origin := audit.Origin(d.store.ClusterID, p.topic, p.partition)
	signed, err := audit.Sign(d.opts.Signer, origin, size, root)
	if err == nil {
		err = audit.PutCheckpoint(ctx, d.partitionBucket(p), PartitionPrefix(p.topic, p.partition), size, signed)
	}
	if errors.Is(err, audit.ErrForkedCheckpoint) {
		// Never written over: the upload fails (and is retried) until
		// someone looks. Nothing tierlog does should get here.
		d.opts.Logger.Error("the Merkle tree does not extend a checkpoint the bucket keeps; not signing it", "topic", p.topic,
			"partition", p.partition, "tree_size", size, "root", hex.EncodeToString(root), "err", err)
	}
	if err != nil {
		return fmt.Errorf("tiering: %s/%d: checkpoint at tree size %d: %w", p.topic, p.partition, size, err)
	}
	entry.TreeSize, entry.TreeRoot = int64(size), hex.EncodeToString(root)
	return nil
}

// recordSignedTree records in the manifest the tree size and root of a
// checkpoint this daemon signed past the manifest's tree: the one at the
// newest committed segment's end, which a crash between that segment's
// checkpoint and its commit leaves unrecorded when the segment is then
// adopted (adoptFinished, or a lost disk's restore). The checkpoint must
// be signed with this daemon's key for the partition's origin, and the
// bucket's tiles must give its root at its size.
//
// Why this and PutCheckpoint's refusal to replace a numbered checkpoint
// with another root keep every checkpoint written extended by every later
// one: a later tree forks from a checkpoint of size N only if it is
// reopened below N and the leaves up to N are then computed otherwise.
// They are computed from the same records (the local segment, or the
// segment's recorded version in the bucket) unless retention deleted
// their segment first, which made them absent leaves. The manifest is
// below a checkpoint only after such a crash (one attempt at a time, the
// commit right after the checkpoint): an attempt withdrawn is uploaded
// again from the local log (same leaves), and an adopted one is recorded
// here - at the sweep that adopts it, and again before retention deletes
// segments past the tree - so retention never makes its leaves absent. A
// checkpoint not verifiable with this daemon's key (another leader's on a
// shared prefix, a signing key lost with the disk) is not recorded; the
// next upload's catch-up covers its segment, and PutCheckpoint still
// refuses a fork at exactly its size.
func (d *Daemon) recordSignedTree(ctx context.Context, p *Partition) error {
	if d.opts.Signer == nil {
		return nil
	}
	m := p.Manifest()
	size, _ := m.treeSize()
	c := m.committed()
	if len(c) == 0 || c[len(c)-1].NextOffset <= size {
		return nil
	}
	s := c[len(c)-1]
	prefix := PartitionPrefix(p.topic, p.partition)
	signed, err := audit.GetCheckpoint(ctx, d.store.Bucket, prefix, s.NextOffset)
	if errors.Is(err, cold.ErrNotFound) {
		return nil // nothing signed there: the next upload's catch-up covers s
	}
	if err != nil {
		return fmt.Errorf("tiering: %s/%d: %w", p.topic, p.partition, err)
	}
	skip := func(why error) error {
		d.opts.Logger.Warn("a checkpoint at the end of the committed segments is not recorded; the next upload builds the tree over them",
			"topic", p.topic, "partition", p.partition, "tree_size", s.NextOffset, "err", why)
		return nil
	}
	v, err := audit.NewVerifier(d.opts.Signer.Public)
	if err != nil {
		return err
	}
	cp, err := audit.Open(signed, audit.Origin(d.store.ClusterID, p.topic, p.partition), v)
	if err != nil {
		return skip(err)
	}
	if cp.Size != uint64(s.NextOffset) {
		return skip(fmt.Errorf("it names tree size %d", cp.Size))
	}
	root, err := audit.RootAt(ctx, d.tileBucket(p), prefix, cp.Size)
	if errors.Is(err, cold.ErrNotFound) {
		return skip(err)
	} else if err != nil {
		return fmt.Errorf("tiering: %s/%d: tree at size %d: %w", p.topic, p.partition, cp.Size, err)
	}
	if !bytes.Equal(root, cp.Hash) {
		return skip(fmt.Errorf("the tiles give root %x, the checkpoint %x", root, cp.Hash))
	}
	s.TreeSize, s.TreeRoot = int64(cp.Size), hex.EncodeToString(root)
	if err := p.commit(func(m *Manifest) { m.replace(s) }); err != nil {
		return err
	}
	d.opts.Logger.Info("recorded the signed Merkle tree of a segment adopted after a restart", "topic", p.topic, "partition", p.partition,
		"key", s.Key, "tree_size", s.TreeSize)
	return nil
}

// coverTree brings the partition's tree to the end of the committed
// segments before remote retention deletes any of them: it records a
// checkpoint this daemon signed there (recordSignedTree) or else builds the
// tree over the segments it does not cover, read back from the bucket,
// signs a checkpoint at their end and records it. A checkpoint another key
// signed at that size (a former leader's on a shared prefix, a key lost
// with a disk) holds the same root: the leaves come from the same records.
// Had retention deleted those segments first, the next upload would build
// absent leaves over them - a fork of that checkpoint.
func (d *Daemon) coverTree(ctx context.Context, p *Partition) error {
	if d.opts.Signer == nil {
		return nil
	}
	if err := d.recordSignedTree(ctx, p); err != nil {
		return err
	}
	m := p.Manifest()
	size, _ := m.treeSize()
	c := m.committed()
	if len(c) == 0 || c[len(c)-1].NextOffset <= size {
		return nil
	}
	last := c[len(c)-1]
	if err := d.putKey(ctx); err != nil {
		return err
	}
	if _, err := d.treeBefore(ctx, p, last.NextOffset); err != nil {
		return err
	}
	if err := d.checkpoint(ctx, p, &last); err != nil {
		p.tree = nil
		return err
	}
	if err := p.commit(func(m *Manifest) { m.replace(last) }); err != nil {
		p.tree = nil
		return err
	}
	d.dropPartials(ctx, p)
	d.opts.Logger.Info("built the Merkle tree over committed segments before remote retention deletes them", "topic", p.topic,
		"partition", p.partition, "tree_size", last.TreeSize)
	return nil
}

// dropPartials deletes the partial tiles that full tiles have superseded
// (audit.Tree.Superseded), once the commit naming the tree is made, every
// version of them on a versioned bucket. Best effort: a partial tile left
// is one object more, never read while its full tile exists. A topic
// under Object Lock keeps them (locked, the bucket refuses their deletion
// until their date); one written under a lock since lifted stays hidden,
// logged and counted (Store.purgeAll).
func (d *Daemon) dropPartials(ctx context.Context, p *Partition) {
	if p.tree == nil {
		return
	}
	folders := p.tree.Superseded()
	p.mu.RLock()
	locked := p.objLock.On()
	p.mu.RUnlock()
	if locked {
		return
	}
	err := d.store.purgeAll(ctx, "deleting superseded partial tiles", p.topic, folders, nil)
	if err != nil && ctx.Err() == nil {
		d.opts.Logger.Warn("delete partial tiles superseded by full ones (they are not read; the next pass does not retry)",
			"topic", p.topic, "partition", p.partition, "err", err)
	}
}

// treeBehind reports whether committed segments lie past the Merkle tree
// of a partition whose daemon signs: a pass then covers them (see
// uploadPending). p.mu must be held.
func (p *Partition) treeBehind() bool {
	d := p.daemon.Load()
	if d == nil || d.opts.Signer == nil {
		return false
	}
	size, _ := p.m.treeSize()
	for i := len(p.m.Segments) - 1; i >= 0; i-- {
		if s := p.m.Segments[i]; s.State == CopyFinished {
			return s.NextOffset > size && s.NextOffset > p.m.LogStartOffset
		}
	}
	return false
}

// PublicKey is the public key of the key that signs the checkpoints ("":
// the daemon builds no trees).
func (d *Daemon) PublicKey() string {
	if d.opts.Signer == nil {
		return ""
	}
	return d.opts.Signer.Public
}

// putKey writes the signing key's public key to the bucket, once per
// daemon, before the first checkpoint it signs.
func (d *Daemon) putKey(ctx context.Context) error {
	if d.keyPut.Load() {
		return nil
	}
	if err := audit.PutPublicKey(ctx, d.store.Bucket, d.opts.Signer); err != nil {
		return fmt.Errorf("tiering: public key: %w", err)
	}
	d.keyPut.Store(true)
	return nil
}

// treeBefore returns the partition's tree as the manifest's committed
// segments leave it, ready for leaves from offset start: p.tree if it is
// at the manifest's last tree size, else the tree reopened from the
// bucket's tiles at that size and checked against the recorded root.
// Committed segments the tree does not cover yet (uploaded before trees
// were built, or committed by a restart's adoption) are read back from the
// bucket and appended first.
func (d *Daemon) treeBefore(ctx context.Context, p *Partition, start int64) (*audit.Tree, error) {
	m := p.Manifest()
	size, root := m.treeSize()
	var behind []RemoteSegment
	for _, s := range m.committed() {
		if s.NextOffset > size && s.BaseOffset < start {
			behind = append(behind, s)
		}
	}
	t := p.tree
	if t == nil || t.Size() != uint64(size) || hex.EncodeToString(t.Root()) != root && size > 0 {
		var err error
		if t, err = audit.OpenTree(ctx, d.tileBucket(p), PartitionPrefix(p.topic, p.partition), uint64(size)); err != nil {
			return nil, fmt.Errorf("tiering: %s/%d: load the Merkle tree at size %d: %w", p.topic, p.partition, size, err)
		}
		if got := hex.EncodeToString(t.Root()); size > 0 && got != root {
			return nil, fmt.Errorf("tiering: %s/%d: the bucket's tiles give root %s at tree size %d, the manifest recorded %s: tiles changed",
				p.topic, p.partition, got, size, root)
		}
	}
	p.tree = t
	if len(behind) > 0 {
		d.opts.Logger.Info("building the Merkle tree of segments uploaded without one", "topic", p.topic, "partition", p.partition,
			"from", size, "segments", len(behind))
	}
	for _, s := range behind {
		l, err := d.remoteLeaves(ctx, p, s, int64(t.Size()))
		if err != nil {
			p.tree = nil
			return nil, err
		}
		if err := t.Append(ctx, l); err != nil {
			p.tree = nil
			return nil, fmt.Errorf("tiering: %s/%d: extend the Merkle tree with %s: %w", p.topic, p.partition, s.Key, err)
		}
	}
	return t, nil
}

// remoteLeaves reads a committed segment back from the bucket (the cold
// reader, the version the manifest records: an overwrite of the key is not
// what the tree signs) and returns the leaves of its offsets from from on.
func (d *Daemon) remoteLeaves(ctx context.Context, p *Partition, s RemoteSegment, from int64) (*audit.Leaves, error) {
	from = max(from, s.BaseOffset)
	l := audit.NewLeaves(from)
	ref := s.ref()
	for off := from; off < s.NextOffset; {
		data, err := p.reader.Read(ctx, ref, off, 8<<20)
		if err != nil {
			return nil, fmt.Errorf("tiering: read %s for its Merkle tree: %w", s.Key, err)
		}
		for pos := 0; pos < len(data); {
			h, err := batch.Peek(data[pos:])
			if err != nil {
				return nil, fmt.Errorf("tiering: read %s for its Merkle tree: %w", s.Key, err)
			}
			err = audit.EachLeafHash(data[pos:pos+h.Size()], func(o int64, leafHash []byte) error {
				if o < l.End() {
					return nil // the batch began below from
				}
				return l.Add(o, leafHash)
			})
			if err != nil {
				return nil, fmt.Errorf("tiering: read %s for its Merkle tree: %w", s.Key, err)
			}
			off = max(off, h.NextOffset())
			pos += h.Size()
		}
		if len(data) == 0 {
			break
		}
	}
	l.FillTo(s.NextOffset)
	return l, nil
}
