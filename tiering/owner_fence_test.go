package tiering

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// ownerBackends are the buckets the ownership tests run on: the
// filesystem bucket and a real MinIO through both remote backends.
var ownerBackends = []struct {
	name string
	open func(t *testing.T) cold.Bucket
}{
	{"file", newFileBucket},
	{"s3", func(t *testing.T) cold.Bucket { return remoteBucket(t, "s3") }},
	{"minio", func(t *testing.T) cold.Bucket { return remoteBucket(t, "minio") }},
}

// copyFile copies one file of a data directory to another.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	raw, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A data directory copied to a second machine (a volume snapshot, a cloned
// VM) carries the node id. The copy starting while the original runs must
// not give the prefix two writers: either it is refused, or the original
// is fenced off at its next write.
func TestCopiedNodeIDOneWriter(t *testing.T) {
	for _, bk := range ownerBackends {
		t.Run(bk.name, func(t *testing.T) {
			ctx := context.Background()
			bucket := bk.open(t)
			a := newEnv(t, bucket, t.TempDir())
			copied := t.TempDir()
			for _, f := range []string{nodeIDFile, clusterIDFile} {
				copyFile(t, filepath.Join(a.dataDir, f), filepath.Join(copied, f))
			}
			b, err := OpenStore(ctx, bucket, copied, StoreOptions{Logger: testLogger(t)})
			if err != nil {
				t.Logf("the copy is refused: %v", err)
				return
			}
			_, errA := a.store.Bucket.Upload(ctx, "from-a.json", strings.NewReader("{}"), 2)
			_, errB := b.Bucket.Upload(ctx, "from-b.json", strings.NewReader("{}"), 2)
			if errA == nil && errB == nil {
				t.Fatalf("the original (epoch %d) and its copy (epoch %d) both write the prefix; want one of them fenced off",
					a.store.owner.me.Epoch, b.owner.me.Epoch)
			}
			if errB != nil {
				t.Fatalf("the node that started last cannot write: %v", errB)
			}
			if !errors.Is(errA, ErrFenced) {
				t.Fatalf("the original's write: %v, want ErrFenced", errA)
			}
		})
	}
}

// A claim whose conditional PUT took effect but whose reply was lost (or
// whose refusal came with its body cut short) is retried; the retry's
// 412 must be recognised as the node's own claim, not as another owner:
// the node starts, owns the prefix, and the node it took over from is
// fenced.
func TestClaimThroughLostReplies(t *testing.T) {
	for _, scheme := range []string{"s3", "minio"} {
		for _, rule := range []faultproxy.Rule{
			{Method: "PUT", PathContains: clusterMarkerKey, Fault: faultproxy.CutHeaders, After: 5, Times: 1},
			{Method: "PUT", PathContains: clusterMarkerKey, Fault: faultproxy.Error, Status: 412, Code: "PreconditionFailed", After: 20, Times: 1},
			{Method: "HEAD", PathContains: clusterMarkerKey, Fault: faultproxy.Error, Status: 404, Code: "NoSuchKey", After: 0, Times: 1},
		} {
			t.Run(scheme+"/"+rule.Method+"-"+rule.Fault.String(), func(t *testing.T) {
				ctx := context.Background()
				m := testutil.StartMinIO(t)
				proxy := faultproxy.Start(t, m.URL())
				open := func() cold.Bucket {
					b, err := bucketurl.Open(ctx, remoteURL(scheme, m, proxy.Addr, "owned"),
						cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { b.Close() })
					return b
				}
				h := proxy.Add(rule)
				a, err := OpenStore(ctx, open(), t.TempDir(), StoreOptions{Logger: testLogger(t)})
				if err != nil {
					t.Fatalf("new node, %v injected %d times: %v", rule.Fault, h.Injected(), err)
				}
				h2 := proxy.Add(rule)
				b, err := OpenStore(ctx, open(), t.TempDir(), StoreOptions{Takeover: true, Logger: testLogger(t)})
				if err != nil {
					t.Fatalf("takeover, %v injected %d times: %v", rule.Fault, h2.Injected(), err)
				}
				if h.Injected()+h2.Injected() == 0 {
					t.Fatal("no fault injected")
				}
				if _, err := b.Bucket.Upload(ctx, "b.json", strings.NewReader("{}"), 2); err != nil {
					t.Fatalf("the new owner cannot write: %v", err)
				}
				if _, err := a.Bucket.Upload(ctx, "a.json", strings.NewReader("{}"), 2); !errors.Is(err, ErrFenced) {
					t.Fatalf("the old owner's write: %v, want ErrFenced", err)
				}
			})
		}
	}
}

// Tile writes share one ownership check per tileCheck: a node whose prefix
// was taken over stops writing tiles once that window has passed (and its
// checkpoints, checked one by one, stop at once).
func TestTileWritesFencedAfterTheirWindow(t *testing.T) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	a := newEnv(t, bucket, t.TempDir())
	tiles := a.store.treeBucket()
	if _, err := tiles.Upload(ctx, "tile-1", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	restoreEnv(t, bucket, t.TempDir()) // another node takes the prefix over
	if _, err := a.store.Bucket.Upload(ctx, "checkpoint", strings.NewReader("x"), 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("a checked upload after the takeover: %v, want ErrFenced", err)
	}
	// Fenced once, every write is refused at once, the shared ones too.
	if _, err := tiles.Upload(ctx, "tile-2", strings.NewReader("x"), 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("a tile upload by a fenced node: %v, want ErrFenced", err)
	}

	// Without a checked write in between, the window alone fences them.
	c := newEnv(t, newFileBucket(t), t.TempDir())
	tiles = c.store.treeBucket()
	if _, err := tiles.Upload(ctx, "tile-1", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	restoreEnv(t, c.bucket, t.TempDir())
	testutil.Eventually(t, 10*tileCheck, func() bool {
		_, err := tiles.Upload(ctx, "tile-n", strings.NewReader("x"), 1)
		return errors.Is(err, ErrFenced)
	}, "tile uploads refused once the shared check is older than tileCheck")
}
