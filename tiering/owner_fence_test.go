package tiering

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
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
