// Package hot is the local tier: one partition's append-only log on disk.
//
// # Files
//
// A partition directory holds segments named by their base offset, 20 digits:
//
//	00000000000000004096.log        RecordBatch v2 batches, back to back, as produced
//	00000000000000004096.index      sparse: (offset - base uint32, position uint32), one per ~4 KiB
//	00000000000000004096.timeindex  sparse: (max timestamp so far int64, offset - base uint32)
//	00000000000000004096.producers  idempotent producers' state below offset 4096 (producers.go)
//	recovery-point                  decimal offset below which everything is fsynced
//	leader-epoch-checkpoint         leader epochs and their start offsets (epochs.go)
//	truncate-fully-start-offset     only while TruncateFullyAndStartAt runs (truncate_fully.go)
//	high-watermark-checkpoint       replicated logs: the high watermark, CRC-32C'd (highwater.go)
//
// Batches are stored exactly as the producer sent them (compression kept);
// the leader writes only the base offset, which lies outside the CRC.
//
// # Appends and the flush policy
//
// Append validates a batch (length, magic 2, CRC-32C, record count,
// max.message.bytes), assigns offsets and writes it to the active segment.
// What the acknowledgement means depends on flush.policy:
//
//	always    fsynced before the reply. Concurrent appends share one fsync
//	          (group commit): the first waiter fsyncs for all who wrote before
//	          it began. Readers see a batch only after its fsync.
//	interval  in the page cache at the reply; fsynced every flush.ms, or inline
//	          when flush.messages records are unflushed (then the reply says
//	          fsynced).
//	os        in the page cache; the OS writes it back.
//
// Every fsync goes through one function that times it. A failed write or
// fsync fails the log: every later append returns ErrLogFailed until the log
// is reopened, because after a failed fsync the state of the page cache is
// unknown and a later success would be a lie.
//
// # Idempotent producers
//
// A batch with a producer id is checked under the log lock, before its
// offsets are assigned, against the producer's epoch and its last five
// batches in the partition (producers.go): a retry of one of them returns
// its original offsets and writes nothing (its Wait still waits for the
// original's fsync), a gap gets ErrOutOfOrderSequence, an old epoch
// ErrInvalidProducerEpoch, a transactional batch ErrTransactional. The
// state is snapshotted when a segment seals and rebuilt at Open from the
// newest snapshot whose CRC holds plus the batch headers after it; producers
// idle longer than Options.ProducerIDExpiration (a day) are dropped at a
// roll, and past Options.MaxProducers (100000) the least recently seen is
// dropped at once (its next batch is then taken as an unknown producer's).
// A snapshot copies only the state's 256 map pointers under the lock: the
// maps and states it holds are copied before they change.
// AppendDeferred is Append without the wait, for a front end that must
// append one connection's requests in order but wait for them together.
//
// # Rolling and sealing
//
// The active segment rolls when the next batch would take it past
// segment.bytes, or once it is older than segment.ms (checked on append and
// by the background work, so an idle partition still rolls). A new segment
// that cannot be opened (EMFILE, say) fails only that append, with an error
// wrapping ErrRetriable: nothing was written, the log is not failed, and the
// next append retries the roll. A rolled segment is sealed in the
// background: fsynced, taken off the flush list, its final time-index entry
// added, its index files written atomically (temp file, fsync, rename, fsync
// dir), and the recovery point moved past it. A sealed segment never changes
// again; SealedSegments lists them for the tiering daemon.
//
// # Background work
//
// Sealing, the interval flush, age rolls and retention run on a Scheduler
// shared by many logs (Options.Scheduler; the broker makes one): a timer
// heap, one dispatcher goroutine while any log is open, and at most
// SchedulerOptions.Workers jobs at once, one per log. An idle log holds no
// goroutine; a roll asks for its log's job at once so sealing starts
// promptly. Without a scheduler, Open makes a private one.
//
// Close takes the log off its scheduler, then makes its final fsync through
// the group commit, so appends waiting on an fsync in flight are released
// by it and acknowledged, never reported failed after Close made them
// durable.
//
// # Recovery
//
// Open trusts a segment without scanning it when its index files describe it
// (the final time-index entry names its next offset and a walk of the batch
// headers after the last index entry ends exactly at the file's end at that
// offset) and it lies below the recovery point. Every other segment is
// scanned batch by batch with full validation; the first torn, corrupt or
// out-of-sequence batch and everything after it (later segments included) is
// removed, and indexes are rebuilt. Damage found below the recovery point is
// data that was acknowledged as durable: Open refuses with *CorruptionError
// instead of truncating it, and rewrites nothing. A segment whose offsets
// overlap the one before it (two writers in one directory) makes Open
// refuse with ErrOverlappingSegments naming both files.
//
// # Replication primitives
//
// Every batch carries the leader epoch it was appended under, and epochs
// never go down along the log. The epoch cache (EpochEntries,
// EndOffsetForEpoch, Kafka's semantics) is checkpointed on every change
// and rebuilt from the batch headers when the checkpoint is missing or
// behind. A follower appends its leader's batches unchanged with
// AppendReplica (offsets and epochs kept; CRC and framing checked, not
// the producer rules; the producer state and epoch cache follow) and cuts
// its log to the epoch boundary a new leader gives it with TruncateTo,
// which deletes later segments newest first, cuts the one holding the
// offset last, and rebuilds the producer state below it, so a kill -9 at
// any step leaves a prefix of the old log.
//
// # High watermark and the leader's replica set
//
// With Options.Replicated a log has two ends. The log end (LogEndOffset,
// ReadReplica, ChangedEnd) is what the flush policy made visible, and is
// what followers fetch. The high watermark (HighWatermark) is the offset
// every in-sync replica holds: consumers see only whole batches below it
// (Read, ReadBuf, EndOffset, Wait, Changed and OffsetForTime answer as if
// the log ended there), the tiering daemon sees as sealed only segments
// that end at or below it (SealedSegments, SealedEnd), and retention stops
// below it. SetHighWatermark moves it forward only; truncations lower it.
// It is checkpointed by the background job (at most once a second while
// it moves, and at Close; never on the produce path), and Open takes
// min(checkpoint, log end), or the log start without one.
//
// On the leader a ReplicaSet (replication.go) keeps each follower's log
// end and last caught-up time from its fetches, moves the high watermark
// to the smallest log end over the in-sync replicas, says which members
// to drop (OutOfSync, replica.lag.time.max.ms) and which replicas may
// rejoin (CaughtUp), and lets acks=all appends wait (WaitReplicated, with
// min.insync.replicas). Without Options.Replicated nothing of this
// applies: the high watermark is the log end.
//
// # Retention
//
// ApplyRetention (run by the background work) deletes the oldest sealed
// segments past retention.ms or beyond retention.bytes, never the active
// one, and never one that Options.DeletionGuard refuses — the hook by which
// tiering keeps segments whose upload is not committed. A read whose segment
// retention deleted under it answers as a read at the new start: an
// *OffsetOutOfRangeError with the new range.
//
//	l, err := hot.Open(dir, hot.DefaultConfig(), hot.Options{Topic: "audit"})
//	res, err := l.Append(batchBytes)        // res.Durability: fsynced
//	data, err := l.Read(res.BaseOffset, 1<<20)
package hot
