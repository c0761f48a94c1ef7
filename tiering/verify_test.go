package tiering

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// verifyArchive runs Archive.Verify on p's partition in e's bucket, read
// only, with e's signing key k.
func verifyArchive(t *testing.T, e *env, p *Partition, k *audit.Key) *VerifyReport {
	t.Helper()
	v, err := audit.NewVerifier(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := NewArchive(cold.ReadOnly(e.bucket), nil).Verify(context.Background(),
		VerifyTarget{ClusterID: e.store.ClusterID, Topic: p.topic, Partition: p.partition}, VerifyOptions{Keys: note.VerifierList(v)})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// signedPartition opens a partition of a new env whose daemon builds the
// tree, with n batches produced and uploaded.
func signedPartition(t *testing.T, n int) (*env, *Partition, *audit.Key) {
	t.Helper()
	e := newEnv(t, newFileBucket(t), t.TempDir())
	k := e.signWith(filepath.Join(t.TempDir(), "k"))
	p := e.open("audit", 0, true)
	t.Cleanup(func() { p.Close() })
	produce(t, p, n)
	e.settle(p)
	return e, p, k
}

// An archive the daemon wrote verifies: every record read, every root,
// tile and consistency proof checked.
func TestVerifyArchive(t *testing.T) {
	e, p, k := signedPartition(t, 300)
	rep := verifyArchive(t, e, p, k)
	segs := p.Manifest().committed()
	if len(rep.Findings) > 0 || rep.Records != p.UploadedEnd() || rep.Segments != len(segs) ||
		rep.Checkpoints != len(segs) || rep.Proofs != len(segs)-1 || rep.Roots != 2*len(segs) || rep.Tiles == 0 {
		t.Fatalf("verify: %+v, want no findings, %d records, %d segments and checkpoints", rep, p.UploadedEnd(), len(segs))
	}
}

// Remote retention that deletes every segment which recorded the tree
// does not restart it: the next checkpoint extends the earlier ones (a
// consistency proof holds), which Verify checks.
func TestTreeContinuesAfterRetentionDeletedEverySegment(t *testing.T) {
	e, p, k := signedPartition(t, 100)
	before := p.UploadedEnd()
	if err := p.SetConfig(hotConfig(), true, Retention{Bytes: 0}); err != nil {
		t.Fatal(err)
	}
	e.daemon.pass(context.Background())
	if n := len(p.Manifest().Segments); n != 0 {
		t.Fatalf("retention left %d segments", n)
	}
	if err := p.SetConfig(hotConfig(), true, Retention{Bytes: -1}); err != nil {
		t.Fatal(err)
	}
	produce(t, p, 100)
	e.settle(p)
	rep := verifyArchive(t, e, p, k)
	if len(rep.Findings) > 0 || rep.From != before || rep.BelowStart == 0 || rep.Proofs != rep.Checkpoints-1 {
		t.Fatalf("verify after retention deleted everything below %d: %+v", before, rep)
	}
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "deleted by retention") {
		t.Errorf("the report does not say what retention deleted: %q", rep.Notes)
	}
}

// Every partial tile a proof at a checkpoint's size reads is compared,
// also one of a level the verifier's last append before the checkpoint
// did not reach. One segment of 4200 records: the verifier appends the
// first maxPiece (4096) leaves, then the last 104 at the checkpoint, which
// reach level 0 only; the level-1 partial tile at 4200 (16 entries) is the
// one the first append wrote.
func TestVerifyComparesEveryPartialTile(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	k := e.signWith(filepath.Join(t.TempDir(), "k"))
	p := e.open("audit", 0, true)
	t.Cleanup(func() { p.Close() })
	cfg := hotConfig()
	cfg.SegmentBytes = 16 << 20
	if err := p.SetConfig(cfg, true, Retention{Bytes: -1}); err != nil {
		t.Fatal(err)
	}
	produce(t, p, 840)
	e.settle(p)
	if segs := p.Manifest().committed(); len(segs) != 1 || segs[0].NextOffset != 4200 || maxPiece != 4096 {
		t.Fatalf("%d segments, want one of offsets 0 to 4199 (maxPiece %d)", len(segs), maxPiece)
	}
	ctx := context.Background()
	key := audit.TileKey(PartitionPrefix("audit", 0), 1, 0, 16)
	tile, err := getAll(ctx, e.bucket, key)
	if err != nil {
		t.Fatal(err)
	}
	tile[5*audit.HashSize] ^= 1
	if _, err := e.bucket.Upload(ctx, key, bytes.NewReader(tile), int64(len(tile))); err != nil {
		t.Fatal(err)
	}
	rep := verifyArchive(t, e, p, k)
	if len(rep.Findings) != 1 || rep.Findings[0].Object != key || rep.Findings[0].Offset != 5*audit.TileWidth ||
		!strings.Contains(rep.Findings[0].Problem, "the tile differs") {
		t.Fatalf("verify after changing %s: %v", key, rep.Findings)
	}
}

// A GET of a segment that breaks off mid-object is read again from the
// object's start: the leaves added from the first GET are not added
// again (they would be records out of order), and the archive verifies.
func TestVerifyRetriesABrokenRead(t *testing.T) {
	bucket, proxy := proxiedBucket(t, "minio")
	e := newEnv(t, bucket, t.TempDir())
	k := e.signWith(filepath.Join(t.TempDir(), "k"))
	p := e.open("audit", 0, true)
	t.Cleanup(func() { p.Close() })
	produce(t, p, 300)
	e.settle(p)
	// The segment of the most chunks, cut halfway through its whole-object
	// GET; the GET of its footer before goes through.
	segs := p.Manifest().committed()
	s := segs[0]
	for _, c := range segs {
		if c.Chunks > s.Chunks {
			s = c
		}
	}
	if s.Chunks < 4 {
		t.Fatalf("the largest segment has %d chunks: too few to break its read in the middle", s.Chunks)
	}
	h := proxy.Add(faultproxy.Rule{Method: "GET", PathContains: s.Key, Fault: faultproxy.Truncate, After: s.Size / 2, Skip: 1, Times: 1})
	rep := verifyArchive(t, e, p, k)
	if h.Injected() != 1 {
		t.Fatalf("the read of %s was not broken (%d of %d GETs)", s.Key, h.Injected(), h.Matched())
	}
	if len(rep.Findings) > 0 || rep.Records != p.UploadedEnd() {
		t.Fatalf("verify after a broken read: %d records of %d, findings %v", rep.Records, p.UploadedEnd(), rep.Findings)
	}
}
