package tiering

import (
	"context"
	"fmt"
	"strings"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestSweepCountsEachOrphanOnce: an operator enables versioning while an
// orphan sweep runs (enablingBucket: right after its first delete by
// key). The sweep, which asked the bucket once and heard "no versions",
// deletes the remaining orphans by key; on the now versioned bucket that
// only hides their null versions behind new delete markers. purge still
// reports each as deleted and gone (purge's known, keeps-no-versions
// branch returns deleted: 1), so deleteOrphans logs "deleted orphan
// object" and counts tierlog_tiering_orphans_deleted_total for an orphan
// whose version is still in the bucket. The README says the next sweep
// deletes what is left - it does, and counts and logs the same orphan a
// second time: the counter ends above the number of orphans.
//
// Fix: in deleteOrphans, ask bucketVersioning.turnedOn after the loop
// (as purgeAll does) and purge what the deletes by key left in the same
// sweep, counting an orphan once; or count an orphan only when the
// listing held no marker a delete by key put (e.g. count keys, not
// deletions, once per key, after turnedOn says nothing changed).
func TestSweepCountsEachOrphanOnce(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	name := m.NewBucket(t)
	e := newEnvIn(t, m, name, "minio")
	p := e.openLocked("swept", ObjectLock{})
	produce(t, p, 50)
	e.settle(p)
	prefix := PartitionPrefix("swept", 0)
	const orphans = 3
	for i := range orphans {
		k := segmentKey("swept", 0, int64(1<<40+i), 0, fmt.Sprintf("%016x", 0xaa+i))
		if _, err := e.env.bucket.Upload(ctx, k, strings.NewReader("orphan"), 6); err != nil {
			t.Fatal(err)
		}
	}
	orig := e.store.Bucket
	e.store.Bucket = &enablingBucket{versionedBucket: wrapVersioned(orig), enable: func() {
		if err := m.Client().EnableVersioning(ctx, name); err != nil {
			t.Error(err)
		}
	}}
	if err := e.daemon.cleanup(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.store.Bucket = orig
	after1 := promtest.ToFloat64(e.daemon.m.orphans)
	var left []string
	for _, o := range e.allVersions(prefix) {
		if strings.Contains(o.Key, "-0-00000000000000a") {
			left = append(left, entry(o))
		}
	}
	t.Logf("after the first sweep: orphans counted %v; left: %q", after1, left)
	if err := e.daemon.cleanup(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, o := range e.allVersions(prefix) {
		if strings.Contains(o.Key, "-0-00000000000000a") {
			t.Errorf("left after the second sweep: %s", entry(o))
		}
	}
	if got := promtest.ToFloat64(e.daemon.m.orphans); got != orphans {
		t.Errorf("tierlog_tiering_orphans_deleted_total = %v after two sweeps of %d orphans (%v after the first, which left %d versions and markers of them); want %d", got, orphans, after1, len(left), orphans)
	}
}
