package broker

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/broker/groups"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
	"github.com/tierlog/tierlog/tiering"
)

// commitOffset commits one offset for a group used only to store offsets
// (as kadm's CommitOffsets does) and waits until it is durable.
func commitOffset(t *testing.T, b *Broker, group, topic string, offset int64) {
	t.Helper()
	err := b.Groups().Commit(groups.CommitRequest{Group: group, Generation: -1, Offsets: []groups.PartitionOffset{
		{Topic: topic, Partition: 0, Offset: groups.Offset{Offset: offset, LeaderEpoch: -1}}}})()
	if err != nil {
		t.Fatal(err)
	}
}

// appendUploaded appends n records to partition 0 of topic and uploads
// them, so a node restored from the bucket has them (a restore lowers
// committed offsets beyond its log end).
func appendUploaded(t *testing.T, b *Broker, topic string, n int) {
	t.Helper()
	if _, err := b.Append(topic, 0, testutil.Batch(t, 0, n, 20, time.Now().UnixMilli())); err != nil {
		t.Fatal(err)
	}
	for _, u := range b.UploadAll(context.Background()) {
		if u.Err != nil {
			t.Fatalf("upload %s/%d: %v", u.Topic, u.Partition, u.Err)
		}
	}
}

// copiedOffsets reads the bucket's copy of the group offsets (nil: none).
func copiedOffsets(t *testing.T, bk cold.Bucket) map[string]map[string]map[int32]groups.Offset {
	t.Helper()
	data, found, err := tiering.ReadGroupOffsets(context.Background(), bk)
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		return nil
	}
	offs, err := groups.DecodeSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	return offs
}

func copiedOffset(t *testing.T, bk cold.Bucket, group, topic string) int64 {
	t.Helper()
	o, ok := copiedOffsets(t, bk)[group][topic][0]
	if !ok {
		return -1
	}
	return o.Offset
}

// TestGroupOffsetsCopiedPeriodically: with a bucket, the committed offsets
// reach it every GroupsCopyInterval once they changed, without a shutdown;
// a node restored from the bucket after a crash (Close does not copy) gets
// the last copy, less the offsets of topics that no longer exist.
func TestGroupOffsetsCopiedPeriodically(t *testing.T) {
	bucketDir := t.TempDir()
	bk, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk, GroupsCopyInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ledger", "audit"} {
		if _, err := b.CreateTopic(name, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	appendUploaded(t, b, "ledger", 100)
	raw, err := filebucket.New(bucketDir) // a reader of the bucket beside the node
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	commitOffset(t, b, "billing", "ledger", 60)
	commitOffset(t, b, "billing", "audit", 5)
	testutil.Eventually(t, 10*time.Second, func() bool { return copiedOffset(t, raw, "billing", "ledger") == 60 },
		"the periodic copy of billing's offset 60")
	commitOffset(t, b, "billing", "ledger", 80)
	testutil.Eventually(t, 10*time.Second, func() bool { return copiedOffset(t, raw, "billing", "ledger") == 80 },
		"the periodic copy of billing's offset 80")
	// Unchanged offsets are not copied again.
	before, err := raw.Attributes(context.Background(), tiering.GroupOffsetsKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CopyGroupOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after, err := raw.Attributes(context.Background(), tiering.GroupOffsetsKey); err != nil || after.ETag != before.ETag {
		t.Fatalf("unchanged offsets copied again: ETag %s, then %s (%v)", before.ETag, after.ETag, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The topic audit was deleted in the bucket after the last copy.
	if err := raw.Delete(context.Background(), "topics/audit.json"); err != nil {
		t.Fatal(err)
	}

	bk2, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk2, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := r.Groups().Offsets("billing")
	if o := got["ledger"][0]; o.Offset != 80 || len(got) != 1 {
		t.Fatalf("restored offsets of billing: %+v, want ledger/0 at 80 only (audit no longer exists)", got)
	}
}

// staleMarkerBucket answers HEAD of the cluster marker with what it was
// when frozen: the owner check of a node fenced off an instant ago, which
// passed just before the takeover landed.
type staleMarkerBucket struct {
	cold.Bucket
	mu     sync.Mutex
	frozen *cold.Attributes
}

func (s *staleMarkerBucket) freeze(t *testing.T) {
	a, err := s.Bucket.Attributes(context.Background(), "cluster.json")
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.frozen = &a
	s.mu.Unlock()
}

func (s *staleMarkerBucket) Attributes(ctx context.Context, key string) (cold.Attributes, error) {
	s.mu.Lock()
	f := s.frozen
	s.mu.Unlock()
	if key == "cluster.json" && f != nil {
		return *f, nil
	}
	return s.Bucket.Attributes(ctx, key)
}

func (s *staleMarkerBucket) UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond cold.Condition) (cold.Attributes, error) {
	return s.Bucket.(cold.ConditionalUploader).UploadIf(ctx, key, r, size, cond)
}

// TestFencedNodeDoesNotOverwriteGroupOffsets: a node restored with
// --takeover gets the old owner's copied offsets and copies its own; the
// old owner, even one whose ownership check still passes (it raced the
// takeover), cannot replace that copy with its older offsets: the copy
// records the owner epoch it was written under.
func TestFencedNodeDoesNotOverwriteGroupOffsets(t *testing.T) {
	bucketDir := t.TempDir()
	inner, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	sb := &staleMarkerBucket{Bucket: inner}
	old, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: sb, GroupsCopyInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.CreateTopic("ledger", 1, nil); err != nil {
		t.Fatal(err)
	}
	appendUploaded(t, old, "ledger", 10)
	commitOffset(t, old, "billing", "ledger", 10)
	if err := old.CopyGroupOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}
	sb.freeze(t) // from here the old owner does not see the takeover

	bk2, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	nw, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk2, Takeover: true, GroupsCopyInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	if o := nw.Groups().Offsets("billing")["ledger"][0]; o.Offset != 10 {
		t.Fatalf("restored offset %d, want 10", o.Offset)
	}
	commitOffset(t, nw, "billing", "ledger", 20)
	if err := nw.CopyGroupOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}

	commitOffset(t, old, "billing", "ledger", 30)
	if err := old.CopyGroupOffsets(context.Background()); !errors.Is(err, tiering.ErrFenced) {
		t.Fatalf("the old owner's copy after the takeover: %v, want ErrFenced", err)
	}
	if got := copiedOffset(t, inner, "billing", "ledger"); got != 20 {
		t.Fatalf("the bucket's copy holds offset %d, want the new owner's 20", got)
	}
	// Fenced for good: no later copy is tried.
	if err := old.CopyGroupOffsets(context.Background()); !errors.Is(err, tiering.ErrFenced) {
		t.Fatalf("a second copy by the fenced node: %v, want ErrFenced", err)
	}
}

// uploadAtShutdown copies the group offsets with a context bounded by
// --shutdown-upload-timeout, so a bucket that hangs cannot hold the exit.
// A periodic copy in flight against the hanging bucket (whose context
// would end only at Close, after uploadAtShutdown) must not hold it: a
// copy waiting for its turn gives up at its deadline, and
// StopGroupOffsetsCopies (which uploadAtShutdown calls first) cancels the
// periodic copy, so the shutdown copy then runs at once.
func TestShutdownCopyKeepsItsDeadlineBehindAHungPeriodicCopy(t *testing.T) {
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	bk, err := bucketurl.Open(context.Background(), "minio://"+proxy.Addr+"/"+m.Bucket+"/rv6?secure=false", cold.Options{
		Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bucketurl.Open(context.Background(), m.MinIOURL(m.Bucket, "rv6"), cold.Options{
		Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: bk, GroupsCopyInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if _, err := b.CreateTopic("ledger", 1, nil); err != nil {
		t.Fatal(err)
	}
	commitOffset(t, b, "billing", "ledger", 5)
	testutil.Eventually(t, 20*time.Second, func() bool { return copiedOffset(t, raw, "billing", "ledger") == 5 },
		"the periodic copy of offset 5")

	// The bucket now hangs on the copy's upload.
	h := proxy.Add(faultproxy.Rule{Method: "PUT", PathContains: "groups/offsets", Fault: faultproxy.Hold})
	t.Cleanup(h.Release) // before b.Close (cleanups run last first)
	commitOffset(t, b, "billing", "ledger", 6)
	testutil.Eventually(t, 20*time.Second, func() bool { return h.Held() == 1 }, "the periodic copy's upload is not held")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.CopyGroupOffsets(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("CopyGroupOffsets with a 300ms deadline succeeded while the bucket holds every offsets upload")
		}
		t.Logf("shutdown copy returned: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("CopyGroupOffsets with a 300ms deadline has not returned after 10s: it waits for the periodic copy hung on the bucket (held requests: %d)", h.Held())
	}

	// Shutdown's path: the periodic copy, still held by the bucket, is
	// cancelled, and the shutdown copy (through a bucket that answers
	// again) runs within its deadline.
	b.StopGroupOffsetsCopies()
	proxy.Clear()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := b.CopyGroupOffsets(ctx2); err != nil {
		t.Fatalf("shutdown copy after StopGroupOffsetsCopies: %v (held requests: %d)", err, h.Held())
	}
	if got := copiedOffset(t, raw, "billing", "ledger"); got != 6 {
		t.Fatalf("bucket's copy of billing's offset after the shutdown copy: %d, want 6", got)
	}
}
