package tiering

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
)

// maxPiece bounds the leaf hashes a verifier holds between two appends to
// its tree (128 KiB, 16 full tiles): each append starts comparing the
// tiles it completed, so small ones spread the tile GETs over the read of
// the segments rather than holding the tree up with hundreds at once.
const maxPiece = 1 << 12

// recordProblem is a record that cannot be part of the segment; it stops
// the segment's scan (and is not retried).
type recordProblem struct {
	offset int64
	msg    string
}

func (p *recordProblem) Error() string { return p.msg }

// permanent is an error of the tree, not of the segment's records: it
// ends the verification.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }

// recompute rebuilds the tree from the committed segments, comparing its
// root at every checkpoint and manifest tree size and its tiles with the
// stored ones.
func (v *verifier) recompute() error {
	segs := v.ap.Segments
	v.rep.From, v.rep.End = v.ap.Start, v.ap.End
	if len(segs) == 0 {
		return nil
	}
	from := segs[0].BaseOffset
	v.rep.From = from
	if err := v.openAt(from); err != nil {
		return err
	}
	set := map[int64]bool{}
	for size := range v.cps {
		if int64(size) > from {
			set[int64(size)] = true
		}
	}
	for _, s := range segs {
		set[s.NextOffset] = true
		if s.TreeSize > from {
			set[s.TreeSize] = true
		}
	}
	if v.ap.TreeSize > from {
		set[v.ap.TreeSize] = true
	}
	v.bounds = slices.Sorted(maps.Keys(set))
	for _, s := range segs {
		v.total += s.RawSize
	}
	rd := v.readSegments(segs)
	defer rd.close()
	for _, s := range segs {
		if v.stopped {
			break
		}
		sr := rd.next()
		if sr == nil { // the reader ended early: v.ctx is done
			return fmt.Errorf("tiering: verify %s/%d: read %s: %w", v.rep.Topic, v.rep.Partition, s.Key, context.Cause(v.ctx))
		}
		if err := v.segment(s, sr); err != nil {
			return err
		}
	}
	mismatches, err := v.tiles.take()
	if len(v.cps) == 0 && !v.manifestTree() {
		// Nothing signs or records a tree: there are no tiles to judge
		// (checkSigned reports the partition unsigned).
		mismatches = nil
	}
	for _, m := range mismatches {
		v.tileFinding(m)
	}
	return err
}

// manifestTree reports whether the manifest records a Merkle tree.
func (v *verifier) manifestTree() bool {
	tree := v.ap.TreeSize > 0
	for _, s := range v.ap.Segments {
		tree = tree || s.TreeSize > 0
	}
	return tree
}

// openAt starts the tree at offset from, the first segment's base: empty
// at 0, else from the tiles at that size (history retention deleted), or
// empty if the tree never had that size (it began with this segment, its
// offsets below are absent leaves).
func (v *verifier) openAt(from int64) error {
	v.cur, v.lastGood = audit.NewLeaves(from), from
	t, err := audit.OpenTree(v.ctx, v.tiles, v.prefix, uint64(from))
	switch {
	case err == nil && from > 0:
		v.note("offsets 0 to %d are not in the archive (deleted by retention): the tree below offset %d is taken from the tiles, and checkpoints of tree size %d or less are checked for signature and consistency only",
			from-1, from, from)
		if cp, ok := v.cps[uint64(from)]; ok {
			v.rep.Roots++
			if !bytes.Equal(t.Root(), cp.root) {
				v.add(Finding{Offset: from - 1, Object: cp.key, Problem: fmt.Sprintf(
					"the tiles give root %x at tree size %d (below the archive's start), the checkpoint signs %x: the tiles were changed", t.Root(), from, cp.root)})
			}
		}
	case errors.Is(err, cold.ErrNotFound):
		v.note("offsets 0 to %d were never in the archive: the tree holds absent leaves for them", from-1)
		if t, err = audit.OpenTree(v.ctx, v.tiles, v.prefix, 0); err != nil {
			return err
		}
	case v.badTile(err):
		v.stop(from, fmt.Sprintf("the tiles at tree size %d (the archive's start) cannot be read", from))
		return nil
	case err != nil:
		return err
	}
	v.tree = t
	return nil
}

// segment adds the leaves of segment s as sr reads it.
func (v *verifier) segment(s RemoteSegment, sr *segmentRead) error {
	defer sr.stop() // whatever ends it early needs no more of s
	if err := v.fillTo(s.BaseOffset); err != nil {
		return err
	}
	resume, attempt := int64(-1), 0
	var err error
	for cl := range sr.chunks {
		if err != nil {
			continue // drained: the reader stops at the next chunk
		}
		if cl.attempt != attempt {
			// A read retried from the object's start: the leaves up to
			// here were added from the earlier GET.
			attempt, resume = cl.attempt, v.cur.End()
		}
		err = cl.apply(func(o int64, h []byte, n int) error {
			if o < resume {
				return nil
			}
			return v.record(s, o, h, n)
		})
		if v.opts.Progress != nil {
			v.opts.Progress(v.rep.Records, v.rep.Bytes, v.total)
		}
		if err != nil {
			sr.stop()
		}
	}
	if err == nil {
		err = sr.err
	}
	sum := sr.sum
	var rp *recordProblem
	var perm permanent
	switch {
	case errors.As(err, &perm):
		return perm.err
	case errors.As(err, &rp):
		v.add(Finding{Offset: rp.offset, Object: s.Key, Problem: rp.msg})
		return v.skip(s)
	case errors.Is(err, cold.ErrNotFound):
		v.add(Finding{Offset: s.BaseOffset, Object: s.Key, Problem: fmt.Sprintf("the object is missing; the manifest names it for offsets %d to %d", s.BaseOffset, s.NextOffset-1)})
		return v.skip(s)
	case errors.Is(err, cold.ErrCorruptObject):
		v.add(Finding{Offset: s.BaseOffset, Object: s.Key, Problem: fmt.Sprintf("the object is not the one uploaded: %v", err)})
		return v.skip(s)
	case err != nil:
		return fmt.Errorf("tiering: verify %s/%d: read %s: %w", v.rep.Topic, v.rep.Partition, s.Key, err)
	}
	if got := hex.EncodeToString(sum[:]); s.SHA256 != "" && got != s.SHA256 {
		v.add(Finding{Offset: s.BaseOffset, Object: s.Key, Problem: fmt.Sprintf("the object's SHA-256 is %s, the manifest records %s", got, s.SHA256)})
	}
	return v.fillTo(s.NextOffset)
}

// record adds the leaf hash of the record at offset o of segment s.
func (v *verifier) record(s RemoteSegment, o int64, h []byte, batchBytes int) error {
	switch {
	case o < s.BaseOffset || o >= s.NextOffset:
		return &recordProblem{offset: o, msg: fmt.Sprintf("a record at offset %d, outside the segment's offsets %d to %d", o, s.BaseOffset, s.NextOffset-1)}
	case o < v.cur.End():
		return &recordProblem{offset: o, msg: fmt.Sprintf("the record at offset %d follows offset %d: records out of order", o, v.cur.End()-1)}
	}
	for v.bound < len(v.bounds) && v.bounds[v.bound] <= o {
		if err := v.cut(v.bounds[v.bound]); err != nil {
			return permanent{err}
		}
	}
	if err := v.cur.Add(o, h); err != nil {
		return permanent{err}
	}
	v.rep.Records++
	v.rep.Bytes += int64(batchBytes)
	if v.cur.End()-v.cur.Start() >= maxPiece {
		if err := v.appendCur(false); err != nil {
			return permanent{err}
		}
	}
	return nil
}

// fillTo adds absent leaves up to end (offsets no segment holds), cutting
// at the bounds on the way.
func (v *verifier) fillTo(end int64) error {
	for v.bound < len(v.bounds) && v.bounds[v.bound] <= end {
		if err := v.cut(v.bounds[v.bound]); err != nil {
			return err
		}
	}
	for v.cur.End() < end {
		v.cur.FillTo(min(end, v.cur.End()+maxPiece))
		if v.cur.End() < end {
			if err := v.appendCur(false); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendCur appends the leaves held to the tree (comparing its tiles,
// partial ones only at a bound) and starts a new run.
func (v *verifier) appendCur(atBound bool) error {
	if err := v.tree.Append(v.ctx, v.cur); err != nil {
		return fmt.Errorf("tiering: verify %s/%d: %w", v.rep.Topic, v.rep.Partition, err)
	}
	v.cur = audit.NewLeaves(v.cur.End())
	if !atBound {
		return nil
	}
	// At a bound every level's partial tile, the ones a proof at this
	// size reads: those of the levels the append did not reach too, which
	// an append between bounds wrote.
	v.tiles.partials.Store(true)
	defer v.tiles.partials.Store(false)
	if err := v.tree.WriteEdge(v.ctx); err != nil {
		return fmt.Errorf("tiering: verify %s/%d: %w", v.rep.Topic, v.rep.Partition, err)
	}
	return nil
}

// cut brings the tree to size b, a bound, and compares its root with what
// the checkpoint and manifest record for b.
func (v *verifier) cut(b int64) error {
	v.cur.FillTo(b)
	if err := v.appendCur(true); err != nil {
		return err
	}
	v.bound++
	return v.compareRoot(b)
}

// manifestRoot is the root the manifest records at tree size b ("" if
// none) and the segment it records it after (or the manifest, for the
// tree it keeps beside its segments).
func (v *verifier) manifestRoot(b int64) (root, key string) {
	for _, s := range v.ap.Segments {
		if s.TreeSize == b && s.TreeRoot != "" {
			return s.TreeRoot, s.Key
		}
	}
	if v.ap.TreeSize == b && v.ap.TreeRoot != "" {
		return v.ap.TreeRoot, v.manifestKey
	}
	return "", ""
}

func (v *verifier) compareRoot(b int64) error {
	root := v.tree.Root()
	cp, hasCP := v.cps[uint64(b)]
	mroot, mkey := v.manifestRoot(b)
	if !hasCP && mroot == "" {
		return nil // the tile mismatches so far wait for a root to judge them
	}
	cpOK := !hasCP || bytes.Equal(root, cp.root)
	mOK := mroot == "" || mroot == hexRoot(root)
	if hasCP {
		v.rep.Roots++
	}
	if mroot != "" {
		v.rep.Roots++
	}
	mismatches, err := v.tiles.take()
	if err != nil {
		return err
	}
	switch {
	case cpOK && mOK:
		// The records give the signed root: whatever tile differs is wrong.
		for _, m := range mismatches {
			v.tileFinding(m)
		}
		v.lastGood = b
		return nil
	case hasCP && cpOK:
		v.add(Finding{Offset: v.lastGood, Object: v.manifestKey, Problem: fmt.Sprintf(
			"the manifest records root %s at tree size %d (after %s), but the records give the root %s signs: the manifest was changed", mroot, b, mkey, cp.key)})
		v.lastGood = b
		return nil
	}
	signed, what := cp.root, "the checkpoint "+cp.key
	if !hasCP {
		signed, _ = hex.DecodeString(mroot)
		what = "the manifest's entry for " + mkey
	}
	fork := ""
	if hasCP && mroot != "" && mOK {
		fork = cp.key
	}
	v.explain(b, root, signed, what, fork, mismatches)
	return v.resync(b, root, signed)
}

// explain reports why the records do not give the signed root at tree
// size b: the first leaf that differs from the tiles' (proven part of the
// signed tree by an inclusion proof from them), else a fork (fork is the
// checkpoint's key when the manifest agrees with the records), else the
// range.
func (v *verifier) explain(b int64, root, signed []byte, what, fork string, mismatches []tileMismatch) {
	for _, m := range mismatches {
		if m.level != 0 || len(m.stored) != audit.HashSize || m.wanted == nil {
			continue
		}
		p, err := audit.InclusionProof(v.ctx, v.b, v.prefix, uint64(m.offset), uint64(b))
		if err == nil && audit.VerifyInclusion(m.stored, uint64(m.offset), uint64(b), p, signed) == nil {
			v.add(Finding{Offset: m.offset, Object: v.objectAt(m.offset), Problem: fmt.Sprintf(
				"the record at offset %d is not the one signed: %s (tree size %d) holds leaf hash %x there, as an inclusion proof from the tiles shows; the record in the object hashes to %x",
				m.offset, what, b, m.stored, m.wanted)})
		} else {
			v.add(Finding{Offset: m.offset, Object: v.objectAt(m.offset), Problem: fmt.Sprintf(
				"the record at offset %d differs from the leaf the tiles hold (%s), and the tiles do not prove %s either: records and tiles were changed", m.offset, m.key, what)})
		}
		return
	}
	if fork != "" {
		v.add(Finding{Offset: v.lastGood, Object: fork, Problem: fmt.Sprintf(
			"the checkpoint signs root %x for tree size %d, but the records give %x, as the manifest and the tiles record: a checkpoint for a different tree of the same size (a fork)",
			signed, b, root)})
		return
	}
	v.add(Finding{Offset: v.lastGood, Object: v.objectAt(v.lastGood), Problem: fmt.Sprintf(
		"the records at offsets %d to %d give root %x at tree size %d, %s records %x; the tiles agree with the records (rewritten too?), so no closer offset can be named",
		v.lastGood, b-1, root, b, what, signed)})
}

// resync goes on after a disagreement at tree size b: with the
// recomputed tree if the tiles agree with it (the signed root is the odd
// one out), else with the tree the tiles hold if that gives the signed
// root, else not at all.
func (v *verifier) resync(b int64, root, signed []byte) error {
	v.lastGood = b
	t, err := audit.OpenTree(v.ctx, v.tiles, v.prefix, uint64(b))
	switch {
	case errors.Is(err, cold.ErrNotFound):
		v.stop(b, fmt.Sprintf("the tiles at tree size %d are missing", b))
		return nil
	case v.badTile(err):
		v.stop(b, fmt.Sprintf("a tile at tree size %d cannot be read", b))
		return nil
	case err != nil:
		return err
	case root == nil && signed == nil:
		v.tree = t // nothing to check the tiles against here
		return nil
	case bytes.Equal(t.Root(), root):
		return nil
	case signed != nil && bytes.Equal(t.Root(), signed):
		v.tree = t
		v.note("recomputed from offset %d on from the tree the tiles hold at that size, which gives the signed root", b)
		return nil
	}
	v.stop(b, fmt.Sprintf("the tiles do not give the signed root at tree size %d either", b))
	return nil
}

// skip goes past segment s, whose records could not be read, resuming
// with the tree the tiles hold at its end.
func (v *verifier) skip(s RemoteSegment) error {
	for v.bound < len(v.bounds) && v.bounds[v.bound] <= s.NextOffset {
		v.bound++
	}
	if _, err := v.tiles.take(); err != nil {
		return err
	}
	v.cur = audit.NewLeaves(s.NextOffset)
	var signed []byte
	if cp, ok := v.cps[uint64(s.NextOffset)]; ok {
		signed = cp.root
	} else if r, _ := v.manifestRoot(s.NextOffset); r != "" {
		signed, _ = hex.DecodeString(r)
	}
	return v.resync(s.NextOffset, nil, signed)
}

// badTile reports a tile of the wrong size (err from reading the tree)
// as a finding: the bucket answered with bytes that are not the tile.
func (v *verifier) badTile(err error) bool {
	var bad *audit.BadTileError
	if !errors.As(err, &bad) {
		return false
	}
	v.add(Finding{Offset: v.tileOffset(bad.Key), Object: bad.Key, Problem: bad.Error()})
	return true
}

func (v *verifier) stop(b int64, why string) {
	v.stopped = true
	v.note("%s: offsets from %d on are not recomputed", why, b)
}

// tileFinding reports a tile that differs while the records give the
// signed root.
func (v *verifier) tileFinding(m tileMismatch) {
	if m.stored == nil {
		v.add(Finding{Offset: m.offset, Object: m.key, Problem: "the tile is missing"})
		return
	}
	if len(m.stored) == 0 {
		v.add(Finding{Offset: m.offset, Object: m.key, Problem: fmt.Sprintf(
			"the tile is cut short: it ends before its entry for offset %d (level %d)", m.offset, m.level*audit.TileHeight)})
		return
	}
	v.add(Finding{Offset: m.offset, Object: m.key, Problem: fmt.Sprintf(
		"the tile differs from the tree recomputed from the records (which give the signed roots): its entry for offset %d (level %d) is %x, the records give %x",
		m.offset, m.level*audit.TileHeight, m.stored, m.wanted)})
}
