package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
)

const prefix = "abcd/topic/0/"

func newFileBucket(t testing.TB) cold.Bucket {
	b, err := filebucket.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mth is RFC 6962's Merkle tree hash of leaf hashes, computed recursively
// as the RFC defines it (split at the largest power of two below n): the
// independent computation the tiles are checked against.
func mth(leaves [][]byte) []byte {
	h := rfc6962.DefaultHasher
	switch n := len(leaves); n {
	case 0:
		return h.EmptyRoot()
	case 1:
		return leaves[0]
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		return h.HashChildren(mth(leaves[:k]), mth(leaves[k:]))
	}
}

// model is the test's own copy of the tree: every leaf hash, and the
// library's reference tree (merkle/testonly).
type model struct {
	leaves [][]byte
	ref    *testonly.Tree
}

func newModel() *model { return &model{ref: testonly.New(rfc6962.DefaultHasher)} }

func (m *model) add(h []byte) {
	m.leaves = append(m.leaves, h)
	m.ref.Append(h)
}

// randomLeaves returns a run of n leaves from offset start (some absent,
// as compaction leaves gaps) and adds them, with absent leaves before
// start, to the model.
func (m *model) randomLeaves(r *rand.Rand, start int64, n int) *audit.Leaves {
	for o := int64(len(m.leaves)); o < start; o++ {
		m.add(audit.LeafHash(audit.AbsentLeaf(o)))
	}
	l := audit.NewLeaves(start)
	for o := start; o < start+int64(n); o++ {
		if r.IntN(10) == 0 {
			continue // a gap: absent
		}
		leaf := audit.EncodeLeaf(nil, audit.Record{Offset: o, Timestamp: o * 7, Value: []byte(fmt.Sprint(r.Int64()))})
		if err := l.Add(o, audit.LeafHash(leaf)); err != nil {
			panic(err)
		}
	}
	l.FillTo(start + int64(n))
	for o := start; o < start+int64(n); o++ {
		m.add(l.Hash(o))
	}
	return l
}

// checkTiles reads every tile of the tree of size and compares each entry
// with the model's node hash (MTH of the leaves under it).
func (m *model) checkTiles(t *testing.T, b cold.Bucket, size uint64) {
	t.Helper()
	for level := 0; size>>(8*level) > 0; level++ {
		entries := size >> (8 * level)
		for n := uint64(0); n*256 < entries; n++ {
			w := int(min(256, entries-n*256))
			data, err := audit.ReadTile(context.Background(), b, prefix, level, n, w)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			span := uint64(1) << (8 * level)
			for j := range uint64(w) {
				first := (n*256 + j) * span
				want := mth(m.leaves[first : first+span])
				if got := data[j*32 : j*32+32]; !bytes.Equal(got, want) {
					t.Fatalf("size %d: tile %d/%d entry %d: %x, want %x", size, level, n, j, got, want)
				}
			}
		}
	}
}

// Segment-like appends of random lengths, with gaps and jumps, from 0 to
// past 2,000 leaves: after each the root equals both references, a tree
// reopened from the bucket at that size has the same root, and every
// tile holds what an independent computation gives.
func TestTreeKnownAnswers(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	r := rand.New(rand.NewPCG(1, 2))
	m := newModel()
	tree, err := audit.OpenTree(ctx, b, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tree.Root(), mth(nil)) || tree.Size() != 0 {
		t.Fatal("empty tree")
	}
	for tree.Size() < 2100 {
		start := int64(tree.Size())
		if r.IntN(8) == 0 {
			start += int64(r.IntN(40)) // a jump: absent leaves fill it
		}
		n := 1 + r.IntN(300)
		if r.IntN(4) == 0 {
			n = 1 + r.IntN(3)
		}
		if err := tree.Append(ctx, m.randomLeaves(r, start, n)); err != nil {
			t.Fatal(err)
		}
		size := tree.Size()
		if size != uint64(len(m.leaves)) {
			t.Fatalf("size %d, model %d", size, len(m.leaves))
		}
		if !bytes.Equal(tree.Root(), m.ref.Hash()) || !bytes.Equal(tree.Root(), mth(m.leaves)) {
			t.Fatalf("size %d: root %x, want %x", size, tree.Root(), m.ref.Hash())
		}
		reopened, err := audit.OpenTree(ctx, b, prefix, size)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(reopened.Root(), tree.Root()) {
			t.Fatalf("size %d: reopened root %x, want %x", size, reopened.Root(), tree.Root())
		}
		m.checkTiles(t, b, size)
		if r.IntN(3) == 0 {
			tree = reopened // go on from the bucket's state, as after a restart
		}
	}
}

// Every size from 0 to 600 one leaf at a time (each partial width of
// level 0 and the first of level 1), reopened from the bucket each time.
func TestTreeEverySize(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m := newModel()
	r := rand.New(rand.NewPCG(3, 4))
	for size := uint64(0); size <= 600; size++ {
		tree, err := audit.OpenTree(ctx, b, prefix, size)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tree.Root(), mth(m.leaves)) {
			t.Fatalf("size %d: root %x, want %x", size, tree.Root(), mth(m.leaves))
		}
		if err := tree.Append(ctx, m.randomLeaves(r, int64(size), 1)); err != nil {
			t.Fatal(err)
		}
	}
	m.checkTiles(t, b, 601)
}

// Past 65,536 leaves: full level-1 tiles and a level-2 tile.
func TestTreeLevelTwo(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m := newModel()
	r := rand.New(rand.NewPCG(5, 6))
	tree, _ := audit.OpenTree(ctx, b, prefix, 0)
	for tree.Size() < 70_000 {
		if err := tree.Append(ctx, m.randomLeaves(r, int64(tree.Size()), 1000+r.IntN(9000))); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tree.Root(), m.ref.Hash()) {
			t.Fatalf("size %d: root differs", tree.Size())
		}
	}
	size := tree.Size()
	if _, err := audit.ReadTile(ctx, b, prefix, 1, 0, 256); err != nil {
		t.Fatalf("full level-1 tile: %v", err)
	}
	if _, err := audit.ReadTile(ctx, b, prefix, 2, 0, int(size>>16)); err != nil {
		t.Fatalf("level-2 tile: %v", err)
	}
	m.checkTiles(t, b, size)
	reopened, err := audit.OpenTree(ctx, b, prefix, size)
	if err != nil || !bytes.Equal(reopened.Root(), tree.Root()) {
		t.Fatalf("reopened: %v", err)
	}
}

// A leaf for an offset the tree holds is refused and changes nothing.
func TestTreeRefusesGoingBack(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m := newModel()
	r := rand.New(rand.NewPCG(7, 8))
	tree, _ := audit.OpenTree(ctx, b, prefix, 0)
	if err := tree.Append(ctx, m.randomLeaves(r, 0, 10)); err != nil {
		t.Fatal(err)
	}
	root := tree.Root()
	if err := tree.Append(ctx, audit.NewLeaves(9)); !errors.Is(err, audit.ErrOrder) {
		t.Fatalf("append from 9 at size 10: %v", err)
	}
	if tree.Size() != 10 || !bytes.Equal(tree.Root(), root) {
		t.Fatal("a refused append changed the tree")
	}
}

// failingBucket fails uploads of keys containing fail while set.
type failingBucket struct {
	cold.Bucket
	fail atomic.Pointer[string]
}

func (f *failingBucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	if s := f.fail.Load(); s != nil && strings.Contains(key, *s) {
		return cold.Attributes{}, fmt.Errorf("injected failure writing %s", key)
	}
	return f.Bucket.Upload(ctx, key, r, size)
}

// An Append whose tile writes fail leaves the tree as it was; a retry of
// the same leaves then succeeds, and reopening at the old size works too.
func TestTreeAppendFailureLeavesTreeUnchanged(t *testing.T) {
	ctx := context.Background()
	fb := &failingBucket{Bucket: newFileBucket(t)}
	m := newModel()
	r := rand.New(rand.NewPCG(9, 10))
	tree, _ := audit.OpenTree(ctx, fb, prefix, 0)
	if err := tree.Append(ctx, m.randomLeaves(r, 0, 300)); err != nil {
		t.Fatal(err)
	}
	root := tree.Root()
	l := m.randomLeaves(r, 300, 500)
	fail := ".p/"
	fb.fail.Store(&fail)
	if err := tree.Append(ctx, l); err == nil {
		t.Fatal("append with failing partial tiles succeeded")
	}
	if tree.Size() != 300 || !bytes.Equal(tree.Root(), root) {
		t.Fatalf("failed append changed the tree: size %d", tree.Size())
	}
	fb.fail.Store(nil)
	if err := tree.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tree.Root(), m.ref.Hash()) {
		t.Fatal("root after the retried append differs")
	}
	m.checkTiles(t, fb, 800)
	old, err := audit.OpenTree(ctx, fb, prefix, 300)
	if err != nil || !bytes.Equal(old.Root(), root) {
		t.Fatalf("reopen at the old size: %v", err)
	}
}

// A missing or truncated tile fails OpenTree with the tile's key.
func TestOpenTreeBadTiles(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m := newModel()
	tree, _ := audit.OpenTree(ctx, b, prefix, 0)
	if err := tree.Append(ctx, m.randomLeaves(rand.New(rand.NewPCG(1, 1)), 0, 300)); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.OpenTree(ctx, b, prefix, 301); !errors.Is(err, cold.ErrNotFound) || !strings.Contains(err.Error(), "tile/0/001.p/45") {
		t.Fatalf("open at a size never written: %v", err)
	}
	key := audit.TileKey(prefix, 0, 1, 44)
	if _, err := b.Upload(ctx, key, bytes.NewReader(make([]byte, 31)), 31); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.OpenTree(ctx, b, prefix, 300); err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("open over a truncated tile: %v", err)
	}
}

// Paths as the C2SP tlog-tiles specification spells them.
func TestTilePath(t *testing.T) {
	for _, c := range []struct {
		level int
		n     uint64
		width int
		want  string
	}{
		{0, 1234067, 256, "tile/0/x001/x234/067"},
		{1, 1234067, 8, "tile/1/x001/x234/067.p/8"},
		{0, 5, 256, "tile/0/005"},
		{2, 0, 1, "tile/2/000.p/1"},
		{0, 1000, 256, "tile/0/x001/000"},
		{3, 999, 255, "tile/3/999.p/255"},
	} {
		if got := audit.TilePath(c.level, c.n, c.width); got != c.want {
			t.Errorf("TilePath(%d, %d, %d) = %s, want %s", c.level, c.n, c.width, got, c.want)
		}
	}
	if got := audit.TileKey(prefix, 0, 5, 3); got != prefix+"tlog/tile/0/005.p/3" {
		t.Errorf("TileKey %s", got)
	}
}

// Partial tiles superseded by full ones are deleted (Superseded names
// their folders, also of partial tiles an earlier Tree wrote); nothing any
// reader needs goes with them: the tree reopens at every earlier size with
// its root, and proofs at earlier sizes are made and verify. What stays is
// only the partial tiles of tiles not full yet.
func TestTreeSupersededPartials(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m := newModel()
	r := rand.New(rand.NewPCG(7, 8))
	tree, _ := audit.OpenTree(ctx, b, prefix, 0)
	var sizes []uint64
	deleted := 0
	for tree.Size() < 70_000 {
		// Short runs (several partial tiles of one level-0 tile) and long.
		n := 1 + r.IntN(300)
		if r.IntN(3) == 0 {
			n = 1000 + r.IntN(9000)
		}
		if err := tree.Append(ctx, m.randomLeaves(r, int64(tree.Size()), n)); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, tree.Size())
		for _, folder := range tree.Superseded() {
			err := b.Iter(ctx, folder, func(key string) error {
				deleted++
				return b.Delete(ctx, key)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if r.IntN(4) == 0 { // a restart: the partial tiles it knows of are the edge's
			var err error
			if tree, err = audit.OpenTree(ctx, b, prefix, tree.Size()); err != nil {
				t.Fatal(err)
			}
		}
	}
	size := tree.Size()
	if deleted < len(sizes) {
		t.Fatalf("%d partial tiles deleted over %d appends", deleted, len(sizes))
	}
	err := b.Iter(ctx, prefix+audit.Dir+"tile/", func(key string) error {
		rest, ok := strings.CutPrefix(key, prefix+audit.Dir+"tile/")
		if !ok || !strings.Contains(rest, ".p/") {
			return nil
		}
		var level int
		fmt.Sscanf(rest, "%d/", &level)
		if full, _, _ := strings.Cut(key, ".p/"); fileExists(ctx, b, full) {
			t.Errorf("%s left beside its full tile (level %d)", key, level)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sizes {
		old, err := audit.OpenTree(ctx, b, prefix, s)
		if err != nil || !bytes.Equal(old.Root(), m.ref.HashAt(s)) {
			t.Fatalf("reopened at earlier size %d: %v", s, err)
		}
		if i%7 != 0 {
			continue
		}
		idx := uint64(r.Int64N(int64(s)))
		p, err := audit.InclusionProof(ctx, b, prefix, idx, s)
		if err != nil || audit.VerifyInclusion(m.leaves[idx], idx, s, p, m.ref.HashAt(s)) != nil {
			t.Fatalf("inclusion of %d at earlier size %d: %v", idx, s, err)
		}
		c, err := audit.ConsistencyProof(ctx, b, prefix, s, size)
		if err != nil || audit.VerifyConsistency(s, size, c, m.ref.HashAt(s), m.ref.Hash()) != nil {
			t.Fatalf("consistency %d -> %d: %v", s, size, err)
		}
	}
}

func fileExists(ctx context.Context, b cold.Bucket, key string) bool {
	_, err := b.Attributes(ctx, key)
	return err == nil
}

// writtenBucket records the keys uploaded to it.
type writtenBucket struct {
	cold.Bucket
	mu      sync.Mutex
	written []string
}

func (w *writtenBucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	w.mu.Lock()
	w.written = append(w.written, key)
	w.mu.Unlock()
	return w.Bucket.Upload(ctx, key, r, size)
}

// WriteEdge writes the partial tile of every level at the tree's size,
// also of the levels the last Append did not reach, and nothing else.
func TestTreeWriteEdge(t *testing.T) {
	ctx := context.Background()
	b := &writtenBucket{Bucket: newFileBucket(t)}
	m := newModel()
	r := rand.New(rand.NewPCG(11, 12))
	tree, _ := audit.OpenTree(ctx, b, prefix, 0)
	for _, n := range []int{65_700, 100} { // the second reaches level 0 only
		if err := tree.Append(ctx, m.randomLeaves(r, int64(tree.Size()), n)); err != nil {
			t.Fatal(err)
		}
	}
	b.written = nil
	if err := tree.WriteEdge(ctx); err != nil {
		t.Fatal(err)
	}
	slices.Sort(b.written)
	// 65,800 leaves: 257 full tiles and 8 entries at level 0, 1 full tile and
	// 1 entry at level 1, 1 entry at level 2.
	want := []string{audit.TileKey(prefix, 0, 257, 8), audit.TileKey(prefix, 1, 1, 1), audit.TileKey(prefix, 2, 0, 1)}
	if !slices.Equal(b.written, want) {
		t.Fatalf("WriteEdge wrote %q, want %q", b.written, want)
	}
	m.checkTiles(t, b, tree.Size())
}
