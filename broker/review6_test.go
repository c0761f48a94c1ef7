package broker

import (
	"context"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

// A topic deleted and created again under its name starts with no
// committed offsets (dropGroupOffsets). The bucket's copy of the offsets
// taken before the deletion still holds the old topic's offsets; a node
// restored from the bucket before the next copy (a crash within the
// 30 s interval) gives them to the new topic, which exists, so openGroups
// keeps them: the group resumes the new topic at offset 80, which the new
// topic never had - not "a commit lost" but a dead topic's offset applied
// to a different one.
func TestReview_RestoreGivesDeletedTopicsOffsetsToItsSuccessor(t *testing.T) {
	bucketDir := t.TempDir()
	bk, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	// The periodic copy never runs in this test: only the explicit one.
	b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk, GroupsCopyInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic("orders", 1, nil); err != nil {
		t.Fatal(err)
	}
	commitOffset(t, b, "billing", "orders", 80)
	if err := b.CopyGroupOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteTopic("orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("orders", 1, nil); err != nil {
		t.Fatal(err)
	}
	if got := b.Groups().Offsets("billing"); len(got) != 0 {
		t.Fatalf("offsets of billing after deleting and re-creating orders: %+v, want none", got)
	}
	// The node is lost (no graceful shutdown); another restores the
	// bucket into an empty directory.
	bk2, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk2, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Partition("orders", 0); err != nil {
		t.Fatalf("the re-created topic was not restored: %v", err)
	}
	if got := r.Groups().Offsets("billing"); len(got) != 0 {
		t.Fatalf("restored offsets of billing: %+v; want none: offset 80 was the deleted topic's, committed before the new orders existed", got)
	}
}

// The offsets copy runs every 30 s; records reach the bucket only when
// their segment rolls. So the copy is routinely ahead of the bucket's
// data, and a node restored after losing its disk gets offsets past its
// restored log end: here billing's offset 10 on a partition restored
// empty. The next 10 records producers append (acknowledged, offsets
// 0..9 again) are then never delivered to billing, which resumes at 10.
// A restore should not hand a group an offset beyond the restored log end
// (clamp it to the end, or drop it).
func TestReview_RestoredOffsetsAheadOfRestoredLog(t *testing.T) {
	bucketDir := t.TempDir()
	bk, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk, GroupsCopyInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic("ledger", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append("ledger", 0, testutil.Batch(t, 0, 10, 50, 1)); err != nil {
		t.Fatal(err)
	}
	commitOffset(t, b, "billing", "ledger", 10)
	if err := b.CopyGroupOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The disk is lost; another node restores the bucket.
	bk2, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk2, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	end := r.Topics()[0].Partitions[0].EndOffset
	res, err := r.Append("ledger", 0, testutil.Batch(t, 0, 10, 50, 2))
	if err != nil {
		t.Fatal(err)
	}
	committed := r.Groups().Offsets("billing")["ledger"][0].Offset
	if committed > end {
		t.Fatalf("restored log ends at %d, billing's restored offset is %d: the records appended after the restore at %d.. (acknowledged, %+v) are skipped by billing",
			end, committed, end, res)
	}
}
