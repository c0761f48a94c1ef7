package broker

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

var compliance = map[string]string{"remote.object.lock.mode": "compliance", "remote.object.lock.days": "7"}

// TestObjectLockConfig: the lock keys check each other, and a topic that
// locks is refused, with an error naming the bucket, on a node whose
// bucket cannot lock (none, a file bucket, a MinIO bucket without Object
// Lock) - at create and at alter - and accepted on one that can, its
// partitions then uploading under the lock.
func TestObjectLockConfig(t *testing.T) {
	for _, bad := range []map[string]string{
		{"remote.object.lock.mode": "compliance"},
		{"remote.object.lock.days": "3"},
		{"remote.object.lock.mode": "forever", "remote.object.lock.days": "3"},
		{"remote.object.lock.mode": "governance", "remote.object.lock.days": "-1"},
	} {
		if _, err := ParseTopicConfig(DefaultTopicConfig(), bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseTopicConfig(%v): %v, want ErrInvalidConfig", bad, err)
		}
	}

	m := testutil.StartMinIO(t)
	openMinIO := func(t *testing.T, bucket string) *miniobucket.Bucket {
		b, err := miniobucket.Open(context.Background(), m.MinIOURL(bucket, "n/"),
			cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	fb, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		bucket cold.Bucket
		says   string
	}{
		{"no bucket", nil, "no bucket"},
		{"file bucket", fb, "was not created with S3 Object Lock"},
		{"minio without object lock", openMinIO(t, m.Bucket), "was not created with S3 Object Lock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: tc.bucket})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, cfg := range []map[string]string{compliance, {"remote.object.lock.legal.hold": "true"}} {
				_, err := b.CreateTopic("worm", 1, cfg)
				if !errors.Is(err, ErrObjectLockUnavailable) || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.says) {
					t.Fatalf("create with %v: %v; want ErrObjectLockUnavailable saying %q", cfg, err, tc.says)
				}
				if tc.bucket != nil && !strings.Contains(err.Error(), tc.bucket.Name()) {
					t.Errorf("the error does not name the bucket: %v", err)
				}
				if err := b.CheckCreateTopic("worm", 1, cfg); !errors.Is(err, ErrObjectLockUnavailable) {
					t.Errorf("validate-only create: %v", err)
				}
			}
			if _, err := b.Topic("worm"); !errors.Is(err, ErrUnknownTopic) {
				t.Fatalf("a refused topic exists: %v", err)
			}
			if _, err := b.CreateTopic("plain", 1, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := b.AlterTopicConfig("plain", compliance, nil); !errors.Is(err, ErrObjectLockUnavailable) {
				t.Fatalf("alter to a lock: %v, want ErrObjectLockUnavailable", err)
			}
			if info, _ := b.Topic("plain"); info.Config["remote.object.lock.mode"] != "none" {
				t.Errorf("a refused alter changed the topic: %v", info.Config)
			}
		})
	}

	t.Run("minio with object lock", func(t *testing.T) {
		b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: openMinIO(t, m.NewLockedBucket(t))})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.CreateTopic("worm", 2, compliance); err != nil {
			t.Fatalf("create a locked topic on a bucket with Object Lock: %v", err)
		}
		p, err := b.Partition("worm", 1)
		if err != nil {
			t.Fatal(err)
		}
		if l := p.ObjectLock(); l.Mode != cold.LockCompliance || l.Period.Hours() != 7*24 || l.LegalHold {
			t.Errorf("partition lock %+v, want compliance for 7 days", l)
		}
		if _, err := b.AlterTopicConfig("worm", map[string]string{"remote.object.lock.legal.hold": "true"}, nil); err != nil {
			t.Fatal(err)
		}
		if l := p.ObjectLock(); !l.LegalHold || l.Mode != cold.LockCompliance {
			t.Errorf("partition lock after the alter %+v, want the legal hold on", l)
		}
	})

	// The bucket is asked whether it can lock where a change is asked for
	// (create, alter, and their validate-only forms), as a create's other
	// checks are; a node applying a change the cluster committed
	// (reconcileTopics calls alterLocal) does not ask again - nor fail to
	// apply it, leaving its uploads unlocked, if the request fails.
	t.Run("asked where a change is asked for", func(t *testing.T) {
		asks := &lockAsks{Bucket: openMinIO(t, m.NewLockedBucket(t))}
		b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: asks})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.CreateTopic("worm", 1, compliance); err != nil {
			t.Fatal(err)
		}
		if n := asks.n.Swap(0); n != 1 {
			t.Errorf("create of a locked topic asked the bucket %d times, want 1", n)
		}
		if _, err := b.AlterTopicConfig("worm", map[string]string{"retention.ms": "7200000"}, nil); err != nil {
			t.Fatal(err)
		}
		if n := asks.n.Swap(0); n != 1 {
			t.Errorf("alter of a locked topic asked the bucket %d times, want 1", n)
		}
		if _, err := b.alterLocal("worm", map[string]string{"retention.ms": "3600000"}, nil); err != nil {
			t.Fatal(err)
		}
		if n := asks.n.Load(); n != 0 {
			t.Errorf("applying a committed change asked the bucket %d times, want none", n)
		}
	})
}

// lockAsks counts the broker's LockEnabled requests to its bucket.
type lockAsks struct {
	*miniobucket.Bucket
	n atomic.Int32
}

func (b *lockAsks) LockEnabled(ctx context.Context) (bool, error) {
	b.n.Add(1)
	return b.Bucket.LockEnabled(ctx)
}
