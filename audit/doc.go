// Package audit makes a partition's history verifiable: one RFC 6962
// Merkle tree per partition with one leaf per offset, stored as C2SP
// tlog-tiles hash tiles in the bucket under the partition's prefix, and
// signed C2SP tlog-checkpoint notes of its size and root. Proofs of
// inclusion (a record is in the log) and consistency (a later log extends
// an earlier one) are read from the tiles. The tiering daemon feeds the
// tree as it uploads segments; the CLI and verifiers only read. Hashing,
// compact ranges and proofs come from github.com/transparency-dev/merkle,
// checkpoint bodies from github.com/transparency-dev/formats/log and
// signed notes from golang.org/x/mod/sumdb/note. /docs/format.md
// ("Verifiable history") is the normative description of every format.
//
// # Leaves
//
// A leaf is the canonical encoding of one offset, independent of how its
// record was batched and compressed (big-endian):
//
//	u8  kind        1 = record, 2 = absent offset
//	i64 offset
//	-- kind 1 only:
//	u8  flags       bit 0 = control record (transaction marker)
//	i64 timestamp   Unix ms as consumers see it
//	i32 key length  -1 = null, then the bytes
//	i32 value length, -1 = null, then the bytes
//	u32 header count, then per header: u32 key length, key,
//	    i32 value length (-1 = null), value
//
// An absent leaf stands for an offset the archive never held (the tree
// always starts at offset 0; a gap left by compaction). Leaf hash =
// SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right).
//
// # Bucket layout (under a partition's prefix)
//
//	tlog/tile/<L>/<N>             full tile: 256 hashes of tree level 8L
//	tlog/tile/<L>/<N>.p/<W>       partial tile of W (1..255) hashes
//	tlog/checkpoint               the latest signed checkpoint
//	tlog/checkpoints/<size>       every checkpoint (20-digit size), kept
//
// and under the store's root prefix _tierlog/keys/<key name>.vkey holds
// each signing key's public key.
//
// # Use
//
//	leaves := audit.NewLeaves(segmentBase)
//	for each batch b of the segment { leaves.AddBatch(b) }
//	leaves.FillTo(segmentNext)
//	tree, _ := audit.OpenTree(ctx, bucket, prefix, manifestTreeSize)
//	tree.Append(ctx, leaves) // writes the tiles that changed
//	note, _ := audit.Sign(key, audit.Origin(cluster, topic, partition), tree.Size(), tree.Root())
//	audit.PutCheckpoint(ctx, bucket, prefix, tree.Size(), note)
//
// A verifier opens a checkpoint (Open), asks for InclusionProof or
// ConsistencyProof and checks them with VerifyInclusion and
// VerifyConsistency.
package audit
