package tiering

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// uploadUncommitted brings p to the state a crash between an upload and
// its commit leaves: two committed segments and a manifest copy in the
// bucket, then a sealed segment whose object is uploaded (and whole) while
// the local manifest still says copy_started. It returns the attempt and
// the offset after the records the object holds.
func uploadUncommitted(t *testing.T, e *env, p *Partition) (RemoteSegment, built) {
	t.Helper()
	produce(t, p, 100)
	e.settle(p)
	produce(t, p, 100)
	p.Log().Roll()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(e.daemon.pending(p)) > 0 }, "a segment sealed")
	b := built{s: e.daemon.pending(p)[0], id: newID()}
	var err error
	if b.obj, err = e.daemon.build(p, b.s, b.id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.discard)
	entry := RemoteSegment{BaseOffset: b.s.BaseOffset, NextOffset: b.s.NextOffset, ID: b.id,
		Key: segmentKey(p.topic, p.partition, b.s.BaseOffset, 0, b.id), State: CopyStarted}
	if err := p.commit(func(m *Manifest) { m.Segments = append(m.Segments, entry) }); err != nil {
		t.Fatal(err)
	}
	attrs, err := e.daemon.put(context.Background(), entry.Key, b.obj)
	if err != nil {
		t.Fatal(err)
	}
	entry.State = CopyFinished
	entry.Size, entry.RawSize, entry.Chunks, entry.SHA256 = b.obj.size, b.s.Size, len(b.obj.footer.Chunks), b.obj.sha256
	entry.FirstTimestamp, entry.MaxTimestamp, entry.ETag = b.obj.footer.FirstTimestamp, b.obj.footer.MaxTimestamp, attrs.ETag
	return entry, b
}

// A restore that cannot read a segment object past the manifest because
// the bucket is flaky (503s outlasting the retries) must not carry on as if
// the object were not there: the object holds acknowledged records (its
// upload finished, the crash came before the commit) and is the only copy
// left. Carrying on gives its offsets to new records, and the start-up
// sweep then deletes it as an orphan.
func TestRestoreThroughFaultsNeverReusesOffsets(t *testing.T) {
	bucket, proxy := proxiedBucket(t, "minio")
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("t", 0, true)
	_, b := uploadUncommitted(t, e, p)
	uploaded := b.s.NextOffset
	p.Close()
	if err := os.RemoveAll(e.dataDir); err != nil { // the disk is lost
		t.Fatal(err)
	}

	// Every GET of a segment object fails for as long as one restore
	// retries it (defaultBackoff: 6 tries), then the bucket is well again.
	h := proxy.Add(faultproxy.Rule{Method: "GET", PathContains: ".seg", Fault: faultproxy.Error, Status: 503, Times: defaultBackoff.Attempts})
	e2 := restoreEnv(t, bucket, t.TempDir())
	p2, err := OpenPartition(context.Background(), PartitionOptions{
		Dir: e2.dataDir + "/t/0", Topic: "t", Hot: hotConfig(),
		Store: e2.store, Reader: e2.reader, Remote: true, Retention: Retention{Bytes: -1},
	})
	if h.Injected() == 0 {
		t.Fatal("no fault injected: the test exercised nothing")
	}
	if err != nil {
		t.Logf("restore refused while the bucket failed: %v", err)
		// Refusing is right; a retry once the bucket is well must then
		// restore everything.
		p2, err = OpenPartition(context.Background(), PartitionOptions{
			Dir: e2.dataDir + "/t/0", Topic: "t", Hot: hotConfig(),
			Store: e2.store, Reader: e2.reader, Remote: true, Retention: Retention{Bytes: -1},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	defer p2.Close()
	if p2.EndOffset() < uploaded {
		t.Fatalf("restored log ends at %d, but offsets up to %d were uploaded and acknowledged: new records would reuse them", p2.EndOffset(), uploaded-1)
	}
	start := p2.StartOffset()
	checkRecords(t, readAll(t, p2, start), start, uploaded)
}

// A crash between an upload's commit reaching the bucket (commitDurable
// copies the manifest there first) and the local manifest being saved
// leaves the bucket's newest manifest naming a verified object while the
// local one still says copy_started. The restart's sweep must not delete
// that object: the bucket says it is committed, and a node that loses its
// disk afterwards restores from that manifest.
func TestRestartKeepsObjectTheBucketCommitted(t *testing.T) {
	bucket := newFileBucket(t)
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("t", 0, true)
	entry, b := uploadUncommitted(t, e, p)
	m := p.Manifest()
	m.replace(entry)
	m.Version++
	if err := p.putManifestCopy(context.Background(), m); err != nil { // commitDurable's first step
		t.Fatal(err)
	}
	uploaded := b.s.NextOffset
	p.Close() // the crash: the local manifest still says copy_started

	e2 := newEnv(t, bucket, e.dataDir) // the restart, same disk
	p2 := e2.open("t", 0, true)
	if err := e2.daemon.cleanup(context.Background(), p2); err != nil { // the start-up sweep
		t.Fatal(err)
	}
	if _, err := bucket.Attributes(context.Background(), entry.Key); err != nil {
		t.Errorf("the start-up sweep deleted %s, which the bucket's manifest version %d commits: %v", entry.Key, m.Version, err)
	}
	p2.Close()
	if err := os.RemoveAll(e.dataDir); err != nil { // then the disk is lost
		t.Fatal(err)
	}

	e3 := restoreEnv(t, bucket, t.TempDir())
	p3 := e3.open("t", 0, true)
	defer p3.Close()
	start := p3.StartOffset()
	checkRecords(t, readAll(t, p3, start), start, uploaded)
}

// The bucket's manifest copy can name an attempt still copy_started: a
// pass copies the manifest after a restart whose sweep could not withdraw
// the attempt (the bucket failed) and whose upload retry failed too. If the
// object of that attempt is whole, it holds acknowledged records; a node
// that loses its disk then must adopt it (or at least start past it), not
// give its offsets to new records.
func TestRestoreAdoptsAttemptTheManifestCopyNames(t *testing.T) {
	bucket := newFileBucket(t)
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("t", 0, true)
	_, b := uploadUncommitted(t, e, p)
	if err := e.daemon.copyManifest(context.Background(), p); err != nil { // the end of a pass
		t.Fatal(err)
	}
	loseDiskAndRestore(t, bucket, e, p, b.s.NextOffset)
}
