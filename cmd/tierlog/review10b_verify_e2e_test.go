package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/tiering"
)

// TestReview10b_TrustedCheckpointIgnoredAfterMarkerRewrite: the auditor
// kept the newest checkpoint outside the bucket and passes it with
// --checkpoint - the documented defence against a rollback that also
// deleted the bucket's newer checkpoints. The administrator rolls back
// the two newest segments, deletes every checkpoint, strips the
// manifest's tree sizes - and rewrites the cluster marker's cluster_id,
// an unsigned object in the bucket. The verifier builds the origin from
// that id, finds the trusted checkpoint's origin different and skips it
// silently: verify exits 0, "every record, tile and checkpoint agrees",
// though the auditor's own signed checkpoint says offsets are missing.
func TestReview10b_TrustedCheckpointIgnoredAfterMarkerRewrite(t *testing.T) {
	t.Parallel()
	bucket := filepath.Join(t.TempDir(), "bucket")
	a := writeAuditArchive(t, nil, "file://"+bucket, 3000, false)
	tp := a.tamper(t)
	kept := filepath.Join(t.TempDir(), "checkpoint")
	writeFile(t, kept, tp.get(audit.LatestCheckpointKey(tp.prefix)))
	wantClean(t, a.verify(t, "--checkpoint", kept))

	// Roll back: the two newest segments go.
	segs := tp.segments()
	last := segs[len(segs)-3]
	for _, s := range segs[len(segs)-2:] {
		tp.del(s.Key)
	}
	tp.editManifests(func(m *tiering.Manifest) {
		var out []tiering.RemoteSegment
		for _, s := range m.Segments {
			if s.BaseOffset < last.NextOffset {
				s.TreeSize, s.TreeRoot = 0, ""
				out = append(out, s)
			}
		}
		m.Segments = out
		m.TreeSize, m.TreeRoot = 0, ""
	})
	for _, size := range tp.checkpointSizes() {
		tp.del(audit.CheckpointKey(tp.prefix, size))
	}
	tp.del(audit.LatestCheckpointKey(tp.prefix))
	// Control: with the marker untouched, the kept checkpoint finds it.
	wantFinding(t, a.verify(t, "--checkpoint", kept), last.NextOffset, last.Key, "rolled back")

	// The cluster marker is an unsigned JSON object: give it another id.
	var marker map[string]any
	if err := json.Unmarshal(tp.get("cluster.json"), &marker); err != nil {
		t.Fatal(err)
	}
	marker["cluster_id"] = "not-the-cluster-the-auditor-trusts"
	raw, _ := json.Marshal(marker)
	tp.put("cluster.json", raw)

	r := a.verify(t, "--checkpoint", kept)
	t.Logf("verify --checkpoint after the marker rewrite: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	if r.code == 0 {
		t.Fatalf("verify --checkpoint %s exits 0 on an archive rolled back from %d to %d records: the trusted checkpoint was skipped because the bucket's cluster marker no longer names its cluster", kept, a.records, last.NextOffset)
	}
}

// TestReview10b_TruncatedTileExit2: one full tile truncated by the
// administrator. The recomputation notices (the tile differs), but the
// consistency proofs between checkpoints read the same tile with
// audit.ReadTile, whose "holds N bytes, want M" error is not
// cold.ErrNotFound: checkConsistency returns it as a read failure, Verify
// drops every finding, and verify exits 2, "nothing concluded" - the
// code for a bucket it could not read - instead of 1 with the offset and
// the tile. A script that treats 2 as "try again later" never raises the
// alarm.
func TestReview10b_TruncatedTileExit2(t *testing.T) {
	t.Parallel()
	bucket := filepath.Join(t.TempDir(), "bucket")
	a := writeAuditArchive(t, nil, "file://"+bucket, 3000, false)
	wantClean(t, a.verify(t))
	tp := a.tamper(t)
	key := audit.TileKey(tp.prefix, 0, 1, audit.TileWidth)
	tp.put(key, tp.get(key)[:100])
	r := a.verify(t)
	t.Logf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	wantFinding(t, r, audit.TileWidth+3, key, "tile")
}

// TestReview10b_UnsignedTopicRecordHidesPartition: `tierlog verify
// --bucket URL --public-key KEY` (every topic) takes the list of topics
// and their partition counts from topics/<name>.json - unsigned objects
// the administrator can rewrite like any other. With a segment of audit/0
// deleted (a finding on its own), deleting audit's topic record, marking
// it a tombstone, or setting its partition count to 0 makes verify skip
// audit/0 without a word: it verifies "short" alone, exits 0 and prints
// "every record, tile and checkpoint agrees", though audit/0's signed
// checkpoints and tiles are all still in the bucket.
func TestReview10b_UnsignedTopicRecordHidesPartition(t *testing.T) {
	t.Parallel()
	bucket := filepath.Join(t.TempDir(), "bucket")
	orig := writeAuditArchive(t, nil, "file://"+bucket, 3000, true)
	wantClean(t, orig.verify(t))
	for _, c := range []struct {
		name string
		edit func(tp *tamper)
	}{
		{"topic record deleted", func(tp *tamper) { tp.del("topics/audit.json") }},
		{"topic record a tombstone", func(tp *tamper) { tp.editTopic(func(m map[string]any) { m["deleting"] = true }) }},
		{"topic record with 0 partitions", func(tp *tamper) { tp.editTopic(func(m map[string]any) { m["partitions"] = 0 }) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := orig.copyTo(t)
			tp := a.tamper(t)
			s := tp.segments()[1]
			tp.del(s.Key)
			wantFinding(t, a.verify(t), s.BaseOffset, s.Key, "missing") // control
			c.edit(tp)
			r := a.verify(t)
			t.Logf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			wantFinding(t, r, s.BaseOffset, s.Key, "missing")
		})
	}
}

func (tp *tamper) editTopic(edit func(m map[string]any)) {
	tp.t.Helper()
	var m map[string]any
	if err := json.Unmarshal(tp.get("topics/audit.json"), &m); err != nil {
		tp.t.Fatal(err)
	}
	edit(m)
	raw, _ := json.Marshal(m)
	tp.put("topics/audit.json", raw)
}

// TestReview10b_TamperedManifestExit2: the administrator lists a
// committed segment twice in the manifest (or swaps two entries). The
// manifest no longer validates ("manifest segments overlap"), and verify
// reports that as a bucket it could not read: exit 2, "nothing
// concluded", no offset, no object - not exit 1 with the first
// disagreement, as a tampered archive must give.
func TestReview10b_TamperedManifestExit2(t *testing.T) {
	t.Parallel()
	bucket := filepath.Join(t.TempDir(), "bucket")
	a := writeAuditArchive(t, nil, "file://"+bucket, 3000, false)
	wantClean(t, a.verify(t))
	tp := a.tamper(t)
	segs := tp.segments()
	tp.editManifests(func(m *tiering.Manifest) {
		for i := 1; i+1 < len(m.Segments); i++ {
			if m.Segments[i].Key == segs[1].Key {
				m.Segments[i], m.Segments[i+1] = m.Segments[i+1], m.Segments[i]
				return
			}
		}
	})
	r := a.verify(t)
	t.Logf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	wantFinding(t, r, segs[1].BaseOffset, mustNewest(tp))
}
