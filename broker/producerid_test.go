package broker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// idempotentBatch is an idempotent producer's batch of one record.
func idempotentBatch(t *testing.T, id int64, seq int32, value string) []byte {
	t.Helper()
	b, err := batch.Build([]batch.Record{{Timestamp: 1_000_000, Value: []byte(value)}},
		batch.BuildOptions{Producer: &batch.Producer{ID: id, Epoch: 0, BaseSequence: seq}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A node that lost its disk restores its topics from the bucket, but not
// its producer-id-block: InitProducerId starts again at 0 and hands out
// ids that producers still connected from before the loss keep using. Two
// live producers then share an id and epoch, and a batch of the new one
// whose sequence range matches one of the old one's is answered as a
// duplicate: acknowledged with the other producer's offset, never
// written.
func TestProducerIDsNotReusedAfterRestore(t *testing.T) {
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	b, _ := tieredNode(t, t.TempDir(), bucketDir)
	if _, err := b.CreateTopic("t", 2, nil); err != nil {
		t.Fatal(err)
	}
	old, err := b.AllocateProducerID()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append("t", 0, idempotentBatch(t, old, 0, "old-0")); err != nil {
		t.Fatal(err)
	}
	b.Close()

	// The disk is lost; a new node restores from the bucket. The old
	// producer reconnects and goes on with its id, writing its first batch
	// to partition 1.
	r, _ := tieredNode(t, t.TempDir(), bucketDir)
	defer r.Close()
	if _, err := r.Topic("t"); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if _, err := r.Append("t", 1, idempotentBatch(t, old, 0, "old-1")); err != nil {
		t.Fatal(err)
	}
	// A new producer starts.
	fresh, err := r.AllocateProducerID()
	if err != nil {
		t.Fatal(err)
	}
	if fresh == old {
		t.Errorf("the restored node handed out producer id %d again: the old node gave it to a producer that is still producing", fresh)
	}
	res, err := r.Append("t", 1, idempotentBatch(t, fresh, 0, "new-1"))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := r.Fetch(context.Background(), "t", 1, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := batch.DecodeAll(fr.Records)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rec := range recs {
		got = append(got, string(rec.Value))
	}
	if res.Duplicate || len(recs) != 2 {
		t.Fatalf("the new producer's first record was acknowledged at offset %d (duplicate %v) but partition 1 holds %q: acknowledged and never written",
			res.BaseOffset, res.Duplicate, got)
	}
}

// A restart continues after the ids reserved before it.
func TestProducerIDsContinueAfterRestart(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	first, err := b.AllocateProducerID()
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	b = open(t, dir)
	defer b.Close()
	next, err := b.AllocateProducerID()
	if err != nil {
		t.Fatal(err)
	}
	if next <= first {
		t.Fatalf("after a restart the broker handed out %d, at or below %d handed out before", next, first)
	}
}

// Without a producer-id-block the ids start from the clock, and above
// every producer id a partition's producer state holds: here a producer
// whose id lies ahead of the clock (a node whose clock was ahead, or set
// back since) is still producing.
func TestProducerIDsStartAboveKnownProducers(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	if _, err := b.CreateTopic("t", 1, nil); err != nil {
		t.Fatal(err)
	}
	ahead := time.Now().Add(24*time.Hour).UnixMilli() * producerIDsPerMilli
	if _, err := b.Append("t", 0, idempotentBatch(t, ahead, 0, "ahead")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := os.Remove(filepath.Join(dir, producerIDFile)); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	b = open(t, dir)
	defer b.Close()
	id, err := b.AllocateProducerID()
	if err != nil {
		t.Fatal(err)
	}
	if id <= ahead {
		t.Fatalf("handed out producer id %d, at or below %d that partition t/0 knows", id, ahead)
	}
}
