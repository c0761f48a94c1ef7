package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/testutil"
)

var lockConfig = []string{"--config", "remote.object.lock.mode=compliance", "--config", "remote.object.lock.days=1"}

// TestObjectLockE2E, as a user meets it: on a bucket without Object Lock
// a locked topic is refused with the reason, by the CLI and by Kafka's
// CreateTopics; on a bucket with it, a locked topic tiers, its segment
// versions carry compliance retention, and `topic legal-hold` puts a
// legal hold on the objects already in the bucket and lifts it.
func TestObjectLockE2E(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)

	plain := startNode(t, filepath.Join(t.TempDir(), "data"), m.Env(), "--bucket", m.MinIOURL(m.Bucket, "tierlog"))
	r := cli(t, plain, "", append([]string{"topic", "create", "worm"}, lockConfig...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "was not created with S3 Object Lock") || !strings.Contains(r.stderr, "FailedPrecondition") {
		t.Fatalf("create a locked topic on a bucket without Object Lock: exit %d, stderr %q", r.code, r.stderr)
	}
	adm := kadm.NewClient(kgoClient(t, plain.kafkaAddr))
	mode, days := "compliance", "1"
	res, err := adm.CreateTopics(ctx, 1, 1, map[string]*string{"remote.object.lock.mode": &mode, "remote.object.lock.days": &days}, "worm")
	if err != nil {
		t.Fatal(err)
	}
	if tr := res["worm"]; tr.Err != kerr.InvalidConfig || !strings.Contains(tr.ErrMessage, "Object Lock") {
		t.Fatalf("Kafka CreateTopics of a locked topic: %v %q, want INVALID_CONFIG saying why", tr.Err, tr.ErrMessage)
	}

	bucket := m.NewLockedBucket(t)
	n := startNode(t, filepath.Join(t.TempDir(), "data"), m.Env(), "--bucket", m.MinIOURL(bucket, "tierlog"))
	createTiered(t, n, "worm", lockConfig...)
	ok(t, n, joinLines(tierLines(2000)), "produce", "worm", "--quiet")
	segments := func() []minio.ObjectInfo {
		var out []minio.ObjectInfo
		for o := range m.Client().ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "tierlog/", Recursive: true, WithVersions: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			if strings.HasSuffix(o.Key, ".seg") {
				out = append(out, o)
			}
		}
		return out
	}
	eventually(t, "segments in the bucket", func() error {
		if len(segments()) < 2 {
			return fmt.Errorf("%d segment versions", len(segments()))
		}
		return nil
	})
	held := func(o minio.ObjectInfo) bool {
		s, err := m.Client().GetObjectLegalHold(ctx, bucket, o.Key, minio.GetObjectLegalHoldOptions{VersionID: o.VersionID})
		return err == nil && *s == minio.LegalHoldEnabled
	}
	for _, o := range segments() {
		mode, until, err := m.Client().GetObjectRetention(ctx, bucket, o.Key, o.VersionID)
		if err != nil || *mode != minio.Compliance || until == nil {
			t.Fatalf("segment %s: retention %v until %v (%v), want compliance", o.Key, mode, until, err)
		}
		if held(o) {
			t.Fatalf("segment %s is held before the legal hold", o.Key)
		}
	}

	if out := ok(t, n, "", "topic", "legal-hold", "worm", "on"); !strings.Contains(out, "legal hold on") {
		t.Errorf("legal-hold on printed %q", out)
	}
	eventually(t, "every segment held", func() error {
		for _, o := range segments() {
			if !held(o) {
				return fmt.Errorf("segment %s is not held", o.Key)
			}
		}
		return nil
	})
	ok(t, n, "", "topic", "legal-hold", "worm", "off")
	eventually(t, "no segment held", func() error {
		for _, o := range segments() {
			if held(o) {
				return fmt.Errorf("segment %s is still held", o.Key)
			}
		}
		return nil
	})
	if r := cli(t, n, "", "topic", "legal-hold", "worm", "maybe"); r.code != 2 || !strings.Contains(r.stderr, "on or off") {
		t.Errorf("legal-hold maybe: exit %d, stderr %q", r.code, r.stderr)
	}
}

func kgoClient(t *testing.T, addr string) *kgo.Client {
	c, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
