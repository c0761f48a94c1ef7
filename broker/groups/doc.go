// Package groups is the node's consumer-group coordinator: Kafka's classic
// group protocol (join, sync, heartbeat, leave, generations, session and
// rebalance timeouts, static members) as a state machine that knows no
// wire format, and the groups' committed offsets.
//
// A group moves Empty → PreparingRebalance (members join, again) →
// CompletingRebalance (the leader computes assignments) → Stable, and back
// to PreparingRebalance when a member joins, leaves, changes its protocols
// or misses its session timeout. A rebalance completes when every member
// has joined again, or when the longest rebalance timeout passes; members
// that did not join by then are removed.
//
// Committed offsets live in memory and in one append-only file, written
// and fsynced before a commit is acknowledged:
//
//	<dir>/offsets.log   "TLOFFS\x00\x02" (magic, format version 2), then frames:
//
//	+--------------------+----------------------+----------------------+-----------+
//	| length (uint32 BE) | CRC-32C of payload   | CRC-32C of the first | payload   |
//	|                    | (uint32 BE)          | 8 bytes (uint32 BE)  | (length)  |
//	+--------------------+----------------------+----------------------+-----------+
//	payload: uvarint n, then n entries of
//	  group (uvarint length, bytes), topic (same), partition (varint),
//	  offset (varint; -1 deletes the partition's offset), leader epoch (varint),
//	  commit time in Unix ms (varint), expire time in Unix ms (varint; 0:
//	  none, the coordinator's retention applies), metadata (uvarint length, bytes)
//
// Format version 1 had no header checksum and no expire time; Open reads
// it and rewrites the file as version 2.
//
// One frame is one change (an OffsetCommit, a group deletion, the offsets
// of a deleted topic), so a change is applied whole or not at all. Open
// replays the frames; a bad frame with nothing valid after it is a write
// cut short by a crash (never acknowledged) and is cut off; one followed
// by valid frames is corruption and fails the open (CorruptionError).
// The header's own checksum makes a frame's length trustworthy, so valid
// frames are looked for only past a bad frame's end, not in its payload
// (a committer's metadata may hold bytes shaped like a frame). When
// the file holds many more entries than are live it is rewritten from
// memory, atomically (temporary file, fsync, rename, fsync the directory).
//
// Snapshot encodes the live offsets in this format, one frame per group
// (what a rewrite writes); the broker copies it to the bucket, and
// RestoreSnapshot makes one the log of a data directory restored from the
// bucket (see broker/groupcopy.go for what survives what).
//
// The offsets of a group without members expire, as in Kafka, once
// Options.OffsetsRetention has passed since the group became empty (or
// since their commit, if later), or at the expire time an OffsetCommit v2
// to v4 set; they are deleted with a durable frame of deletions. A restart
// counts as the moment a group became empty: retention is never cut short.
package groups
