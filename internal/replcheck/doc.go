// Package replcheck checks a replicated partition log after a fault run:
// given every record a producer was acknowledged for and the data
// directories of the stopped nodes, it reports acknowledged records that
// were lost or changed, records stored twice, replicas that diverge, and
// holes inside a replica's log. It exists for the cluster's fault tests
// and must be able to fail: its own tests feed it logs with a record
// removed, a replica altered and a retry stored twice.
//
// # What is read
//
// A node keeps partition P of topic T in DATA/topics/T/P, a hot.Log
// directory. hot has no read-only open (Open recovers a torn tail and
// writes a recovery point, index files and an epoch checkpoint), so each
// partition directory is copied to a temporary directory, opened there
// with hot.Open and read whole through hot.Log.Read; the node's own files
// are never opened for writing. What is checked is therefore what the
// node would serve after a restart. Everything is held in memory: fine
// for a fault run's few megabytes, not for a production log.
//
// A replica holds offsets [local log start, log end): older ones were
// tiered, and a follower may be behind. The checker reads local logs only.
//
// # The rules
//
//   - Reference: per partition, the replica with the largest log end (then
//     the lowest start, then the lowest node id).
//   - Lost: an acknowledged (partition, offset) whose record is missing or
//     has another key or value in the log as a consumer would read it: the
//     reference, and below its local start any other replica holding the
//     offset. With Options.Tiered an ack below every replica's local start
//     is Unverified (in the bucket, not read here), otherwise Lost. A null
//     and an empty key or value compare equal.
//   - Duplicates: an acknowledged key and value stored at more than one
//     offset (a retry stored twice). Acknowledged records must be unique
//     per partition, as a fault test's numbered values are; records
//     written but never acknowledged may exist and are not reported.
//   - Divergent: over the offsets a replica shares with the reference, the
//     batches covering them must be byte for byte the same (a follower
//     appends its leader's batches unchanged, leader epoch included). A
//     replica that is only behind, or whose local start is later, is not
//     divergent. The first difference per replica is reported, with the
//     first record that differs and how.
//   - Gaps: an offset with no record inside a replica's [start, end).
//
// Usage, after the nodes have stopped:
//
//	rep, err := replcheck.Check(acks, replcheck.Options{Topic: "t", Partitions: 3,
//		Dirs: map[int32]string{1: dir1, 2: dir2, 3: dir3}})
//	if err != nil || !rep.OK() {
//		t.Fatalf("%v\n%s", err, rep)
//	}
package replcheck
