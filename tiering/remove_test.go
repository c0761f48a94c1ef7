package tiering

import (
	"context"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// Issue 6 item 17: a pass lists the partitions, then a topic deletion
// removes one from the daemon and lists the bucket to delete its objects;
// the pass must not then upload segments or a manifest copy for it (they
// would leak, and a new topic of the name would adopt the manifest).
func TestNoBucketWritesAfterRemove(t *testing.T) {
	bucket := newFileBucket(t)
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("gone", 0, true)
	defer p.Close()
	produce(t, p, 100) // several 64 KiB segments
	p.Log().Roll()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(p.Log().SealedSegments()) == len(p.Log().Segments())-1 }, "segments sealed")

	listed := e.daemon.partitions() // what a pass in flight has already listed
	e.daemon.Remove(p)
	ctx := context.Background()
	for _, q := range listed { // the pass reaches the partition after the removal
		e.daemon.tier(ctx, q)
		if err := e.daemon.cleanup(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := bucket.Iter(ctx, PartitionPrefix("gone", 0), func(k string) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("the daemon wrote %d objects for a removed partition: %v", len(keys), keys)
	}
}
