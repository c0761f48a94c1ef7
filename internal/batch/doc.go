// Package batch reads and writes Kafka RecordBatch v2 (magic 2), the unit
// tierlog stores, replicates, tiers and serves.
//
// # Layout
//
// A batch is a 61-byte big-endian header followed by its records section:
//
//	offset  size  field
//	     0     8  base offset            ┐ outside the CRC: the leader
//	     8     4  length (bytes after it) │ rewrites base offset and
//	    12     4  partition leader epoch  ┘ epoch without re-checksumming
//	    16     1  magic (2)
//	    17     4  CRC-32C of bytes 21..end
//	    21     2  attributes: bits 0-2 codec, 3 LogAppendTime,
//	              4 transactional, 5 control
//	    23     4  last offset delta
//	    27     8  first timestamp (Unix ms)
//	    35     8  max timestamp
//	    43     8  producer id     (-1: not idempotent)
//	    51     2  producer epoch  (-1)
//	    53     4  base sequence   (-1)
//	    57     4  record count
//	    61     …  records, compressed as a whole when the codec is not none
//
// Each record is framed by a zigzag-varint length and holds: attributes
// (1 byte, unused), timestamp delta (varint, from the first timestamp),
// offset delta (varint, from the base offset), key and value (varint length,
// -1 for null, then bytes) and headers (varint count, then per header a
// varint-length key that may not be null and a nullable value).
//
// # What is where
//
//   - header.go: ParseHeader, Peek (enough to walk a segment) and Validate
//     (sizes, magic, CRC, record count), plus SetBaseOffset and
//     SetLeaderEpoch, which touch only the fields outside the CRC.
//   - records.go: Decode and DecodeAll turn batches into Records with
//     absolute offsets and timestamps.
//   - validate.go: CheckProduced, what a leader checks before storing a
//     producer's batch (Kafka's log validator: dense offsets, every record
//     decompressed and parsed, no control batches, RecordLimit records at
//     most), and SetMaxTimestamp, which stamps the timestamp type.
//   - build.go: Build frames Records into a batch as a Kafka producer would.
//   - compress.go: Compress and Decompress for gzip, snappy (raw or in the
//     xerial framing the Java producer writes), LZ4 frames and zstd, with a
//     size limit against decompression bombs.
//
// The leader stores producers' batches as they arrive, compression included,
// after CheckProduced has read every record once (so no batch a consumer
// cannot decode is ever stored); only the gRPC API builds batches itself,
// and consumers decompress. Decode serves readers, tests and tools:
//
//	b, err := batch.Build(recs, batch.BuildOptions{Codec: batch.Zstd})
//	...
//	batch.SetBaseOffset(b, nextOffset) // CRC stays valid
//	h, recs, err := batch.Decode(b)
//
// Every decoding failure wraps ErrShortBatch (too few bytes: at a segment's
// tail, a torn write), ErrCorrupt (the bytes are not a valid batch) or
// ErrTooLarge (the records section decompresses past the allowed size).
// Decoders never panic on hostile input; FuzzDecode checks that.
package batch
