package audit

import (
	"context"
	"fmt"

	"github.com/transparency-dev/merkle/proof"

	"github.com/tierlog/tierlog/cold"
)

// InclusionProof returns the RFC 6962 inclusion proof of leaf index in the
// tree of size leaves stored under prefix, its node hashes read from the
// tiles (merkle/proof says which nodes; the ephemeral node is rehashed).
func InclusionProof(ctx context.Context, b cold.Bucket, prefix string, index, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("audit: inclusion proof: %w", err)
	}
	return fromTiles(ctx, b, prefix, size, nodes)
}

// ConsistencyProof returns the RFC 6962 consistency proof that the tree of
// size2 stored under prefix extends the tree of size1 (size1 <= size2).
func ConsistencyProof(ctx context.Context, b cold.Bucket, prefix string, size1, size2 uint64) ([][]byte, error) {
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("audit: consistency proof: %w", err)
	}
	return fromTiles(ctx, b, prefix, size2, nodes)
}

func fromTiles(ctx context.Context, b cold.Bucket, prefix string, size uint64, nodes proof.Nodes) ([][]byte, error) {
	r := &nodeReader{b: b, prefix: prefix, size: size, tiles: map[string][]byte{}}
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := r.node(ctx, id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}

// VerifyInclusion checks that leafHash is leaf index of the tree of size
// with root, by proof (merkle/proof.VerifyInclusion).
func VerifyInclusion(leafHash []byte, index, size uint64, p [][]byte, root []byte) error {
	return proof.VerifyInclusion(hasher, index, size, leafHash, p, root)
}

// VerifyConsistency checks that the tree of size2 with root2 extends the
// tree of size1 with root1, by proof (merkle/proof.VerifyConsistency).
func VerifyConsistency(size1, size2 uint64, p [][]byte, root1, root2 []byte) error {
	return proof.VerifyConsistency(hasher, size1, size2, p, root1, root2)
}
