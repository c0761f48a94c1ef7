package broker

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

var errInjected = errors.New("injected bucket failure")

// faultBucket wraps a real (file) bucket and fails or holds chosen
// requests. errInjected is not retryable, so the broker's retries do not
// slow the tests down.
type faultBucket struct {
	cold.Bucket
	mu            sync.Mutex
	failDeletes   bool
	lostReply     string        // an Upload of this key lands, then reports failure
	holdUpload    string        // an Upload of this key waits for release
	uploadHeld    chan struct{} // closed when the held upload started
	releaseUpload chan struct{}
	lists         map[string]int // Iter calls by prefix
	failPrefix    string         // Uploads of keys with this prefix fail
	failed        int            // Uploads failPrefix failed
}

func (f *faultBucket) failedUploads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *faultBucket) setFailPrefix(prefix string) {
	f.mu.Lock()
	f.failPrefix = prefix
	f.mu.Unlock()
}

func (f *faultBucket) Iter(ctx context.Context, prefix string, fn func(key string) error) error {
	f.mu.Lock()
	if f.lists == nil {
		f.lists = map[string]int{}
	}
	f.lists[prefix]++
	f.mu.Unlock()
	return f.Bucket.Iter(ctx, prefix, fn)
}

func (f *faultBucket) listCount(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists[prefix]
}

func (f *faultBucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	f.mu.Lock()
	lost, hold := key == f.lostReply, key == f.holdUpload
	started, release := f.uploadHeld, f.releaseUpload
	fail := f.failPrefix != "" && strings.HasPrefix(key, f.failPrefix)
	if fail {
		f.failed++
	}
	if lost {
		f.lostReply = ""
	}
	f.mu.Unlock()
	if fail {
		return cold.Attributes{}, errInjected
	}
	if hold {
		close(started)
		<-release
	}
	a, err := f.Bucket.Upload(ctx, key, r, size)
	if err == nil && lost {
		return a, errInjected
	}
	return a, err
}

// UploadIf passes conditional uploads (the owner record) through untouched.
func (f *faultBucket) UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond cold.Condition) (cold.Attributes, error) {
	return f.Bucket.(cold.ConditionalUploader).UploadIf(ctx, key, r, size, cond)
}

func (f *faultBucket) Delete(ctx context.Context, key string) error {
	f.mu.Lock()
	fail := f.failDeletes
	f.mu.Unlock()
	if fail {
		return errInjected
	}
	return f.Bucket.Delete(ctx, key)
}

func (f *faultBucket) setFailDeletes(v bool) {
	f.mu.Lock()
	f.failDeletes = v
	f.mu.Unlock()
}

// tieredNode opens a broker on dir with the file bucket in bucketDir behind
// a faultBucket.
func tieredNode(t *testing.T, dir, bucketDir string) (*Broker, *faultBucket) {
	t.Helper()
	inner, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	fb := &faultBucket{Bucket: inner}
	// Takeover: a node on an empty dir restores the prefix of one that is
	// gone (for a restart of the owner it changes nothing).
	b, err := Open(context.Background(), Options{Dir: dir, Bucket: fb, Takeover: true, DeleteRetryInterval: 20 * time.Millisecond,
		Tiering: tiering.DaemonOptions{Interval: 10 * time.Millisecond,
			Backoff: tiering.Backoff{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	return b, fb
}

// bucketKeys lists every object of topic name in the bucket at bucketDir:
// its record and everything under its partitions' prefixes.
func bucketKeys(t *testing.T, bucketDir, name string, partitions int32) []string {
	t.Helper()
	bk, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	add := func(k string) error { keys = append(keys, k); return nil }
	for p := range partitions {
		if err := bk.Iter(context.Background(), tiering.PartitionPrefix(name, p), add); err != nil {
			t.Fatal(err)
		}
	}
	if err := bk.Iter(context.Background(), "topics/"+name+".json", add); err != nil {
		t.Fatal(err)
	}
	return keys
}

// tierSome produces n records to name/0 and waits until they are committed
// in the bucket with a manifest copy there too.
func tierSome(t *testing.T, b *Broker, name string, n int) {
	t.Helper()
	for i := range n {
		if _, err := b.Append(name, 0, testutil.Batch(t, int64(i), 1, 100, time.Now().UnixMilli())); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := b.Partition(name, 0)
	p.Log().Roll()
	testutil.Eventually(t, 10*time.Second, func() bool {
		b.Tiering().Wake()
		st := p.Status(time.Now())
		return st.RemoteSegments > 0 && st.LagSegments == 0
	}, "records of %s tiered", name)
}

func recordsAt(t *testing.T, b *Broker, name string) int {
	t.Helper()
	res, err := b.Fetch(context.Background(), name, 0, 0, 1<<20)
	if err != nil {
		return 0
	}
	recs, _ := batch.DecodeAll(res.Records)
	return len(recs)
}

// Issue 6 item 6: a delete the bucket fails half way is durable; a retried
// delete (and the background retrier) completes it; meanwhile the name
// cannot be re-created, and afterwards a new topic of the name serves none
// of the old records.
func TestDeleteTopicResumesAfterBucketFailure(t *testing.T) {
	dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
	b, fb := tieredNode(t, dir, bucketDir)
	defer b.Close()
	cfg := map[string]string{"segment.bytes": "1024", "local.retention.bytes": "0"}
	if _, err := b.CreateTopic("t", 1, cfg); err != nil {
		t.Fatal(err)
	}
	tierSome(t, b, "t", 30)

	fb.setFailDeletes(true)
	err := b.DeleteTopic("t")
	if !errors.Is(err, ErrTopicDeletionPending) {
		t.Fatalf("delete with the bucket failing: %v, want ErrTopicDeletionPending", err)
	}
	t.Logf("delete with the bucket failing: %v", err)
	if _, err := b.Topic("t"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("a topic being deleted is still described: %v", err)
	}
	if _, err := b.CreateTopic("t", 1, nil); !errors.Is(err, ErrTopicDeletionPending) {
		t.Fatalf("re-create while the deletion is unfinished: %v, want ErrTopicDeletionPending", err)
	}
	if err := b.DeleteTopic("t"); !errors.Is(err, ErrTopicDeletionPending) {
		t.Fatalf("retried delete with the bucket still failing: %v", err)
	}
	fb.setFailDeletes(false)
	if err := b.DeleteTopic("t"); err != nil {
		t.Fatalf("retried delete once the bucket works: %v", err)
	}
	if keys := bucketKeys(t, bucketDir, "t", 1); len(keys) != 0 {
		t.Fatalf("objects of the deleted topic left in the bucket: %v", keys)
	}
	if _, err := os.Stat(filepath.Join(dir, "topics", "t")); !os.IsNotExist(err) {
		t.Fatalf("deleted topic's directory remains: %v", err)
	}
	if _, err := b.CreateTopic("t", 1, cfg); err != nil {
		t.Fatal(err)
	}
	if s, e, _ := b.Offsets("t", 0); s != 0 || e != 0 {
		t.Fatalf("re-created topic spans %d..%d: it inherited the old one", s, e)
	}
	if n := recordsAt(t, b, "t"); n != 0 {
		t.Fatalf("re-created topic serves %d old records", n)
	}

	// The background retrier finishes a deletion nobody retries.
	fb.setFailDeletes(true)
	if err := b.DeleteTopic("t"); !errors.Is(err, ErrTopicDeletionPending) {
		t.Fatalf("second delete: %v", err)
	}
	fb.setFailDeletes(false)
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := b.CreateTopic("t", 1, nil)
		return err == nil
	}, "background retry finished the deletion")
}

// Issue 6 item 6: a deletion cut short is never undone by a restore: the
// bucket's tombstone makes a node restoring from it finish the deletion,
// and the node that started it finishes it at its next open.
func TestRestoreFinishesTombstonedTopic(t *testing.T) {
	dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
	b, fb := tieredNode(t, dir, bucketDir)
	if _, err := b.CreateTopic("gone", 1, map[string]string{"segment.bytes": "1024"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("kept", 1, nil); err != nil {
		t.Fatal(err)
	}
	tierSome(t, b, "gone", 30)
	fb.setFailDeletes(true)
	if err := b.DeleteTopic("gone"); !errors.Is(err, ErrTopicDeletionPending) {
		t.Fatalf("delete with the bucket failing: %v", err)
	}
	b.Close()
	if len(bucketKeys(t, bucketDir, "gone", 1)) == 0 {
		t.Fatal("test setup: the failed delete left nothing in the bucket")
	}

	// A node that lost its disk restores from the bucket.
	r, _ := tieredNode(t, t.TempDir(), bucketDir)
	if _, err := r.Topic("gone"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("restore brought back a deleted topic: %v", err)
	}
	if _, err := r.Topic("kept"); err != nil {
		t.Fatalf("restore lost a live topic: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(bucketKeys(t, bucketDir, "gone", 1)) == 0 },
		"the restored node finished deleting the tombstoned topic")
	r.Close()

	// The original node, its data now behind the bucket the restored node
	// owns, may not take the prefix back: its start-up sweep would delete
	// what the other node committed. (A node resuming its own deletion at
	// reopen is TestReopenResumesDeletion.)
	inner, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := Open(context.Background(), Options{Dir: dir, Bucket: inner, Takeover: true}); err == nil {
		b.Close()
		t.Fatal("the old owner, with data of its own, took the prefix back")
	}
}

// Issue 6 item 6: the node that started a deletion the bucket cut short
// finishes it at its next open - locally and in the bucket - and never
// brings the topic back.
func TestReopenResumesDeletion(t *testing.T) {
	dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
	b, fb := tieredNode(t, dir, bucketDir)
	if _, err := b.CreateTopic("gone", 1, map[string]string{"segment.bytes": "1024"}); err != nil {
		t.Fatal(err)
	}
	tierSome(t, b, "gone", 30)
	fb.setFailDeletes(true)
	if err := b.DeleteTopic("gone"); !errors.Is(err, ErrTopicDeletionPending) {
		t.Fatalf("delete with the bucket failing: %v", err)
	}
	b.Close()

	b, _ = tieredNode(t, dir, bucketDir) // the bucket works again
	defer b.Close()
	if _, err := b.Topic("gone"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("reopen brought back a deleted topic: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "topics", "gone"))
		return os.IsNotExist(err) && len(bucketKeys(t, bucketDir, "gone", 1)) == 0
	}, "the reopened node finished the deletion, locally and in the bucket")
}

// Issue 6 item 6: a create that fails after its record reached the bucket
// leaves nothing a restore brings back.
func TestFailedCreateIsNotRestored(t *testing.T) {
	dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
	b, fb := tieredNode(t, dir, bucketDir)
	fb.mu.Lock()
	fb.lostReply = "topics/ghost.json"
	fb.mu.Unlock()
	if _, err := b.CreateTopic("ghost", 2, nil); err == nil {
		t.Fatal("create succeeded though the bucket reported a failure")
	}
	if _, err := b.Topic("ghost"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("failed create left a topic: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(bucketKeys(t, bucketDir, "ghost", 2)) == 0 },
		"the failed create's record removed from the bucket")
	b.Close()

	r, _ := tieredNode(t, t.TempDir(), bucketDir)
	defer r.Close()
	if _, err := r.Topic("ghost"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("restore brought back a topic whose create failed: %v", err)
	}
}

// Issue 6 item 6: creates, produces and deletes of one name racing from
// several goroutines: no error but the expected ones, and every record
// acknowledged by the incarnation that survives is there after a reopen.
func TestCreateDeleteRaceKeepsAcknowledgedRecords(t *testing.T) {
	for _, tiered := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "tiered"}[tiered], func(t *testing.T) {
			dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
			reopen := func() *Broker {
				if tiered {
					b, _ := tieredNode(t, dir, bucketDir)
					return b
				}
				return open(t, dir)
			}
			b := reopen()
			type ack struct {
				p      any // the incarnation's partition
				offset int64
				value  string
			}
			var (
				mu   sync.Mutex
				acks []ack
				bad  []error
			)
			expected := func(err error) bool {
				return err == nil || errors.Is(err, ErrTopicExists) || errors.Is(err, ErrUnknownTopic) ||
					errors.Is(err, ErrTopicDeletionPending) || strings.Contains(err.Error(), "closed")
			}
			// Two deleters run until each has deleted the topic 10 times; two
			// writers create and produce until the deleters are done, then
			// once more, so the last incarnation holds their records.
			var wg, deleters sync.WaitGroup
			deleters.Add(2)
			stopped := make(chan struct{})
			go func() { deleters.Wait(); close(stopped) }()
			watchdog := time.Now().Add(2 * time.Minute)
			for g := range 4 {
				deleter := g%2 == 0
				wg.Go(func() {
					if deleter {
						defer deleters.Done()
					}
					for i, deletes, last := 0, 0, false; !last; i++ {
						if deleter && deletes == 10 {
							return
						}
						select {
						case <-stopped:
							last = true
						default:
						}
						if time.Now().After(watchdog) { // a hang, not a timing figure
							t.Errorf("goroutine %d: stuck after %d rounds (%d deletes)", g, i, deletes)
							return
						}
						runtime.Gosched() // rounds refused at once would spin

						if _, err := b.CreateTopic("race", 1, nil); !expected(err) {
							mu.Lock()
							bad = append(bad, err)
							mu.Unlock()
						}
						for k := range 5 {
							p, err := b.Partition("race", 0)
							if err != nil {
								break
							}
							v := int64(g*1000000 + i*10 + k)
							res, err := p.Append(testutil.Batch(t, v, 1, 30, 1))
							mu.Lock()
							if err == nil {
								acks = append(acks, ack{p, res.BaseOffset, string(testutil.Value(v, 30))})
							} else if !expected(err) {
								bad = append(bad, err)
							}
							mu.Unlock()
						}
						if deleter {
							err := b.DeleteTopic("race")
							if err == nil {
								deletes++
							} else if !expected(err) {
								mu.Lock()
								bad = append(bad, err)
								mu.Unlock()
							}
						}
					}
				})
			}
			wg.Wait()
			for _, err := range bad {
				t.Errorf("unexpected error: %v", err)
			}
			survivor, err := b.Partition("race", 0)
			if err != nil {
				// Make sure the final incarnation has acknowledged records.
				if _, err := b.CreateTopic("race", 1, nil); err != nil {
					t.Fatal(err)
				}
				survivor, _ = b.Partition("race", 0)
				res, err := survivor.Append(testutil.Batch(t, 999, 1, 30, 1))
				if err != nil {
					t.Fatal(err)
				}
				acks = append(acks, ack{survivor, res.BaseOffset, string(testutil.Value(999, 30))})
			}
			b.Close()
			b = reopen()
			defer b.Close()
			checked := 0
			for _, a := range acks {
				if a.p != any(survivor) {
					continue
				}
				res, err := b.Fetch(context.Background(), "race", 0, a.offset, 1<<10)
				if err != nil {
					t.Fatalf("acknowledged record at %d lost after reopen: %v", a.offset, err)
				}
				recs, _ := batch.DecodeAll(res.Records)
				if len(recs) == 0 || recs[0].Offset != a.offset || string(recs[0].Value) != a.value {
					t.Fatalf("acknowledged record at %d changed after reopen: %+v", a.offset, recs)
				}
				checked++
			}
			incarnations := map[any]bool{}
			for _, a := range acks {
				incarnations[a.p] = true
			}
			t.Logf("%d acknowledged records of the surviving topic checked; %d acknowledged in all, in %d incarnations", checked, len(acks), len(incarnations))
		})
	}
}

// Issue 6 item 7: creating a topic while the bucket is slow holds up no
// append or fetch to another topic. The create's bucket write is held until
// the other topic's append and fetch are done (or, on a broker that makes
// them wait, until a watchdog gives up): they must finish first.
func TestCreateDoesNotStallOtherTopics(t *testing.T) {
	b, fb := tieredNode(t, t.TempDir(), filepath.Join(t.TempDir(), "bucket"))
	defer b.Close()
	if _, err := b.CreateTopic("busy", 1, nil); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	fb.mu.Lock()
	fb.holdUpload, fb.uploadHeld, fb.releaseUpload = "topics/big.json", started, release
	fb.mu.Unlock()
	var order []string
	var omu sync.Mutex
	note := func(s string) { omu.Lock(); order = append(order, s); omu.Unlock() }
	created := make(chan error, 1)
	go func() {
		_, err := b.CreateTopic("big", 100, nil)
		note("create")
		created <- err
	}()
	<-started
	io := make(chan error, 1)
	go func() {
		_, err := b.Append("busy", 0, testutil.Batch(t, 0, 1, 10, 1))
		if err == nil {
			_, err = b.Fetch(context.Background(), "busy", 0, 0, 1<<10)
		}
		note("append+fetch")
		io <- err
	}()
	select {
	case err := <-io:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second): // watchdog only: a stalled append fails below
	}
	close(release)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	omu.Lock()
	defer omu.Unlock()
	if len(order) < 1 || order[0] != "append+fetch" {
		t.Fatalf("an append to another topic waited for the create's bucket request: order %v", order)
	}
}

// A topic being created has nothing in the bucket (a create of a name whose
// deletion is unfinished is refused), so its partitions must not list the
// bucket for a manifest: a 10,000-partition create cost 10,000 LISTs.
func TestCreateListsNothing(t *testing.T) {
	dir, bucketDir := t.TempDir(), t.TempDir()
	b, fb := tieredNode(t, dir, bucketDir)
	defer b.Close()
	if _, err := b.CreateTopic("fresh", 20, nil); err != nil {
		t.Fatal(err)
	}
	for p := range int32(20) {
		if n := fb.listCount(tiering.PartitionPrefix("fresh", p)); n != 0 {
			t.Fatalf("creating the topic listed partition %d's prefix %d times", p, n)
		}
	}
	// Its partitions work as any other: produce and read back.
	if _, err := b.Append("fresh", 3, testutil.Batch(t, 0, 10, 50, 1)); err != nil {
		t.Fatal(err)
	}
}
