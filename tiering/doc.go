// Package tiering joins the hot and cold tiers: the tiered Partition (one
// read path serving an offset from the hot log or from the bucket), the
// per-partition manifest, the Store (the bucket as tiering sees it) and the
// Daemon that moves sealed segments to the bucket.
//
// # The manifest
//
// Each partition's remote segments are listed in a manifest kept on local
// disk (remote-manifest.json in the partition directory, written atomically
// and fsynced) - the source of truth - and copied to the bucket
// (manifest-<version>.json; the newest two are kept) so a node that lost its
// disk can rebuild the partition. A change the node acts on - a segment
// committed (reads use it, its local copy may go) or given up to retention
// (its object is deleted next) - reaches the bucket's copy before it takes
// effect locally, so the bucket never says less is committed than the node
// acted on; other changes are copied at the end of a tiering pass. Every segment moves through
// explicit states, each written before the action it announces:
//
//	copy_started   an upload under a key unique to this attempt began
//	copy_finished  uploaded, verified (size, footer read back): committed
//	delete_started retention raised the log start past it; the object goes next
//	(entry removed) the object is deleted
//
// A crash at any point is resumable: a copy_started entry found at start is
// withdrawn and its object (whole, partial or absent) becomes an orphan;
// delete_started entries are finished. Orphans - objects under the
// partition's prefix that no manifest entry names - are deleted at start and
// every hour, as are stale multipart uploads. On a versioned bucket every
// version and delete marker of an orphan is deleted, as of a deleted
// topic's objects (versions.go).
//
// # Upload
//
// For each partition, one at a time in offset order, the daemon takes the
// sealed segments past the last committed one, builds the remote object
// (cold.WriteSegment: chunked, zstd, footer, every batch's CRC checked) in a
// temporary file, uploads it under the rate limit with retries (backoff with
// full jitter; cold.IsRetryable decides), verifies it and commits. Partitions
// upload concurrently up to DaemonOptions.Concurrency.
//
// # Local and total retention
//
// The hot log applies local.retention.* with a deletion guard: a local
// segment is deleted only once committed remote segments cover it, however
// far that overruns local retention (Status reports the overrun as upload
// lag). The daemon applies retention.* (the whole log) to remote segments.
//
// # Local-disk ceiling
//
// Local segments wait for their upload however long the bucket is down, so
// the node caps them: DaemonOptions.LocalDiskMaxBytes for all its
// partitions, PartitionOptions.LocalMaxBytes for one. Appends add their
// bytes to running counts that the daemon re-measures every interval on a
// goroutine of its own (a pass can be stuck retrying a dead bucket); at a
// ceiling Append returns a retriable *LocalDiskFullError, reads go on, and
// appends are taken again once uploads free space: at a ceiling the daemon
// deletes local copies of uploaded segments whatever local retention keeps
// (Log.ShrinkTo; the deletion guard still spares what is not uploaded).
//
// # Reads
//
// Partition.Read serves offsets at or above the hot log's start from the hot
// log, older ones from the committed remote segment holding them through a
// cold.Reader (ranged GETs of chunks, checksum-verified, cached, prefetched).
// A read half way through a remote segment prefetches the next one.
//
// # Restore
//
// OpenStore claims the bucket prefix with an identity marker (cluster.json):
// a prefix owned by another cluster is refused; a fresh data directory adopts
// the marker's id. A partition with no local manifest adopts the newest copy
// in the bucket, extends it with verified segment objects that continue it
// (uploaded, but the crash came before their commit), and starts its hot
// log past every offset a segment object in the bucket holds: a restore
// never gives an offset to a second record.
//
// # A cluster
//
// With StoreOptions.Shared every node of a cluster shares one prefix (one
// copy of the cluster's history): no node owns it, each partition's
// manifest is one object written only by the partition's leader, each
// write conditional on the ETag last read and stamped with the leader
// epoch; a new leader claims the manifest before it uploads, sweeps what
// earlier leaders uploaded and never named, and continues where the
// manifest ends; followers only read it (RefreshManifest). See shared.go.
//
// # Reading with no node
//
// An Archive reads a prefix's history with no node and no write (`tierlog
// bucket consume`): the topic records, each partition's newest manifest as
// a node finds it (shared or versioned copy), and the committed segments
// through a cold.Reader. Objects no manifest names are not read. See
// archive.go.
package tiering
