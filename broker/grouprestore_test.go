package broker

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

// offsetsDownBucket fails the uploads of the group offsets' copy while
// down is set; everything else passes.
type offsetsDownBucket struct {
	cold.Bucket
	down atomic.Bool
}

func (o *offsetsDownBucket) UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond cold.Condition) (cold.Attributes, error) {
	if key == tiering.GroupOffsetsKey && o.down.Load() {
		return cold.Attributes{}, errors.New("offsetsDownBucket: the group offsets' copy is refused")
	}
	return o.Bucket.(cold.ConditionalUploader).UploadIf(ctx, key, r, size, cond)
}

// DeleteTopic drops the topic's committed offsets and copies the offsets
// to the bucket at once, not at the next interval: a node lost meanwhile
// is restored without them.
func TestDeleteTopicCopiesGroupOffsetsAtOnce(t *testing.T) {
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
	raw, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := b.CreateTopic("orders", 1, nil); err != nil {
		t.Fatal(err)
	}
	commitOffset(t, b, "billing", "orders", 80)
	if err := b.CopyGroupOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := copiedOffset(t, raw, "billing", "orders"); got != 80 {
		t.Fatalf("copied offset %d, want 80", got)
	}
	if err := b.DeleteTopic("orders"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return copiedOffset(t, raw, "billing", "orders") == -1 },
		"the bucket's copy still holds the deleted topic's offset (the copy interval is an hour)")
}

// A topic deleted and created again under its name starts with no
// committed offsets (dropGroupOffsets). When the copy after the deletion
// does not land (the bucket refused it; then the node is lost), the
// bucket's copy still holds the old topic's offsets; a node restored from
// it must not give them to the new topic, which exists: it drops the
// offsets committed before their topic was created (the bucket's topic
// record says when), and keeps the others.
func TestRestoreDropsOffsetsOlderThanTheirTopic(t *testing.T) {
	bucketDir := t.TempDir()
	inner, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	bk := &offsetsDownBucket{Bucket: inner}
	// The periodic copy never runs in this test: only the explicit one
	// (and DeleteTopic's, which the bucket refuses).
	b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk, GroupsCopyInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, name := range []string{"orders", "ledger"} {
		if _, err := b.CreateTopic(name, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	appendUploaded(t, b, "ledger", 5)
	commitOffset(t, b, "billing", "orders", 80)
	commitOffset(t, b, "billing", "ledger", 3)
	if err := b.CopyGroupOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}
	bk.down.Store(true)
	if err := b.DeleteTopic("orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("orders", 1, nil); err != nil {
		t.Fatal(err)
	}
	if got := b.Groups().Offsets("billing"); len(got["orders"]) != 0 {
		t.Fatalf("offsets of billing after deleting and re-creating orders: %+v, want none of orders", got)
	}
	// The node is lost (no graceful shutdown); another restores the
	// bucket into an empty directory.
	bk2, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := copiedOffset(t, bk2, "billing", "orders"); got != 80 {
		t.Fatalf("the bucket's copy holds billing's offset %d of orders, want the stale 80 this test restores", got)
	}
	r, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk2, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Partition("orders", 0); err != nil {
		t.Fatalf("the re-created topic was not restored: %v", err)
	}
	got := r.Groups().Offsets("billing")
	if len(got["orders"]) != 0 {
		t.Fatalf("restored offsets of billing: %+v; want none of orders: offset 80 was the deleted topic's, committed before the new orders existed", got)
	}
	if o, ok := got["ledger"][0]; !ok || o.Offset != 3 {
		t.Fatalf("restored offsets of billing: %+v; want ledger/0 at 3 kept", got)
	}
}

// The offsets copy runs every 30 s; records reach the bucket only when
// their segment rolls. So the copy is routinely ahead of the bucket's
// data, and a node restored after losing its disk gets offsets past its
// restored log end: here billing's offset 10 on a partition restored
// empty. The next 10 records producers append (acknowledged, offsets
// 0..9 again) would never be delivered to billing if it resumed at 10:
// the restore lowers an offset beyond the restored log end to that end.
func TestRestoreLowersOffsetsBeyondTheRestoredLogEnd(t *testing.T) {
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
	if committed != end {
		t.Fatalf("restored log ends at %d, billing's restored offset is %d, want %d: the records appended after the restore at %d.. (acknowledged, %+v) would be skipped by billing",
			end, committed, end, end, res)
	}
}
