package audit

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/sync/errgroup"

	"github.com/tierlog/tierlog/cold"
)

// factory builds compact ranges with RFC 6962 node hashing.
var factory = &compact.RangeFactory{Hash: hashChildren}

// hashChildren is hasher.HashChildren, SHA-256(0x01 || left || right),
// with one allocation (the result) instead of three: a tree hashes about
// one node per leaf, and a verifier rebuilds trees of whole archives.
func hashChildren(left, right []byte) []byte {
	if len(left) != HashSize || len(right) != HashSize {
		return hasher.HashChildren(left, right)
	}
	var buf [1 + 2*HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], left)
	copy(buf[1+HashSize:], right)
	sum := sha256.Sum256(buf[:])
	return sum[:]
}

// writeParallel bounds the tile uploads of one Append in flight at once;
// flushTiles is how many full tiles an Append holds before writing them
// (a long run of absent leaves must not hold its whole tree in memory).
const (
	writeParallel = 32
	flushTiles    = 256
)

// Tree is a partition's Merkle tree as its tiles in the bucket hold it:
// OpenTree loads the right edge at a size, Append adds leaves and writes
// the tiles that changed. It keeps only the right edge in memory (the
// partial tile of each level and the compact range of the tree). It is
// not safe for concurrent use.
type Tree struct {
	b      cold.Bucket
	prefix string
	rng    *compact.Range
	// edge[L] holds the entries of level L's rightmost tile, fewer than
	// TileWidth (a full tile is written and dropped).
	edge [][]byte
	// partials are the tiles with a partial tile stored (the edge when
	// opened, and every partial tile written since) that are not full
	// yet; superseded, those that became full (see Superseded).
	partials   map[tileID]bool
	superseded []tileID
}

// tileID names a tile: its level and index.
type tileID struct {
	level int
	n     uint64
}

// OpenTree loads the tree of size leaves stored under prefix (a
// partition's bucket prefix, ending in "/") from its partial tiles at
// that size. The partial tiles are the whole state needed to go on:
// nothing is kept locally. Size 0 is an empty tree and reads nothing. The
// tiles are not checked against a checkpoint: compare Root with the root
// the manifest or checkpoint recorded.
func OpenTree(ctx context.Context, b cold.Bucket, prefix string, size uint64) (*Tree, error) {
	t := &Tree{b: b, prefix: prefix, partials: map[tileID]bool{}}
	for level := 0; size>>(TileHeight*level) > 0; level++ {
		entries := size >> (TileHeight * level)
		var data []byte
		if w := int(entries % TileWidth); w > 0 {
			var err error
			if data, err = readEntries(ctx, b, prefix, level, entries/TileWidth, w); err != nil {
				return nil, fmt.Errorf("audit: open the tree of size %d: %w", size, err)
			}
			t.partials[tileID{level, entries / TileWidth}] = true
		}
		t.edge = append(t.edge, data)
	}
	ids := compact.RangeNodes(0, size, nil)
	hashes := make([][]byte, len(ids))
	for i, id := range ids {
		// A node of the right edge at level 8L+r is the root of 2^r
		// entries of level L's partial tile.
		level, r := int(id.Level/TileHeight), id.Level%TileHeight
		lo := int(id.Index<<r%TileWidth) * HashSize
		hashes[i] = hashUp(t.edge[level][lo : lo+HashSize<<r])
	}
	rng, err := factory.NewRange(0, size, hashes)
	if err != nil {
		return nil, fmt.Errorf("audit: open the tree of size %d: %w", size, err)
	}
	t.rng = rng
	return t, nil
}

// hashUp is the root of the perfect subtree whose 2^r leaves (or nodes of
// one level) are the hashes in entries.
func hashUp(entries []byte) []byte {
	if len(entries) == HashSize {
		return entries
	}
	r := factory.NewEmptyRange(0)
	for i := 0; i < len(entries); i += HashSize {
		_ = r.Append(entries[i:i+HashSize], nil) // fails only on a foreign range
	}
	root, _ := r.GetRootHash(nil)
	return root
}

// Size is the number of leaves (the offset after the last one).
func (t *Tree) Size() uint64 { return t.rng.End() }

// Root is the tree's RFC 6962 root hash (SHA-256 of nothing when empty).
func (t *Tree) Root() []byte {
	if t.Size() == 0 {
		return hasher.EmptyRoot()
	}
	root, _ := t.rng.GetRootHash(nil) // fails only for a range not starting at 0
	return root
}

type tile struct {
	level  int
	n      uint64
	hashes []byte
}

// Append adds the leaves of l to the tree - first absent leaves for the
// offsets between Size and l.Start, if any - and writes every tile that
// changed: the tiles that became full and the new partial tile of each
// level. Leaves for offsets the tree holds fail with ErrOrder. If Append
// fails the tree is unchanged (tiles it wrote are harmless: a tile's
// content depends only on the leaves below it); a caller that gives up on
// the leaves should reopen the tree at the size it trusts.
func (t *Tree) Append(ctx context.Context, l *Leaves) error {
	size := t.Size()
	if l.Start() < 0 || uint64(l.Start()) < size {
		return fmt.Errorf("%w: leaves from offset %d, the tree holds %d", ErrOrder, l.Start(), size)
	}
	// Work on copies: t changes only once every tile is written.
	rng, err := factory.NewRange(0, size, slices.Clone(t.rng.Hashes()))
	if err != nil {
		return err
	}
	// Each level's tile grows to TileWidth entries: room for them at once.
	edge := make([][]byte, len(t.edge))
	for i, e := range t.edge {
		edge[i] = append(make([]byte, 0, TileWidth*HashSize), e...)
	}
	touched := make([]bool, 64)
	var full []tile
	var filled, written []tileID // tiles made full; partial tiles written
	visit := func(id compact.NodeID, h []byte) {
		if id.Level%TileHeight != 0 {
			return
		}
		level := int(id.Level / TileHeight)
		for len(edge) <= level {
			edge = append(edge, nil)
		}
		if edge[level] == nil {
			edge[level] = make([]byte, 0, TileWidth*HashSize)
		}
		edge[level] = append(edge[level], h...)
		touched[level] = true
		if len(edge[level]) == TileWidth*HashSize {
			full = append(full, tile{level: level, n: id.Index / TileWidth, hashes: edge[level]})
			filled = append(filled, tileID{level, id.Index / TileWidth})
			edge[level] = nil
		}
	}
	add := func(h []byte) error {
		if err := rng.Append(h, visit); err != nil {
			return err
		}
		if len(full) >= flushTiles {
			err := t.write(ctx, full)
			full = full[:0]
			return err
		}
		return nil
	}
	for o := size; o < uint64(l.Start()); o++ {
		if err := add(LeafHash(AbsentLeaf(int64(o)))); err != nil {
			return err
		}
	}
	for o := l.Start(); o < l.End(); o++ {
		if err := add(l.Hash(o)); err != nil {
			return err
		}
	}
	end := rng.End()
	for level, e := range edge {
		if touched[level] && len(e) > 0 {
			full = append(full, tile{level: level, n: (end >> (TileHeight * level)) / TileWidth, hashes: e})
		}
	}
	if err := t.write(ctx, full); err != nil {
		return err
	}
	for _, tl := range full {
		if len(tl.hashes) < TileWidth*HashSize {
			written = append(written, tileID{tl.level, tl.n})
		}
	}
	// Copy the range's hashes: some alias l, which the tree must not keep.
	hashes := make([][]byte, len(rng.Hashes()))
	for i, h := range rng.Hashes() {
		hashes[i] = slices.Clone(h)
	}
	if t.rng, err = factory.NewRange(0, end, hashes); err != nil {
		return err
	}
	t.edge = edge
	for _, id := range filled {
		if t.partials[id] {
			delete(t.partials, id)
			t.superseded = append(t.superseded, id)
		}
	}
	for _, id := range written {
		t.partials[id] = true
	}
	return nil
}

// Superseded returns the folders (see PartialTilesFolder) of the partial
// tiles that full tiles written since the last call superseded, and
// forgets them. Deleting them frees objects no reader needs: OpenTree,
// proofs, verify and tlog-tiles clients read a missing partial tile's
// entries from the full tile. Tiles whose partial tiles were written by an
// earlier Tree are known from the edge OpenTree loaded; the folder holds
// every width written.
func (t *Tree) Superseded() []string {
	var out []string
	for _, id := range t.superseded {
		out = append(out, PartialTilesFolder(t.prefix, id.level, id.n))
	}
	t.superseded = nil
	return out
}

// WriteEdge writes the partial tile of every level at the tree's size -
// the partial tiles a proof at this size reads. Append writes only those
// of the levels it changed: a level it did not reach keeps the partial
// tile an earlier Append wrote, under the same key.
func (t *Tree) WriteEdge(ctx context.Context) error {
	var tiles []tile
	for level, e := range t.edge {
		if len(e) > 0 {
			tiles = append(tiles, tile{level: level, n: (t.Size() >> (TileHeight * level)) / TileWidth, hashes: e})
		}
	}
	if err := t.write(ctx, tiles); err != nil {
		return err
	}
	for _, tl := range tiles {
		t.partials[tileID{tl.level, tl.n}] = true // for Superseded, as Append
	}
	return nil
}

// write uploads tiles, writeParallel at a time.
func (t *Tree) write(ctx context.Context, tiles []tile) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(writeParallel)
	for _, tl := range tiles {
		g.Go(func() error { return writeTile(gctx, t.b, t.prefix, tl.level, tl.n, tl.hashes) })
	}
	return g.Wait()
}

// nodeReader reads node hashes of the tree of a size from its tiles,
// keeping the tiles one proof needs.
type nodeReader struct {
	b      cold.Bucket
	prefix string
	size   uint64
	tiles  map[string][]byte
}

// node returns the hash of the perfect subtree id, which must lie within
// the tree: a node at level 8L+r is hashed up from 2^r entries of a
// level-L tile. A partial tile that is gone (superseded) is read from the
// full tile, which holds the same entries.
func (r *nodeReader) node(ctx context.Context, id compact.NodeID) ([]byte, error) {
	if _, end := id.Coverage(); end > r.size {
		return nil, fmt.Errorf("audit: node %d/%d lies beyond the tree of size %d", id.Level, id.Index, r.size)
	}
	level, rr := int(id.Level/TileHeight), id.Level%TileHeight
	first := id.Index << rr
	n := first / TileWidth
	w := tileWidth(level, n, r.size)
	key := TileKey(r.prefix, level, n, w)
	data, ok := r.tiles[key]
	if !ok {
		var err error
		data, err = readEntries(ctx, r.b, r.prefix, level, n, w)
		if err != nil {
			return nil, err
		}
		r.tiles[key] = data
	}
	lo := int(first%TileWidth) * HashSize
	return hashUp(data[lo : lo+HashSize<<rr]), nil
}

// RootAt computes the root of the tree of size from its tiles (for a
// verifier that compares it with a checkpoint).
func RootAt(ctx context.Context, b cold.Bucket, prefix string, size uint64) ([]byte, error) {
	t, err := OpenTree(ctx, b, prefix, size)
	if err != nil {
		return nil, err
	}
	return t.Root(), nil
}
