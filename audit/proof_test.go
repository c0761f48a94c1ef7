package audit_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
)

// buildSizes appends random segments until past total and returns the
// model and the sizes after each append (the checkpoint sizes).
func buildSizes(t *testing.T, b cold.Bucket, seed uint64, total int) (*model, []uint64) {
	t.Helper()
	ctx := context.Background()
	m := newModel()
	r := rand.New(rand.NewPCG(seed, seed))
	tree, err := audit.OpenTree(ctx, b, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []uint64
	for tree.Size() < uint64(total) {
		if err := tree.Append(ctx, m.randomLeaves(r, int64(tree.Size()), 1+r.IntN(total/8))); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, tree.Size())
	}
	return m, sizes
}

// Inclusion and consistency proofs read from the tiles equal the
// reference tree's, verify, and fail for a wrong leaf, index or root.
func TestProofs(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m, sizes := buildSizes(t, b, 11, 5000)
	r := rand.New(rand.NewPCG(12, 12))
	for range 400 {
		size := sizes[r.IntN(len(sizes))]
		index := r.Uint64N(size)
		root := m.ref.HashAt(size)
		p, err := audit.InclusionProof(ctx, b, prefix, index, size)
		if err != nil {
			t.Fatalf("inclusion %d in %d: %v", index, size, err)
		}
		want, _ := m.ref.InclusionProof(index, size)
		if !equalProofs(p, want) {
			t.Fatalf("inclusion %d in %d differs from the reference", index, size)
		}
		if err := audit.VerifyInclusion(m.leaves[index], index, size, p, root); err != nil {
			t.Fatalf("inclusion %d in %d: %v", index, size, err)
		}
		other := audit.LeafHash([]byte("not in the log"))
		if audit.VerifyInclusion(other, index, size, p, root) == nil {
			t.Fatalf("a leaf not in the log verified at %d", index)
		}
		if size > 1 && audit.VerifyInclusion(m.leaves[index], (index+1)%size, size, p, root) == nil {
			t.Fatalf("leaf %d verified at another index", index)
		}
		if audit.VerifyInclusion(m.leaves[index], index, size, p, m.ref.HashAt(size-1)) == nil {
			t.Fatalf("inclusion verified against another root")
		}
	}
	for range 200 {
		i, j := r.IntN(len(sizes)), r.IntN(len(sizes))
		s1, s2 := sizes[min(i, j)], sizes[max(i, j)]
		p, err := audit.ConsistencyProof(ctx, b, prefix, s1, s2)
		if err != nil {
			t.Fatalf("consistency %d..%d: %v", s1, s2, err)
		}
		want, _ := m.ref.ConsistencyProof(s1, s2)
		if !equalProofs(p, want) {
			t.Fatalf("consistency %d..%d differs from the reference", s1, s2)
		}
		if err := audit.VerifyConsistency(s1, s2, p, m.ref.HashAt(s1), m.ref.HashAt(s2)); err != nil {
			t.Fatalf("consistency %d..%d: %v", s1, s2, err)
		}
		if s1 < s2 && s1 > 0 {
			// A fork: another tree of size s1.
			fork := bytes.Clone(m.ref.HashAt(s1))
			fork[0] ^= 1
			if audit.VerifyConsistency(s1, s2, p, fork, m.ref.HashAt(s2)) == nil {
				t.Fatalf("consistency %d..%d verified from a forked root", s1, s2)
			}
		}
	}
	// RootAt reads the root of any checkpoint size from the tiles.
	for _, s := range sizes[:5] {
		root, err := audit.RootAt(ctx, b, prefix, s)
		if err != nil || !bytes.Equal(root, m.ref.HashAt(s)) {
			t.Fatalf("RootAt(%d): %v", s, err)
		}
	}
}

// A proof at a size whose partial tile is gone (superseded by the full
// tile) is read from the full tile.
func TestProofFromFullTileWhenPartialIsGone(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m := newModel()
	r := rand.New(rand.NewPCG(13, 13))
	tree, _ := audit.OpenTree(ctx, b, prefix, 0)
	for _, n := range []int{100, 300} { // sizes 100 and 400: tile 0/000 full at 400
		if err := tree.Append(ctx, m.randomLeaves(r, int64(tree.Size()), n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(ctx, audit.TileKey(prefix, 0, 0, 100)); err != nil {
		t.Fatal(err)
	}
	p, err := audit.InclusionProof(ctx, b, prefix, 42, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyInclusion(m.leaves[42], 42, 100, p, m.ref.HashAt(100)); err != nil {
		t.Fatal(err)
	}
}

// A changed tile makes proofs that do not verify: the proof is only as
// good as the checkpoint it is checked against.
func TestProofFromTamperedTileFails(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	m, sizes := buildSizes(t, b, 14, 1000)
	size := sizes[len(sizes)-1]
	key := audit.TileKey(prefix, 0, 0, 256)
	data, err := audit.ReadTile(ctx, b, prefix, 0, 0, 256)
	if err != nil {
		t.Fatal(err)
	}
	data[5*32] ^= 1 // entry 5
	if _, err := b.Upload(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	p, err := audit.InclusionProof(ctx, b, prefix, 4, size) // uses entry 5, leaf 4's sibling
	if err != nil {
		t.Fatal(err)
	}
	if audit.VerifyInclusion(m.leaves[4], 4, size, p, m.ref.HashAt(size)) == nil {
		t.Fatal("a proof from a tampered tile verified")
	}
}

func equalProofs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
