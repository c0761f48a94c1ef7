package tiering

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sync/errgroup"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
)

// Verification of an archive with no server (tierlog verify). For one
// partition it
//
//   - checks every kept checkpoint's signature (any key given) and origin,
//     and that the latest names the newest tree;
//   - recomputes the Merkle tree from the segments' records, read straight
//     from the bucket (one GET per object: its SHA-256 and its records come
//     from the same bytes), in offset order, and compares the root at every
//     checkpoint's and every manifest entry's tree size;
//   - compares every tile the recomputed tree has with the stored one;
//   - checks a consistency proof built from the tiles between consecutive
//     checkpoints (the recomputed roots agreeing implies it, but a proof is
//     what an auditor is handed);
//   - checks each object's SHA-256 against the manifest;
//   - looks for a rollback: the newest signed tree size must not exceed the
//     offsets the segments cover.
//
// Someone who rewrites an object and fixes every CRC and the manifest's
// SHA-256 still cannot make the records give the root of a signed
// checkpoint. History below the first segment the manifest keeps (deleted
// by retention) cannot be recomputed: the tree below it is taken from the
// tiles, and checkpoints at or below it are checked for signature and
// consistency only.

// VerifyOptions say what Archive.Verify trusts.
type VerifyOptions struct {
	// Keys are the public keys a checkpoint may be signed by (any one).
	Keys note.Verifiers
	// Trusted are checkpoints kept outside the bucket (an auditor's earlier
	// copy), already opened with Keys: the archive must still extend them,
	// even if the bucket's own newer checkpoints were removed. Each applies
	// to the partition its origin names.
	Trusted []TrustedCheckpoint
	// Progress, if not nil, is called as records are verified with the
	// partition's records and record bytes so far, and the record bytes
	// of all its segments.
	Progress func(records, bytes, total int64)
}

// TrustedCheckpoint is a checkpoint from outside the bucket; Name says
// where it came from in findings.
type TrustedCheckpoint struct {
	Name       string
	Checkpoint *audit.Checkpoint
}

// Finding is one way the archive disagrees with its signed history.
type Finding struct {
	// Offset is the first offset it concerns, Object the object that
	// disagrees (a segment, tile, checkpoint or manifest key).
	Offset  int64
	Object  string
	Problem string
	// checkpoint: found by the checkpoints alone (signature, consistency
	// proof, rollback), listed after what recomputing the tree found.
	checkpoint bool
}

func (f Finding) String() string {
	return fmt.Sprintf("offset %d, %s: %s", f.Offset, f.Object, f.Problem)
}

// VerifyReport is what Archive.Verify checked and found.
type VerifyReport struct {
	Topic     string
	Partition int32
	Origin    string
	// From and End bound the offsets recomputed from the segments.
	From, End      int64
	Segments       int
	Records, Bytes int64 // records and record batch bytes read
	// Checkpoints with a valid signature; BelowStart of them at tree sizes
	// the recomputation cannot reach (signature and consistency only);
	// Latest the largest signed tree size.
	Checkpoints, BelowStart int
	Latest                  uint64
	Roots                   int // roots compared with the recomputed tree
	Proofs                  int // consistency proofs verified
	Tiles                   int // tiles compared
	Notes                   []string
	// Findings, the first disagreement first (empty: the partition
	// verified).
	Findings []Finding
}

// checkpointGets bounds the checkpoint GETs of a partition in flight.
const checkpointGets = 16

// maxFindings bounds the findings kept per partition: after the first,
// the rest are mostly its consequences.
const maxFindings = 100

// Verify checks one partition of the archive (see above). Disagreements
// are Findings in the report (t.Findings first among those of the
// checkpoints); an error means the bucket could not be read and nothing
// is concluded.
func (a *Archive) Verify(ctx context.Context, t VerifyTarget, opts VerifyOptions) (*VerifyReport, error) {
	topic, partition := t.Topic, t.Partition
	prefix := PartitionPrefix(topic, partition)
	v := &verifier{
		ctx: ctx, b: a.store.Bucket, opts: opts, prefix: prefix, marker: t.ClusterID,
		rep:   &VerifyReport{Topic: topic, Partition: partition, Findings: slices.Clone(t.Findings)},
		cps:   map[uint64]signedRoot{},
		tiles: newTileChecker(a.store.Bucket, prefix),
	}
	v.trust()
	ap, err := a.Partition(ctx, topic, partition)
	var me *manifestError
	switch {
	case errors.As(err, &me):
		// Bytes that are not a valid manifest: nothing to recompute from,
		// but the checkpoints are still checked.
		v.add(Finding{Offset: max(me.offset, 0), Object: me.key, Problem: fmt.Sprintf("the manifest is not valid: %v; the segments are not recomputed", me.err)})
		ap, v.manifestKey, v.noManifest = &ArchivedPartition{Topic: topic, Partition: partition}, me.key, true
	case err != nil:
		return nil, err
	default:
		v.manifestKey = manifestKey(topic, partition, ap.ManifestVersion)
		if ok, err := a.store.Bucket.Exists(ctx, sharedManifestKey(topic, partition)); err == nil && ok {
			v.manifestKey = sharedManifestKey(topic, partition)
		}
	}
	v.ap = ap
	v.rep.Segments = len(ap.Segments)
	defer v.tiles.pending.Wait() // comparisons in flight when an error ends it
	if err := v.readCheckpoints(); err != nil {
		return nil, err
	}
	v.checkMarker()
	proofs := make(chan consistency, 1)
	go func() { proofs <- v.checkConsistency() }()
	err = v.recompute()
	c := <-proofs
	if err != nil {
		return nil, err
	}
	if c.err != nil {
		return nil, c.err
	}
	v.addConsistency(c)
	if !v.noManifest {
		v.checkRollback()
		if err := v.checkSigned(); err != nil {
			return nil, err
		}
	}
	v.rep.Tiles = int(v.tiles.compared.Load())
	slices.SortStableFunc(v.rep.Findings, func(x, y Finding) int {
		if x.checkpoint != y.checkpoint {
			if x.checkpoint {
				return 1
			}
			return -1
		}
		return cmp.Compare(x.Offset, y.Offset)
	})
	return v.rep, nil
}

type signedRoot struct {
	root []byte
	key  string
}

// verifier is the state of one partition's Verify.
type verifier struct {
	ctx         context.Context
	b           cold.Bucket
	opts        VerifyOptions
	ap          *ArchivedPartition
	prefix      string
	manifestKey string
	noManifest  bool // the manifest is not valid: nothing recomputed
	rep         *VerifyReport
	// cluster is the cluster id of the partition's signed history: a
	// trusted checkpoint's, else the first valid checkpoint's in the
	// bucket (clusterFrom says which); marker is the one the bucket's
	// unsigned marker names. trusted are the trusted checkpoints of this
	// partition.
	cluster, clusterFrom, marker string
	trusted                      []TrustedCheckpoint
	cps                          map[uint64]signedRoot // valid checkpoints by tree size
	tiles                        *tileChecker

	// The recomputation: tree holds the leaves up to cur.Start(), cur the
	// leaves since; bounds the tree sizes to compare roots at (or write
	// partial tiles at), from bound on; lastGood the last size whose root
	// agreed. stopped: the rest cannot be recomputed.
	tree     *audit.Tree
	cur      *audit.Leaves
	bounds   []int64
	bound    int
	lastGood int64
	stopped  bool
	total    int64 // record bytes of the segments, for Progress
}

func (v *verifier) add(f Finding) {
	if len(v.rep.Findings) < maxFindings {
		v.rep.Findings = append(v.rep.Findings, f)
	}
}

// addCheckpoint adds a finding of the checkpoints alone.
func (v *verifier) addCheckpoint(offset int64, object, format string, args ...any) {
	v.add(checkpointFinding(offset, object, format, args...))
}

func checkpointFinding(offset int64, object, format string, args ...any) Finding {
	return Finding{Offset: offset, Object: object, Problem: fmt.Sprintf(format, args...), checkpoint: true}
}

func (v *verifier) note(format string, args ...any) {
	v.rep.Notes = append(v.rep.Notes, fmt.Sprintf(format, args...))
}

// trust picks the trusted checkpoints of this partition; the first
// decides the partition's cluster id (the others must name it too).
func (v *verifier) trust() {
	for _, t := range v.opts.Trusted {
		cluster, topic, p, err := audit.ParseOrigin(t.Checkpoint.Origin)
		if err != nil || topic != v.rep.Topic || p != v.rep.Partition {
			continue
		}
		if v.cluster == "" {
			v.cluster, v.clusterFrom = cluster, "the trusted checkpoint "+t.Name
		} else if cluster != v.cluster {
			v.addCheckpoint(int64(t.Checkpoint.Size), t.Name, "the trusted checkpoint names cluster %s, %s names %s", cluster, v.clusterFrom, v.cluster)
			continue
		}
		v.trusted = append(v.trusted, t)
	}
}

// open checks a checkpoint of the bucket (stored under key): a valid
// signature by a key given, an origin naming this partition and its
// cluster. The first valid one decides the cluster if no trusted
// checkpoint did: the marker is not signed.
func (v *verifier) open(text []byte, key string) (*audit.Checkpoint, error) {
	c, err := audit.OpenWith(text, "", v.opts.Keys)
	if err != nil {
		return nil, err
	}
	cluster, topic, p, err := audit.ParseOrigin(c.Origin)
	switch {
	case err != nil:
		return nil, err
	case topic != v.rep.Topic || p != v.rep.Partition:
		return nil, fmt.Errorf("its origin %q names another partition than %s/%d", c.Origin, v.rep.Topic, v.rep.Partition)
	case v.cluster == "":
		v.cluster, v.clusterFrom = cluster, "the signed checkpoint "+key
	case cluster != v.cluster:
		return nil, fmt.Errorf("its origin %q names cluster %s, but %s names cluster %s", c.Origin, cluster, v.clusterFrom, v.cluster)
	}
	return c, nil
}

// checkMarker: the cluster id the bucket's marker names must be the one
// the partition's signed checkpoints name. It sets the report's origin.
func (v *verifier) checkMarker() {
	if v.cluster != "" && v.marker != "" && v.cluster != v.marker {
		v.addCheckpoint(0, clusterMarkerKey, "the bucket's cluster id %s is not the one %s names (%s)", v.marker, v.clusterFrom, v.cluster)
	}
	v.rep.Origin = audit.Origin(cmp.Or(v.cluster, v.marker), v.rep.Topic, v.rep.Partition)
}

// readCheckpoints opens every kept checkpoint, the latest and the trusted
// ones of this partition.
func (v *verifier) readCheckpoints() error {
	sizes, err := audit.ListCheckpoints(v.ctx, v.b, v.prefix)
	if err != nil {
		return err
	}
	// Read at once, checkpointGets at a time (a partition keeps one per
	// segment), the latest last; checked in order.
	texts, errs := make([][]byte, len(sizes)+1), make([]error, len(sizes)+1)
	var g errgroup.Group
	g.SetLimit(checkpointGets)
	for i := range texts {
		size := int64(-1) // the latest
		if i < len(sizes) {
			size = int64(sizes[i])
		}
		g.Go(func() error {
			texts[i], errs[i] = audit.GetCheckpoint(v.ctx, v.b, v.prefix, size)
			return nil
		})
	}
	g.Wait()
	prev := uint64(0)
	for i, size := range sizes {
		key := audit.CheckpointKey(v.prefix, size)
		text, err := texts[i], errs[i]
		if errors.Is(err, cold.ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return err
		}
		c, err := v.open(text, key)
		switch {
		case err != nil:
			v.addCheckpoint(int64(prev), key, "the checkpoint of tree size %d is not valid: %v", size, err)
		case c.Size != size:
			v.addCheckpoint(int64(prev), key, "the checkpoint stored for tree size %d names tree size %d", size, c.Size)
		default:
			v.cps[size] = signedRoot{root: c.Hash, key: key}
		}
		prev = size
	}
	if err := v.readLatest(len(sizes), texts[len(sizes)], errs[len(sizes)]); err != nil {
		return err
	}
	// After the latest: it is the newest of the bucket's own.
	for _, t := range v.trusted {
		if have, ok := v.cps[t.Checkpoint.Size]; ok && !bytes.Equal(have.root, t.Checkpoint.Hash) {
			v.addCheckpoint(int64(t.Checkpoint.Size), have.key, "the bucket's checkpoint of tree size %d signs root %x, the trusted checkpoint %s signs %x: a fork",
				t.Checkpoint.Size, have.root, t.Name, t.Checkpoint.Hash)
		}
		v.cps[t.Checkpoint.Size] = signedRoot{root: t.Checkpoint.Hash, key: t.Name}
	}
	return nil
}

// readLatest checks the latest checkpoint (text, or the error reading it
// gave) against the numbered ones: the newest of them, the same root,
// its numbered copy kept.
func (v *verifier) readLatest(numbered int, text []byte, err error) error {
	latestKey := audit.LatestCheckpointKey(v.prefix)
	newest := v.latest()
	if errors.Is(err, cold.ErrNotFound) {
		if numbered > 0 {
			v.addCheckpoint(int64(newest), latestKey, "the latest checkpoint is missing, though %d numbered checkpoints are kept", numbered)
		}
		return nil
	}
	if err != nil {
		return err
	}
	c, err := v.open(text, latestKey)
	if err != nil {
		v.addCheckpoint(int64(newest), latestKey, "the latest checkpoint is not valid: %v", err)
		return nil
	}
	have, ok := v.cps[c.Size]
	switch {
	case c.Size < newest:
		v.addCheckpoint(int64(c.Size), latestKey, "the latest checkpoint names tree size %d, but %s signs the larger tree size %d: the latest was rolled back",
			c.Size, v.cps[newest].key, newest)
	case ok && !bytes.Equal(have.root, c.Hash):
		v.addCheckpoint(int64(c.Size), latestKey, "the latest checkpoint signs root %x for tree size %d, %s signs %x for the same size: a fork",
			c.Hash, c.Size, have.key, have.root)
	case !ok:
		v.addCheckpoint(int64(c.Size), audit.CheckpointKey(v.prefix, c.Size), "the latest checkpoint names tree size %d, whose kept copy is missing", c.Size)
		v.cps[c.Size] = signedRoot{root: c.Hash, key: latestKey}
	}
	return nil
}

// latest is the largest signed tree size.
func (v *verifier) latest() uint64 {
	var n uint64
	for size := range v.cps {
		n = max(n, size)
	}
	return n
}

// consistency is what checkConsistency found.
type consistency struct {
	findings []Finding
	proofs   int // verified
	err      error
}

// checkConsistency verifies a consistency proof built from the tiles
// between each two consecutive valid checkpoints. It reads only the
// checkpoints (v.cps, not changed once read) and the bucket, so it runs
// beside recompute: its requests wait on the bucket while the tree is
// rebuilt.
func (v *verifier) checkConsistency() (c consistency) {
	sizes := slices.Sorted(maps.Keys(v.cps))
	for i, s := range sizes {
		if i == 0 || sizes[i-1] == 0 {
			continue
		}
		older, newer := v.cps[sizes[i-1]], v.cps[s]
		p, err := audit.ConsistencyProof(v.ctx, v.b, v.prefix, sizes[i-1], s)
		var bad *audit.BadTileError
		switch {
		case errors.Is(err, cold.ErrNotFound):
			c.findings = append(c.findings, checkpointFinding(int64(sizes[i-1]), newer.key, "no consistency proof with the checkpoint of tree size %d: a tile it needs is missing: %v", sizes[i-1], err))
			continue
		case errors.As(err, &bad):
			c.findings = append(c.findings, checkpointFinding(v.tileOffset(bad.Key), bad.Key, "no consistency proof between the checkpoints of tree sizes %d and %d: %v", sizes[i-1], s, bad))
			continue
		}
		if err != nil {
			c.err = err
			return c
		}
		if err := audit.VerifyConsistency(sizes[i-1], s, p, older.root, newer.root); err != nil {
			c.findings = append(c.findings, checkpointFinding(int64(sizes[i-1]), newer.key, "the tree of tree size %d does not extend the one %s signs at tree size %d: the consistency proof from the tiles fails (%v)",
				s, older.key, sizes[i-1], err))
			continue
		}
		c.proofs++
	}
	return c
}

// addConsistency reports what checkConsistency found after what
// recompute found, and counts the checkpoints.
func (v *verifier) addConsistency(c consistency) {
	v.rep.Checkpoints = len(v.cps)
	v.rep.Latest = v.latest()
	for s := range v.cps {
		if int64(s) <= v.rep.From && v.rep.From > 0 {
			v.rep.BelowStart++
		}
	}
	for _, f := range c.findings {
		v.add(f)
	}
	v.rep.Proofs = c.proofs
}

// checkRollback: the segments must reach the newest signed tree size, and
// no manifest entry may record a tree larger than the newest checkpoint.
func (v *verifier) checkRollback() {
	latest := v.latest()
	end := v.ap.End
	last := v.manifestKey
	maxTree, maxKey := v.ap.TreeSize, v.manifestKey
	for _, s := range v.ap.Segments {
		last = s.Key
		if s.TreeSize > maxTree {
			maxTree, maxKey = s.TreeSize, s.Key
		}
	}
	if latest > 0 && int64(latest) > end {
		v.addCheckpoint(end, last, "the checkpoint %s signs a tree of %d records (offsets up to %d), but the segments the manifest names end at offset %d: offsets %d to %d are missing (rolled back or truncated)",
			v.cps[latest].key, latest, latest-1, end, end, latest-1)
	}
	if maxTree > int64(latest) {
		where := ""
		if maxKey != v.manifestKey {
			where = " after " + maxKey
		}
		v.addCheckpoint(int64(latest), v.manifestKey, "the manifest records tree size %d%s, but the newest checkpoint is of tree size %d: checkpoints were removed (rolled back)",
			maxTree, where, latest)
	}
	if end > int64(latest) && !v.stopped {
		v.note("offsets %d to %d are in the archive but no checkpoint signs them yet", latest, end-1)
	}
}

// checkSigned: a partition with committed segments must have signed
// history - the operator gave --public-key expecting it. None at all
// (no checkpoint valid or kept) is a finding: its checkpoints were
// deleted, or, with no Merkle tree either, it was tiered before tierlog
// signed its history (a node builds the tree at the partition's next
// upload) or all of it was deleted, which look the same.
func (v *verifier) checkSigned() error {
	if len(v.ap.Segments) == 0 || len(v.cps) > 0 {
		return nil
	}
	tree := v.manifestTree()
	err := retry(v.ctx, func() error {
		return cold.Folders(v.ctx, v.b, v.prefix, func(f string) error {
			tree = tree || f == v.prefix+audit.Dir
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("tiering: verify %s/%d: list %s: %w", v.rep.Topic, v.rep.Partition, v.prefix, err)
	}
	first := v.ap.Segments[0].BaseOffset
	if tree {
		v.addCheckpoint(first, v.prefix+audit.Dir, "WARNING: the partition has a Merkle tree (tiles or tree sizes in the manifest) but no signed checkpoint valid with the keys given: its checkpoints were deleted, or signed by another key")
	} else {
		v.addCheckpoint(first, v.manifestKey, "WARNING: no signed history: the manifest names %d segments (offsets %d to %d) but records no Merkle tree, and the bucket holds no %s: tiered before tierlog signed its history, or that history was deleted",
			len(v.ap.Segments), first, v.ap.End-1, audit.Dir)
	}
	return nil
}

// tileOffset is the first leaf below the tile stored under key.
func (v *verifier) tileOffset(key string) int64 {
	level, n, _, ok := parseTileKey(strings.TrimPrefix(key, v.prefix+audit.Dir))
	if !ok {
		return 0
	}
	return int64(n) * audit.TileWidth << (audit.TileHeight * level)
}

// objectAt names the segment holding offset, or the gap it falls in.
func (v *verifier) objectAt(offset int64) string {
	for i, s := range v.ap.Segments {
		if offset < s.BaseOffset {
			if i == 0 {
				return fmt.Sprintf("(no segment: offsets below %d are not in the archive)", s.BaseOffset)
			}
			return fmt.Sprintf("(no segment: the manifest %s names none for offsets %d to %d)", v.manifestKey, v.ap.Segments[i-1].NextOffset, s.BaseOffset-1)
		}
		if offset < s.NextOffset {
			return s.Key
		}
	}
	return fmt.Sprintf("(no segment: the segments end at offset %d)", v.ap.End)
}

func hexRoot(root []byte) string { return hex.EncodeToString(root) }

// forEachLeaf calls fn with the offset and leaf hash of every record of
// the raw batches (a decoded chunk). leafHash is reused by the next call.
func forEachLeaf(raw []byte, fn func(offset int64, leafHash []byte, batchBytes int) error) error {
	for pos := 0; pos < len(raw); {
		h, err := batch.Peek(raw[pos:])
		if err == nil && h.Size() > len(raw)-pos {
			err = batch.ErrShortBatch
		}
		if err != nil {
			return err
		}
		size := h.Size()
		err = audit.EachLeafHash(raw[pos:pos+size], func(o int64, leafHash []byte) error {
			n := size
			size = 0 // count a batch's bytes once
			return fn(o, leafHash, n)
		})
		if err != nil {
			return err
		}
		pos += h.Size()
	}
	return nil
}
