package replcheck

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const topic = "events"

// rec is one record of a test history.
type rec struct{ key, value string }

// numbered returns records first..first+n-1 of partition p, each value
// unique as a fault test's are.
func numbered(p int32, first, n int) []rec {
	out := make([]rec, n)
	for i := range out {
		out[i] = rec{key: fmt.Sprintf("k%d", first+i), value: fmt.Sprintf("p%d-value-%06d", p, first+i)}
	}
	return out
}

// leaderBatches frames recs as a leader stores them: perBatch records a
// batch, numbered from base, stamped with epoch.
func leaderBatches(t testing.TB, base int64, epoch int32, perBatch int, recs []rec) [][]byte {
	t.Helper()
	var out [][]byte
	for chunk := range slices.Chunk(recs, perBatch) {
		brecs := make([]batch.Record, len(chunk))
		for i, r := range chunk {
			brecs[i] = batch.Record{Timestamp: 1_700_000_000_000 + base + int64(i), Key: []byte(r.key), Value: []byte(r.value)}
		}
		b, err := batch.Build(brecs, batch.BuildOptions{BaseOffset: base})
		if err != nil {
			t.Fatal(err)
		}
		batch.SetLeaderEpoch(b, epoch)
		out = append(out, b)
		base += int64(len(chunk))
	}
	return out
}

// writeReplica writes batches into node dataDir's log of partition p with
// hot.AppendReplica, as a follower stores its leader's batches. The log is
// created starting at start (a replica whose older history was tiered).
func writeReplica(t testing.TB, dataDir string, p int32, start int64, batches [][]byte) {
	t.Helper()
	writeReplicaSegments(t, dataDir, p, start, 1<<10, batches) // many segments, so reads cross them
}

// writeReplicaSegments is writeReplica with segments of segmentBytes.
func writeReplicaSegments(t testing.TB, dataDir string, p int32, start int64, segmentBytes int64, batches [][]byte) {
	t.Helper()
	cfg := hot.DefaultConfig()
	cfg.SegmentBytes = segmentBytes
	l, err := hot.Open(PartitionDir(dataDir, topic, p), cfg, hot.Options{Topic: topic, Partition: p, InitialOffset: start})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	for _, b := range batches {
		if _, err := l.AppendReplica(slices.Clone(b)); err != nil {
			t.Fatalf("append replica batch to %s: %v", dataDir, err)
		}
	}
}

// acksOf is what a producer was told for every record of batches.
func acksOf(t testing.TB, p int32, batches [][]byte) []Ack {
	t.Helper()
	var out []Ack
	for _, b := range batches {
		_, recs, err := batch.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			out = append(out, Ack{Partition: p, Offset: r.Offset, Key: slices.Clone(r.Key), Value: slices.Clone(r.Value)})
		}
	}
	return out
}

// alterValue returns batch b rebuilt with one byte of the value at offset
// off changed: a valid batch (its CRC recomputed), same base and epoch.
func alterValue(t testing.TB, b []byte, off int64) []byte {
	t.Helper()
	h, recs, err := batch.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := range recs {
		recs[i].Value = slices.Clone(recs[i].Value)
		if recs[i].Offset == off {
			recs[i].Value[len(recs[i].Value)-1] ^= 0x01
			found = true
		}
	}
	if !found {
		t.Fatalf("offset %d is not in the batch at %d", off, h.BaseOffset)
	}
	out, err := batch.Build(recs, batch.BuildOptions{BaseOffset: h.BaseOffset})
	if err != nil {
		t.Fatal(err)
	}
	batch.SetLeaderEpoch(out, h.PartitionLeaderEpoch)
	if _, err := batch.Validate(out); err != nil {
		t.Fatal(err)
	}
	return out
}

// skipSecondOffset returns a two-record uncompressed batch rewritten so
// its second record has offset delta 2 instead of 1 (a hole at base+1, as
// compaction leaves), last offset delta 2, CRC recomputed.
func skipSecondOffset(t testing.TB, b []byte) []byte {
	t.Helper()
	b = slices.Clone(b)
	h, err := batch.Validate(b)
	if err != nil || h.NumRecords != 2 {
		t.Fatalf("want a valid batch of 2 records: %v", err)
	}
	pos := batch.HeaderSize
	l, w := binary.Varint(b[pos:])
	pos += w + int(l) // the second record
	_, w = binary.Varint(b[pos:])
	pos += w + 1 // past its length and attributes
	_, w = binary.Varint(b[pos:])
	pos += w // past its timestamp delta: at its offset delta
	if d, w := binary.Varint(b[pos:]); d != 1 || w != 1 {
		t.Fatalf("second record's offset delta is %d (%d bytes), want 1", d, w)
	}
	binary.PutVarint(b[pos:], 2)
	binary.BigEndian.PutUint32(b[23:], 2) // last offset delta
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	if _, err := batch.Validate(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// nodes makes n empty data directories, node ids 1..n.
func nodes(t testing.TB, n int) map[int32]string {
	dirs := make(map[int32]string, n)
	for i := range int32(n) {
		dirs[i+1] = t.TempDir()
	}
	return dirs
}

// mustCheck runs Check and fails the test on an error.
func mustCheck(t testing.TB, acks []Ack, o Options) Report {
	t.Helper()
	o.Topic = topic
	r, err := Check(acks, o)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	t.Logf("%s", r)
	return r
}
