package tiering

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// signWith makes e's daemon build the partitions' trees, signing as node
// 0 (or node[0]) with the key in keyPath (created if missing).
func (e *env) signWith(keyPath string, node ...int) *audit.Key {
	e.t.Helper()
	k, err := audit.LoadOrCreateKey(keyPath, audit.KeyName(append(node, 0)[0]))
	if err != nil {
		e.t.Fatal(err)
	}
	e.daemon.opts.Signer = k
	return k
}

// independentTree is the reference tree (merkle/testonly) over every
// record of p read back through the read path (the bucket's segments for
// what is remote), absent leaves filling offsets below the first.
func independentTree(t *testing.T, p *Partition, to int64) *testonly.Tree {
	t.Helper()
	ref := testonly.New(rfc6962.DefaultHasher)
	for _, r := range readAll(t, p, p.StartOffset()) {
		if r.Offset >= to {
			break
		}
		for o := int64(ref.Size()); o < r.Offset; o++ {
			ref.AppendData(audit.AbsentLeaf(o))
		}
		ar := audit.Record{Offset: r.Offset, Timestamp: r.Timestamp, Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			ar.Headers = append(ar.Headers, audit.Header{Key: h.Key, Value: h.Value})
		}
		ref.AppendData(audit.EncodeLeaf(nil, ar))
	}
	for o := int64(ref.Size()); o < to; o++ {
		ref.AppendData(audit.AbsentLeaf(o))
	}
	return ref
}

// checkTree compares what the bucket and manifest say of p's tree with
// the independent tree over its records: the latest checkpoint (signed by
// the key the bucket publishes), one kept checkpoint per segment, each
// segment's tree size and root, and the level-0 tiles. Checkpoints may
// be signed by any of nodes (default: node 0).
func checkTree(t *testing.T, e *env, p *Partition, nodes ...int) {
	t.Helper()
	ctx := context.Background()
	end := p.UploadedEnd()
	ref := independentTree(t, p, end)
	prefix := PartitionPrefix(p.topic, p.partition)
	if len(nodes) == 0 {
		nodes = []int{0}
	}
	var vs []note.Verifier
	for _, n := range nodes {
		v, err := audit.GetPublicKey(ctx, e.bucket, audit.KeyName(n))
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	origin := audit.Origin(e.store.ClusterID, p.topic, p.partition)
	open := func(signed []byte) (*audit.Checkpoint, error) {
		var errs []error
		for _, v := range vs {
			c, err := audit.Open(signed, origin, v)
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	latest, err := audit.GetCheckpoint(ctx, e.bucket, prefix, -1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := open(latest)
	if err != nil {
		t.Fatal(err)
	}
	if c.Size != uint64(end) || !bytes.Equal(c.Hash, ref.Hash()) {
		t.Fatalf("latest checkpoint: size %d root %x, want %d %x", c.Size, c.Hash, end, ref.Hash())
	}
	var sizes []uint64
	for _, s := range p.Manifest().committed() {
		if s.TreeSize != s.NextOffset || s.TreeRoot != hex.EncodeToString(ref.HashAt(uint64(s.NextOffset))) {
			t.Fatalf("segment %d..%d: tree size %d root %s, want %d %x", s.BaseOffset, s.NextOffset, s.TreeSize, s.TreeRoot, s.NextOffset, ref.HashAt(uint64(s.NextOffset)))
		}
		sizes = append(sizes, uint64(s.NextOffset))
	}
	kept, err := audit.ListCheckpoints(ctx, e.bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(kept, sizes) {
		t.Fatalf("kept checkpoints %v, segments end at %v", kept, sizes)
	}
	for _, s := range kept {
		signed, err := audit.GetCheckpoint(ctx, e.bucket, prefix, int64(s))
		if err != nil {
			t.Fatal(err)
		}
		if c, err := open(signed); err != nil || !bytes.Equal(c.Hash, ref.HashAt(s)) {
			t.Fatalf("checkpoint %d: %v", s, err)
		}
	}
	for n := uint64(0); n*256 < uint64(end); n++ {
		w := int(min(256, uint64(end)-n*256))
		tile, err := audit.ReadTile(ctx, e.bucket, prefix, 0, n, w)
		if err != nil {
			t.Fatal(err)
		}
		for j := range uint64(w) {
			if !bytes.Equal(tile[j*32:j*32+32], ref.LeafHash(n*256+j)) {
				t.Fatalf("tile 0/%d entry %d differs from leaf %d's hash", n, j, n*256+j)
			}
		}
	}
	for _, i := range []uint64{0, uint64(end) / 3, uint64(end) - 1} {
		proof, err := audit.InclusionProof(ctx, e.bucket, prefix, i, uint64(end))
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyInclusion(ref.LeafHash(i), i, uint64(end), proof, c.Hash); err != nil {
			t.Fatalf("inclusion of %d: %v", i, err)
		}
	}
}

// The daemon builds the tree as it uploads; a restart and a restore from
// the bucket continue the same tree; the orphan sweep keeps it.
func TestTreeBuiltAsSegmentsUpload(t *testing.T) {
	for _, bk := range []struct {
		name   string
		bucket func(*testing.T) cold.Bucket
	}{{"file", newFileBucket}, {"minio", minioBucket}} {
		t.Run(bk.name, func(t *testing.T) {
			bucket := bk.bucket(t)
			dataDir := t.TempDir()
			keyPath := filepath.Join(t.TempDir(), "signing.key")
			e := newEnv(t, bucket, dataDir)
			e.signWith(keyPath)
			p := e.open("audit", 0, true)
			produce(t, p, 300)
			e.settle(p)
			if n := len(p.Manifest().committed()); n < 4 {
				t.Fatalf("%d segments uploaded", n)
			}
			checkTree(t, e, p)

			// The orphan sweep deletes an orphan segment but no tree object.
			ctx := context.Background()
			prefix := PartitionPrefix("audit", 0)
			orphan := prefix + "00000000000099999999-0-0123456789abcdef.seg"
			if _, err := bucket.Upload(ctx, orphan, strings.NewReader("x"), 1); err != nil {
				t.Fatal(err)
			}
			before := tlogKeys(t, bucket, prefix)
			if err := e.daemon.cleanup(ctx, p); err != nil {
				t.Fatal(err)
			}
			if ok, _ := bucket.Exists(ctx, orphan); ok {
				t.Fatal("the sweep did not run: the orphan is still there")
			}
			if after := tlogKeys(t, bucket, prefix); !slices.Equal(before, after) {
				t.Fatalf("the orphan sweep changed the tree's objects: %d before, %d after", len(before), len(after))
			}

			// A restart: same data directory and key, a new daemon.
			p.Close()
			e2 := newEnv(t, bucket, dataDir)
			e2.signWith(keyPath)
			p2 := e2.open("audit", 0, true)
			produce(t, p2, 100)
			e2.settle(p2)
			checkTree(t, e2, p2)
			p2.Close()

			// A restore from the bucket: empty data directory.
			e3 := restoreEnv(t, bucket, t.TempDir())
			e3.signWith(keyPath)
			p3 := e3.open("audit", 0, true)
			defer p3.Close()
			produce(t, p3, 100)
			e3.settle(p3)
			checkTree(t, e3, p3)
		})
	}
}

func tlogKeys(t *testing.T, b cold.Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	if err := b.Iter(context.Background(), prefix+audit.Dir, func(k string) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no tree objects")
	}
	return keys
}

// Segments uploaded before the tree existed (no signer) get their leaves
// from the bucket's objects at the next upload with one: the tree covers
// the whole partition from offset 0.
func TestTreeCatchesUpWithSegmentsUploadedWithout(t *testing.T) {
	e2, p2, _ := tieredWithoutSigner(t)
	produce(t, p2, 100)
	e2.settle(p2)
	m := p2.Manifest().committed()
	last := m[len(m)-1]
	ref := independentTree(t, p2, last.NextOffset)
	if last.TreeSize != last.NextOffset || last.TreeRoot != hex.EncodeToString(ref.Hash()) {
		t.Fatalf("after catching up: tree %d %s, want %d %x", last.TreeSize, last.TreeRoot, last.NextOffset, ref.Hash())
	}
}

// A partition tiered before its node signed and idle since gets its tree
// and a signed checkpoint without waiting for a new segment: otherwise
// verify reports its history as unsigned for as long as it stays idle.
func TestTreeCoversIdlePartitionUploadedWithout(t *testing.T) {
	ctx := context.Background()
	e2, p2, bucket := tieredWithoutSigner(t)
	end := p2.UploadedEnd()
	testutil.Eventually(t, 10*time.Second, func() bool {
		e2.daemon.pass(ctx)
		return p2.Manifest().TreeSize == end
	}, "the idle partition's tree never covered its committed segments")
	ref := independentTree(t, p2, end)
	if m := p2.Manifest(); m.TreeRoot != hex.EncodeToString(ref.Hash()) {
		t.Fatalf("tree root %s, want %x", m.TreeRoot, ref.Hash())
	}
	if _, err := audit.GetCheckpoint(ctx, bucket, PartitionPrefix("audit", 0), end); err != nil {
		t.Fatalf("no checkpoint at %d: %v", end, err)
	}
	if p2.needsPass() {
		t.Fatal("the partition still needs a pass once its tree covers it")
	}
}

// tieredWithoutSigner tiers records of a partition with no signer, then
// reopens it under a daemon that signs (closed with the test).
func tieredWithoutSigner(t *testing.T) (*env, *Partition, cold.Bucket) {
	bucket := newFileBucket(t)
	dataDir := t.TempDir()
	e := newEnv(t, bucket, dataDir)
	p := e.open("audit", 0, true)
	produce(t, p, 150)
	e.settle(p)
	for _, s := range p.Manifest().committed() {
		if s.TreeSize != 0 || s.TreeRoot != "" {
			t.Fatalf("a segment uploaded without a signer has a tree: %+v", s)
		}
	}
	p.Close()
	e2 := newEnv(t, bucket, dataDir)
	e2.signWith(filepath.Join(t.TempDir(), "k"))
	p2 := e2.open("audit", 0, true)
	t.Cleanup(func() { p2.Close() })
	return e2, p2, bucket
}

// failingUploads fails uploads of keys containing match n times.
type failingUploads struct {
	cold.Bucket
	match string
	n     atomic.Int32
}

func (f *failingUploads) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	if strings.Contains(key, f.match) && f.n.Add(-1) >= 0 {
		return cold.Attributes{}, fmt.Errorf("injected: %s refused", key)
	}
	return f.Bucket.Upload(ctx, key, r, size)
}

func (f *failingUploads) UploadIf(ctx context.Context, key string, r io.Reader, size int64, c cold.Condition) (cold.Attributes, error) {
	return f.Bucket.(cold.ConditionalUploader).UploadIf(ctx, key, r, size, c)
}

// A checkpoint that cannot be written fails the upload attempt: the
// manifest does not name the segment, and the retry builds the same tree.
func TestTreeWriteFailureFailsTheUpload(t *testing.T) {
	fb := &failingUploads{Bucket: newFileBucket(t), match: "tlog/checkpoints/"}
	e := newEnv(t, fb, t.TempDir())
	e.signWith(filepath.Join(t.TempDir(), "k"))
	p := e.open("audit", 0, true)
	defer p.Close()
	produce(t, p, 100)
	e.settle(p)
	fb.n.Store(100) // every retry inside the attempt fails too
	produce(t, p, 30)
	p.Log().Roll()
	before := p.UploadedEnd()
	e.daemon.pass(context.Background())
	if p.UploadedEnd() != before {
		t.Fatalf("a segment was committed without its checkpoint: uploaded end %d, was %d", p.UploadedEnd(), before)
	}
	fb.n.Store(0)
	p.tierMu.Lock()
	p.retryAt = p.retryAt.AddDate(-1, 0, 0) // skip the backoff
	p.tierMu.Unlock()
	e.settle(p)
	checkTree(t, e, p)
}

// Remote retention may delete every segment a manifest names; the tree
// goes on from its size, not from 0: the next checkpoint extends the last
// one signed before the deletion (a consistency proof between them
// verifies), and the manifest still says where the tree is.
func TestTreeContinuesAfterRetentionDeletesEverySegment(t *testing.T) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	e := newEnv(t, bucket, t.TempDir())
	e.signWith(filepath.Join(t.TempDir(), "signing.key"))
	p := e.open("audit", 0, true)
	defer p.Close()
	produce(t, p, 100)
	e.settle(p)
	prefix := PartitionPrefix("audit", 0)
	size1, root1 := p.Manifest().treeSize()
	if size1 == 0 {
		t.Fatal("no tree after the first uploads")
	}

	p.mu.Lock()
	p.retention = Retention{Age: time.Nanosecond, Bytes: -1}
	p.mu.Unlock()
	testutil.Eventually(t, 10*time.Second, func() bool {
		e.daemon.pass(ctx)
		return len(p.Manifest().committed()) == 0
	}, "remote retention deletes every segment")
	if size, root := p.Manifest().treeSize(); size != size1 || root != root1 {
		t.Fatalf("with no segment left the manifest says tree %d %s, want %d %s", size, root, size1, root1)
	}

	p.mu.Lock()
	p.retention = Retention{Bytes: -1}
	p.mu.Unlock()
	produce(t, p, 20)
	e.settle(p)
	size2, root2hex := p.Manifest().treeSize()
	if size2 <= size1 {
		t.Fatalf("tree size %d after more uploads, was %d", size2, size1)
	}
	proof, err := audit.ConsistencyProof(ctx, bucket, prefix, uint64(size1), uint64(size2))
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := hex.DecodeString(root1)
	r2, _ := hex.DecodeString(root2hex)
	if err := audit.VerifyConsistency(uint64(size1), uint64(size2), proof, r1, r2); err != nil {
		t.Fatalf("the tree after retention does not extend the one signed before: %v", err)
	}
}

// A node that lost its disk after a segment's checkpoint and before its
// commit restores the segment from the bucket without a tree size; remote
// retention deleting it before the next upload must not make its leaves
// absent in the next tree: retention records the checkpoint this node
// signed first, and the next tree extends it.
func TestTreeRestoredSegmentRetainedBeforeNextUpload(t *testing.T) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	keyPath := filepath.Join(t.TempDir(), "signing.key")
	e := newEnv(t, bucket, t.TempDir())
	e.signWith(keyPath)
	p := e.open("audit", 0, true)
	produce(t, p, 100)
	e.settle(p)
	produce(t, p, 50)
	p.Log().Roll()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(e.daemon.pending(p)) > 0 }, "a segment sealed")
	n := crashAfterCheckpoint(t, e, p)
	p.Close()
	e.daemon.Remove(p)

	e2 := restoreEnv(t, bucket, t.TempDir()) // the disk is lost
	e2.signWith(keyPath)
	p2 := e2.open("audit", 0, true)
	defer p2.Close()
	m := p2.Manifest()
	if c := m.committed(); len(c) == 0 || c[len(c)-1].NextOffset != n {
		t.Fatalf("the restore did not adopt the segment ending at %d: %+v", n, m.Segments)
	}
	if size, _ := m.treeSize(); size >= n {
		t.Fatalf("the restore recorded tree size %d; this test wants it below %d", size, n)
	}
	setRetention(p2, Retention{Age: time.Millisecond, Bytes: -1})
	testutil.Eventually(t, 10*time.Second, func() bool {
		e2.daemon.pass(ctx)
		return len(p2.Manifest().Segments) == 0
	}, "retention did not delete the segments")
	if size, _ := p2.Manifest().treeSize(); size != n {
		t.Fatalf("after retention the manifest's tree size is %d, the checkpoint signed before the crash %d", size, n)
	}
	setRetention(p2, Retention{Bytes: -1})
	produce(t, p2, 50)
	e2.settle(p2)
	pr, err := p2.Prover()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr.Consistency(ctx, uint64(n), 0); err != nil {
		t.Fatalf("the tree at %d does not extend the checkpoint signed at %d: %v", pr.TreeSize(), n, err)
	}
}

// A built object is decoded before it is uploaded: one whose chunks the
// cold reader would refuse is never uploaded (its local copy would later
// be deleted, its records unreadable).
func TestBuiltObjectDecodedBeforeUpload(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	p := e.open("t", 0, false)
	defer p.Close()
	produce(t, p, 50)
	if err := p.Log().Roll(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(p.Log().SealedSegments()) > 0 }, "a sealed segment")
	segs := p.Log().SealedSegments()
	o, err := e.daemon.buildObject(segs[0], newID())
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(o.path)
	if err := decodeBuilt(o.path, o.footer); err != nil {
		t.Fatalf("an untouched object: %v", err)
	}
	raw, err := os.ReadFile(o.path)
	if err != nil {
		t.Fatal(err)
	}
	c := o.footer.Chunks[len(o.footer.Chunks)-1]
	raw[c.StoredPos+c.StoredSize/2] ^= 0xff
	if err := os.WriteFile(o.path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := decodeBuilt(o.path, o.footer); !errors.Is(err, cold.ErrCorruptObject) {
		t.Fatalf("an object with a changed chunk byte: %v, want ErrCorruptObject", err)
	}
}

// A node that adopts an attempt another key signed (a new leader of a
// shared prefix, or a node whose signing key was lost with its disk)
// cannot record that checkpoint; remote retention must still not delete
// the segment before the tree covers it, or the next upload would build
// absent leaves over records a checkpoint already signed: a fork.
func TestTreeCoversAdoptedSegmentSignedByAnotherKeyBeforeRetention(t *testing.T) {
	adoptRetainExtend(t, false)
}

// listingBucket records the keys its Iter lists.
type listingBucket struct {
	cold.Bucket
	listed []string
}

func (b *listingBucket) Iter(ctx context.Context, prefix string, f func(string) error) error {
	return b.Bucket.Iter(ctx, prefix, func(key string) error {
		b.listed = append(b.listed, key)
		return f(key)
	})
}

// Finding a partition's newest manifest copy lists the copies, not the
// partition's tree: at 10^9 records its tiles are millions of keys (every
// bucket consume, verify and restore of a single node's prefix looks).
func TestLatestManifestListsNoTiles(t *testing.T) {
	e, p, _ := signedPartition(t, 300)
	b := &listingBucket{Bucket: e.bucket}
	m, ok, err := (&Store{Bucket: b}).latestManifest(context.Background(), p.topic, p.partition)
	if err != nil || !ok || m.Version != p.Manifest().Version {
		t.Fatalf("latest manifest: %+v, %v, %v; want version %d", m, ok, err, p.Manifest().Version)
	}
	for _, key := range b.listed {
		if _, ok := parseManifestKey(key); !ok {
			t.Fatalf("listed %s (%d keys in all) to find the manifest", key, len(b.listed))
		}
	}
}
