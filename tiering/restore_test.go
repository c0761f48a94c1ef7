package tiering

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// TestRestoreAfterCrashNeverReusesOffsets stops a node at the exact points
// where a crash used to leave the bucket behind the node - just after an
// upload's commit, between an upload and its commit, just after remote
// retention deleted objects - then
// wipes its data directory and restores from the bucket. Every record that
// was acknowledged and uploaded must be readable, before and after the
// start-up orphan sweep; new records must get offsets past every offset the
// bucket has seen; no orphan may remain.
func TestRestoreAfterCrashNeverReusesOffsets(t *testing.T) {
	crashes := map[string]func(t *testing.T, d *Daemon, p *Partition, b built){
		// The segment is committed (the node may read it remotely and
		// delete it locally); the crash comes before anything else.
		"after commit": func(t *testing.T, d *Daemon, p *Partition, b built) {
			if err := d.upload(context.Background(), p, b); err != nil {
				t.Fatal(err)
			}
			if n := p.Log().ApplyRetention(time.Now()); n == 0 {
				t.Fatal("local retention kept the committed segment")
			}
		},
		// Remote retention deleted objects (first announcing it in the
		// manifest); the crash comes before anything else.
		"after remote retention": func(t *testing.T, d *Daemon, p *Partition, b built) {
			if err := d.upload(context.Background(), p, b); err != nil {
				t.Fatal(err)
			}
			p.SetConfig(hotConfig(), true, Retention{Bytes: 1})
			if err := d.applyRetention(context.Background(), p); err != nil || p.StartOffset() == 0 {
				t.Fatalf("remote retention: start %d, %v", p.StartOffset(), err)
			}
		},
		// The object is in the bucket, its commit never happened.
		"after upload before commit": func(t *testing.T, d *Daemon, p *Partition, b built) {
			entry := RemoteSegment{BaseOffset: b.s.BaseOffset, NextOffset: b.s.NextOffset, ID: b.id,
				Key: segmentKey(p.topic, p.partition, b.s.BaseOffset, 0, b.id), State: CopyStarted}
			if err := p.commit(func(m *Manifest) { m.Segments = append(m.Segments, entry) }); err != nil {
				t.Fatal(err)
			}
			if _, err := d.put(context.Background(), entry.Key, b.obj); err != nil {
				t.Fatal(err)
			}
		},
	}
	for _, bk := range []struct {
		name   string
		bucket func(*testing.T) cold.Bucket
	}{{"file", newFileBucket}, {"minio", minioBucket}} {
		for name, crash := range crashes {
			t.Run(bk.name+"/"+name, func(t *testing.T) {
				bucket := bk.bucket(t)
				e := newEnv(t, bucket, t.TempDir())
				p := e.open("t", 0, true)
				produce(t, p, 100)
				e.settle(p) // a first tiering pass: segments and a manifest copy in the bucket
				produce(t, p, 100)
				p.Log().Roll()
				testutil.Eventually(t, 5*time.Second, func() bool { return len(e.daemon.pending(p)) > 0 }, "a segment sealed")
				b := built{s: e.daemon.pending(p)[0], id: newID()}
				var err error
				if b.obj, err = e.daemon.build(p, b.s, b.id); err != nil {
					t.Fatal(err)
				}
				defer b.discard()
				crash(t, e.daemon, p, b)
				uploaded := b.s.NextOffset // acknowledged and in the bucket
				e2, p2 := loseDiskAndRestore(t, bucket, e, p, uploaded)
				start := p2.StartOffset()
				named := map[string]bool{}
				for _, s := range p2.Manifest().Segments {
					named[s.Key] = true
				}
				bucket.Iter(context.Background(), PartitionPrefix("t", 0), func(key string) error {
					if strings.HasSuffix(key, ".seg") && !named[key] {
						t.Errorf("orphan left after the sweep: %s", key)
					}
					return nil
				})
				first := p2.EndOffset()
				produce(t, p2, 10)
				if first < uploaded {
					t.Fatalf("new records start at offset %d, below %d already uploaded", first, uploaded)
				}
				e2.settle(p2)
				checkRecords(t, readAll(t, p2, start), start, p2.EndOffset())
			})
		}
	}
}

// loseDiskAndRestore closes p, deletes e's data directory (the disk is
// lost) and restores partition t/0 on a new one. Offsets below uploaded
// were acknowledged and are in the bucket: the restored log must not give
// them again, and they must read back before and after the start-up sweep.
// It returns the new node's env and partition (closed at the test's end).
func loseDiskAndRestore(t *testing.T, bucket cold.Bucket, e *env, p *Partition, uploaded int64) (*env, *Partition) {
	t.Helper()
	p.Close()
	if err := os.RemoveAll(e.dataDir); err != nil {
		t.Fatal(err)
	}
	e2 := restoreEnv(t, bucket, t.TempDir())
	p2 := e2.open("t", 0, true)
	t.Cleanup(func() { p2.Close() })
	if p2.EndOffset() < uploaded {
		t.Fatalf("restored log ends at %d, but offsets up to %d are in the bucket: new records would reuse them", p2.EndOffset(), uploaded-1)
	}
	start := p2.StartOffset()
	checkRecords(t, readAll(t, p2, start), start, uploaded)
	if err := e2.daemon.cleanup(context.Background(), p2); err != nil { // the start-up sweep
		t.Fatal(err)
	}
	checkRecords(t, readAll(t, p2, start), start, uploaded)
	return e2, p2
}
