package tiering

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
)

// remoteBucket opens a fresh prefix on a real MinIO server with the s3 or
// minio backend.
func remoteBucket(t *testing.T, scheme string) cold.Bucket {
	m := testutil.StartMinIO(t)
	b, err := bucketurl.Open(context.Background(), remoteURL(scheme, m, m.Endpoint, "owned"),
		cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestOnePrefixOneWriter: a second node on an owned prefix is refused; with
// a takeover it owns the prefix, and the old owner, still running, is
// fenced off: its later writes fail, and nothing it tiers afterwards is
// adopted by the new owner.
func TestOnePrefixOneWriter(t *testing.T) {
	for _, bk := range []struct {
		name string
		open func(t *testing.T) cold.Bucket
	}{
		{"file", newFileBucket},
		{"s3", func(t *testing.T) cold.Bucket { return remoteBucket(t, "s3") }},
		{"minio", func(t *testing.T) cold.Bucket { return remoteBucket(t, "minio") }},
	} {
		t.Run(bk.name, func(t *testing.T) {
			ctx := context.Background()
			bucket := bk.open(t)
			a := newEnv(t, bucket, t.TempDir())
			pa := a.open("audit", 0, true)
			defer pa.Close()
			produce(t, pa, 300)
			a.settle(pa)
			committed := pa.Manifest().Version
			aNode := a.store.owner.me.NodeID

			// A node restoring into an empty data directory is refused:
			// the error names the owner and the way to take over.
			_, err := OpenStore(ctx, bucket, t.TempDir(), StoreOptions{})
			if err == nil || !strings.Contains(err.Error(), aNode) || !strings.Contains(err.Error(), "--takeover") {
				t.Fatalf("second node on an owned prefix: %v; want a refusal naming node %s and --takeover", err, aNode)
			}
			t.Log(err)

			b := restoreEnv(t, bucket, t.TempDir())
			if b.store.ClusterID != a.store.ClusterID || b.store.owner.me.Epoch != a.store.owner.me.Epoch+1 {
				t.Fatalf("takeover: cluster %s epoch %d, old owner cluster %s epoch %d", b.store.ClusterID, b.store.owner.me.Epoch,
					a.store.ClusterID, a.store.owner.me.Epoch)
			}

			// The old owner writes on: its next upload finds it fenced.
			produce(t, pa, 300)
			pa.Log().Roll()
			testutil.Eventually(t, 10*time.Second, func() bool {
				a.daemon.pass(ctx)
				return a.store.Fenced() != nil
			}, "the old owner fenced at its next write")
			if err := a.store.Fenced(); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), b.store.owner.me.NodeID) {
				t.Errorf("fenced: %v; want ErrFenced naming the new owner %s", err, b.store.owner.me.NodeID)
			}
			a.daemon.pass(ctx) // and it stays so
			seg := pa.Manifest().Segments[0].Key
			if _, err := a.store.Bucket.Upload(ctx, "late.json", strings.NewReader("{}"), 2); !errors.Is(err, ErrFenced) {
				t.Errorf("upload by the fenced node: %v, want ErrFenced", err)
			}
			if err := a.store.Bucket.Delete(ctx, seg); !errors.Is(err, ErrFenced) {
				t.Errorf("delete by the fenced node: %v, want ErrFenced", err)
			}
			if ok, err := bucket.Exists(ctx, "late.json"); ok || err != nil {
				t.Errorf("the fenced node's upload is in the bucket: %v, %v", ok, err)
			}

			// Nothing the old owner did after the takeover reached the
			// bucket: the new owner restores what was committed before.
			m, _, err := b.store.latestManifest(ctx, "audit", 0)
			if err != nil || m.Version != committed {
				t.Fatalf("latest manifest in the bucket: %+v, %v; want version %d, the last before the takeover", m, err, committed)
			}
			pb := b.open("audit", 0, true)
			defer pb.Close()
			if pb.StartOffset() != 0 || pb.EndOffset() != 1500 {
				t.Fatalf("restored partition spans %d..%d, want 0..1500", pb.StartOffset(), pb.EndOffset())
			}
			checkRecords(t, readAll(t, pb, 0), 0, 1500)
			produce(t, pb, 10)
			b.settle(pb)

			// The old owner cannot come back without a takeover of its own.
			if _, err := OpenStore(ctx, bucket, a.dataDir, StoreOptions{}); err == nil || !strings.Contains(err.Error(), b.store.owner.me.NodeID) {
				t.Errorf("old owner restarting: %v, want a refusal naming node %s", err, b.store.owner.me.NodeID)
			}
		})
	}
}

// Racing claims of one new prefix: one node wins, the others are refused.
func TestConcurrentClaimsOneWins(t *testing.T) {
	bucket := newFileBucket(t)
	const n = 6
	errs := make(chan error, n)
	for range n {
		dir := t.TempDir()
		go func() {
			_, err := OpenStore(context.Background(), bucket, dir, StoreOptions{})
			errs <- err
		}()
	}
	won := 0
	for range n {
		if err := <-errs; err == nil {
			won++
		} else if !strings.Contains(err.Error(), "one prefix has one writer") {
			t.Errorf("a losing claim: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d racing claims won, want 1", won, n)
	}
}

// A takeover by a node whose data directory has a history of its own - an
// old owner restarted with --takeover left on after another node took the
// prefix over - must be refused: its manifests are behind the bucket, and
// its start-up sweep would delete the segments the current owner committed.
func TestTakeoverRefusedWithDataOfItsOwn(t *testing.T) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	aDir := t.TempDir()
	a := newEnv(t, bucket, aDir)
	pa := a.open("audit", 0, true)
	produce(t, pa, 300)
	a.settle(pa)
	pa.Close()

	b := restoreEnv(t, bucket, t.TempDir()) // takes the prefix over
	pb := b.open("audit", 0, true)
	defer pb.Close()
	produce(t, pb, 300)
	b.settle(pb)

	_, err := OpenStore(ctx, bucket, aDir, StoreOptions{Takeover: true})
	if err == nil || !strings.Contains(err.Error(), "empty data directory") || !strings.Contains(err.Error(), b.store.owner.me.NodeID) {
		t.Fatalf("takeover by the old owner with its stale data: %v; want a refusal naming the owner and asking for an empty data directory", err)
	}
	t.Log(err)
	if err := b.store.owner.check(ctx); err != nil {
		t.Fatalf("the current owner was fenced by a refused takeover: %v", err)
	}
}
