package tiering

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// allVersions lists every version and delete marker under prefix as MinIO
// keeps them, as an administrator sees them (keys relative to the node's
// bucket prefix).
func (e *lockedEnv) allVersions(prefix string) []minio.ObjectInfo {
	e.t.Helper()
	var out []minio.ObjectInfo
	opts := minio.ListObjectsOptions{Prefix: lockedPrefix + prefix, Recursive: true, WithVersions: true}
	for o := range e.m.Client().ListObjectsIter(context.Background(), e.bucket, opts) {
		if o.Err != nil {
			e.t.Fatal(o.Err)
		}
		o.Key = strings.TrimPrefix(o.Key, lockedPrefix)
		out = append(out, o)
	}
	return out
}

// entry names a listed version: "key version" (and "marker").
func entry(o minio.ObjectInfo) string {
	if o.IsDeleteMarker {
		return o.Key + " " + o.VersionID + " marker"
	}
	return o.Key + " " + o.VersionID
}

// entriesOf lists key's versions and delete markers under prefix, as
// entry gives them, newest first.
func (e *lockedEnv) entriesOf(prefix, key string) []string {
	var got []string
	for _, o := range e.allVersions(prefix) {
		if o.Key == key {
			got = append(got, entry(o))
		}
	}
	return got
}

// sweepRemoves runs p's orphan sweep and checks that nothing of orphan
// is left.
func (e *lockedEnv) sweepRemoves(p *Partition, orphan string) {
	e.t.Helper()
	if err := e.daemon.cleanup(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
	for _, o := range e.entriesOf(PartitionPrefix(p.topic, p.partition), orphan) {
		e.t.Errorf("left of an orphan after one sweep: %s", o)
	}
}

// deleteTopicRemovesAll deletes p's topic (one partition) and checks that
// nothing of it is left, its record included.
func (e *lockedEnv) deleteTopicRemovesAll(p *Partition) {
	e.t.Helper()
	e.daemon.Remove(p)
	if err := e.store.DeleteTopic(context.Background(), p.topic, 1); err != nil {
		e.t.Fatal(err)
	}
	for _, o := range append(e.allVersions(PartitionPrefix(p.topic, p.partition)), e.allVersions(topicsPrefix)...) {
		e.t.Errorf("left after the topic's deletion: %s", entry(o))
	}
}

// shorten brings a governance retention to now + d, as an administrator
// allowed to bypass governance may: the tests' way to reach a
// retain-until date without waiting for it.
func (e *lockedEnv) shorten(key, version string, d time.Duration) {
	e.t.Helper()
	until, mode := time.Now().Add(d), minio.Governance
	err := e.m.Client().PutObjectRetention(context.Background(), e.bucket, lockedPrefix+key,
		minio.PutObjectRetentionOptions{GovernanceBypass: true, Mode: &mode, RetainUntilDate: &until, VersionID: version})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestOrphanSweepDeletesEveryVersion: on a versioned bucket the orphan
// sweep deletes every version and delete marker of what it removes - an
// orphan segment written twice, an orphan and a manifest copy an earlier
// delete by key left behind a marker, old manifest copies - and no version
// of a key the manifest names (the recorded one, an overwrite, a marker put
// over it) nor of the tree's tiles and checkpoints. An orphan version
// under Object Lock is reported once, not asked for again before its
// retain-until date, and deleted after it.
func TestOrphanSweepDeletesEveryVersion(t *testing.T) {
	for _, scheme := range []string{"minio", "s3"} {
		t.Run(scheme, func(t *testing.T) {
			ctx := context.Background()
			e := newLockedEnv(t, scheme)
			e.signWith(filepath.Join(t.TempDir(), "signing.key"))
			p := e.openLocked("sweep", ObjectLock{})
			produce(t, p, 300)
			e.settle(p)
			prefix := PartitionPrefix("sweep", 0)
			named := map[string]bool{}
			for _, s := range p.Manifest().Segments {
				named[s.Key] = true
			}
			first := p.Manifest().committed()[0]
			if _, err := e.m.Client().PutObject(ctx, e.bucket, lockedPrefix+first.Key, strings.NewReader("forged"), 6, minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := e.m.Client().RemoveObject(ctx, e.bucket, lockedPrefix+first.Key, minio.RemoveObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			put := func(key, data string) {
				t.Helper()
				if _, err := e.env.bucket.Upload(ctx, key, strings.NewReader(data), int64(len(data))); err != nil {
					t.Fatal(err)
				}
			}
			twice := segmentKey("sweep", 0, 1<<40, 0, "00000000000000aa")
			put(twice, "first")
			put(twice, "second")
			leaked := segmentKey("sweep", 0, 1<<41, 0, "00000000000000bb")
			oldCopy := manifestKey("sweep", 0, 0)
			for _, k := range []string{leaked, oldCopy} {
				put(k, "{}")
				if err := e.env.bucket.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			locked := segmentKey("sweep", 0, 1<<42, 0, "00000000000000cc")
			until := time.Now().Add(time.Hour).Truncate(time.Second)
			la, err := e.env.bucket.(cold.Locker).UploadLocked(ctx, locked, strings.NewReader("held"), 4,
				cold.Retention{Mode: cold.LockGovernance, Until: until}, false)
			if err != nil {
				t.Fatal(err)
			}

			stays := func(o minio.ObjectInfo) bool { return named[o.Key] || strings.Contains(o.Key, "/tlog/") }
			var kept []string
			copies := 0
			for _, o := range e.allVersions(prefix) {
				if stays(o) {
					kept = append(kept, entry(o))
				}
				if _, ok := parseManifestKey(o.Key); ok && !o.IsDeleteMarker {
					copies++
				}
			}
			if copies < 4 {
				t.Fatalf("%d manifest copy versions before the sweep, want old ones to delete", copies)
			}
			stopped := time.Now()
			e.clock.Store(&stopped)
			for range 2 { // the second sweep must not ask again before the date
				if err := e.daemon.cleanup(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			var after []string
			copies, lockedLeft := 0, 0
			for _, o := range e.allVersions(prefix) {
				_, isCopy := parseManifestKey(o.Key)
				switch {
				case stays(o):
					after = append(after, entry(o))
				case o.Key == locked && (o.VersionID == la.VersionID || o.IsDeleteMarker && o.IsLatest):
					lockedLeft++
				case isCopy && !o.IsDeleteMarker && o.Key != oldCopy:
					copies++
				default:
					t.Errorf("left after the sweep: %s", entry(o))
				}
			}
			if strings.Join(after, "\n") != strings.Join(kept, "\n") {
				t.Errorf("the sweep changed versions of named keys or tlog/ objects:\nbefore\n%s\nafter\n%s", strings.Join(kept, "\n"), strings.Join(after, "\n"))
			}
			if copies != 2 {
				t.Errorf("%d manifest copy versions after the sweep, want the newest two", copies)
			}
			// The locked orphan stays behind one delete marker: a restore
			// listing keys must not take it for a segment to adopt.
			if lockedLeft != 2 {
				t.Errorf("%d entries of the locked orphan, want its version and one delete marker over it", lockedLeft)
			}
			if ok, err := e.env.bucket.Exists(ctx, locked); ok || err != nil {
				t.Errorf("the locked orphan is visible: exists %v, %v", ok, err)
			}
			if n := promtest.ToFloat64(e.daemon.m.lockDeferred); n != 1 {
				t.Errorf("locked deletes deferred: %v, want 1 (the locked orphan, asked once)", n)
			}
			checkRecords(t, readAll(t, p, 0), 0, p.EndOffset())

			// Its date reached (shortened by an administrator; the node's
			// clock past the date the bucket gave): the next sweeps delete it.
			e.shorten(locked, la.VersionID, time.Second)
			later := until.Add(time.Second)
			e.clock.Store(&later)
			testutil.Eventually(t, 30*time.Second, func() bool {
				if err := e.daemon.cleanup(ctx, p); err != nil {
					t.Fatal(err)
				}
				for _, o := range e.allVersions(prefix) {
					if o.Key == locked {
						return false
					}
				}
				return true
			}, "the locked orphan is still there after its date")
		})
	}
}

// TestDeleteTopicDeletesEveryVersion: deleting a topic on a versioned
// bucket leaves no version nor delete marker of its objects or its record
// (nor do superseded partial tiles, deleted as tiering goes).
// On a bucket with Object Lock, the versions under retention stay, each
// key behind one delete marker so that no listing of keys finds them, and
// are counted; every other version goes. A deletion run again after their
// date removes them and their markers.
func TestDeleteTopicDeletesEveryVersion(t *testing.T) {
	ctx := context.Background()
	t.Run("versioned", func(t *testing.T) {
		m := testutil.StartMinIO(t)
		name := m.NewBucket(t)
		if err := m.Client().EnableVersioning(ctx, name); err != nil {
			t.Fatal(err)
		}
		e := newEnvIn(t, m, name, "minio")
		e.signWith(filepath.Join(t.TempDir(), "signing.key"))
		p := e.openLocked("gone", ObjectLock{})
		produce(t, p, 300)
		e.settle(p)
		prefix := PartitionPrefix("gone", 0)
		if n, segs := len(e.allVersions(prefix)), len(p.Manifest().Segments); n <= 2*segs {
			t.Fatalf("%d versions for %d segments: want rewritten objects (tlog/checkpoint) to have several", n, segs)
		}
		// Partial tiles that full tiles superseded go, every version.
		full, partials := map[string]bool{}, 0
		tiles := e.allVersions(prefix + "tlog/tile/")
		for _, o := range tiles {
			if !strings.Contains(o.Key, ".p/") {
				full[o.Key] = true
			}
		}
		for _, o := range tiles {
			if tile, _, ok := strings.Cut(o.Key, ".p/"); ok {
				if partials++; full[tile] {
					t.Errorf("left of a partial tile its full tile superseded: %s", entry(o))
				}
			}
		}
		if len(full) == 0 {
			t.Fatalf("no full tile among %d tile versions (%d partial): nothing superseded", len(tiles), partials)
		}
		e.daemon.Remove(p)
		if err := e.store.DeleteTopic(ctx, "gone", 1); err != nil {
			t.Fatal(err)
		}
		for _, o := range append(e.allVersions(prefix), e.allVersions(topicsPrefix)...) {
			t.Errorf("left after the topic's deletion: %s", entry(o))
		}
	})

	// Objects written before versioning was enabled are listed as one
	// "null" version each, as on a bucket that keeps none: a delete by
	// key would only hide them behind a marker. So would it an orphan
	// the sweep deletes.
	t.Run("versioning enabled later", func(t *testing.T) {
		for _, scheme := range []string{"minio", "s3"} {
			t.Run(scheme, func(t *testing.T) {
				m := testutil.StartMinIO(t)
				name := m.NewBucket(t)
				sweepAndDeleteTopic(t, m, newEnvIn(t, m, name, scheme), name, true)
			})
		}
	})

	t.Run("object lock", func(t *testing.T) {
		e := newLockedEnv(t, "s3")
		e.signWith(filepath.Join(t.TempDir(), "signing.key"))
		p := e.openLocked("gone", ObjectLock{Mode: cold.LockGovernance, Period: time.Hour})
		produce(t, p, 300)
		e.settle(p)
		prefix := PartitionPrefix("gone", 0)
		e.daemon.Remove(p)
		if err := e.store.DeleteTopic(ctx, "gone", 1); err != nil {
			t.Fatalf("a topic deletion that leaves only locked versions: %v", err)
		}
		var kept []minio.ObjectInfo
		segs, tiles := 0, 0
		left := e.allVersions(prefix)
		for i, o := range left {
			if o.IsLatest != o.IsDeleteMarker || (o.IsDeleteMarker && i > 0 && left[i-1].Key == o.Key) {
				t.Errorf("%s (latest %v): want each key's one delete marker latest, over its locked versions", entry(o), o.IsLatest)
			}
			if o.IsDeleteMarker {
				continue
			}
			mode, _, err := e.m.Client().GetObjectRetention(ctx, e.bucket, lockedPrefix+o.Key, o.VersionID)
			if err != nil || mode == nil || *mode != minio.Governance {
				t.Errorf("%s left after the topic's deletion, not under retention (%v)", entry(o), err)
			}
			kept = append(kept, o)
			if strings.HasSuffix(o.Key, ".seg") {
				segs++
			} else if strings.Contains(o.Key, "/tlog/") {
				tiles++
			}
		}
		if segs == 0 || tiles == 0 || segs+tiles != len(kept) {
			t.Errorf("kept %d versions, %d of segments and %d of tlog/: want locked segments and tiles only", len(kept), segs, tiles)
		}
		if n := promtest.ToFloat64(e.store.keptVersions); n != float64(len(kept)) {
			t.Errorf("kept versions counted: %v, want %d", n, len(kept))
		}
		err := e.env.bucket.Iter(ctx, prefix, func(key string) error {
			t.Errorf("a listing of keys finds %s of the deleted topic", key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range e.allVersions(topicsPrefix) {
			t.Errorf("left of the topic's record: %s", entry(o))
		}

		for _, o := range kept {
			e.shorten(o.Key, o.VersionID, time.Second)
		}
		testutil.Eventually(t, 30*time.Second, func() bool {
			if err := e.store.DeleteTopic(ctx, "gone", 1); err != nil {
				t.Fatal(err)
			}
			return len(e.allVersions(prefix)) == 0
		}, "versions left after their date and a deletion run again")
	})
}

// nodeActions are the S3 actions the README's policy grants a node, but
// s3:GetBucketVersioning, which it marks optional (releases before it
// did not ask for it) and Object Lock's, which the topics here do not use.
var nodeActions = []string{
	"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
	"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads", "s3:AbortMultipartUpload",
	"s3:GetBucketLocation",
}

// TestDeleteWithoutVersioningPermission: a node whose credentials may not
// read the bucket's versioning status still has the orphan sweep and a
// topic's deletion remove every version of what they delete: on a bucket
// without versions by key, and on one whose versioning was enabled after
// objects were written their "null" versions too, not only hidden behind
// delete markers.
func TestDeleteWithoutVersioningPermission(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	for _, enable := range []bool{false, true} {
		for _, scheme := range []string{"minio", "s3"} {
			t.Run(fmt.Sprintf("versioning enabled later %v/%s", enable, scheme), func(t *testing.T) {
				name := m.NewBucket(t)
				ak, sk, token := m.Restricted(t, name, nodeActions...)
				e := newEnvAs(t, m, name, scheme, cold.Credentials{AccessKeyID: ak, SecretAccessKey: sk, SessionToken: token})
				if _, err := cold.KeepsVersions(ctx, e.env.bucket); !errors.Is(err, fs.ErrPermission) {
					t.Fatalf("KeepsVersions with the restricted credentials: %v; want a refusal", err)
				}
				sweepAndDeleteTopic(t, m, e, name, enable)
			})
		}
	}
}

// sweepAndDeleteTopic has e's node tier a topic to bucket name of m, then
// sweep an orphan segment and delete the topic, and checks that no version
// of either is left. With enableLater, versioning is enabled in between:
// what was written before is listed as "null" versions, which a delete by
// key would only hide behind markers.
func sweepAndDeleteTopic(t *testing.T, m *testutil.MinIO, e *lockedEnv, name string, enableLater bool) {
	t.Helper()
	ctx := context.Background()
	e.signWith(filepath.Join(t.TempDir(), "signing.key"))
	p := e.openLocked("gone", ObjectLock{})
	produce(t, p, 150)
	e.settle(p)
	prefix := PartitionPrefix("gone", 0)
	orphan := segmentKey("gone", 0, 1<<40, 0, "00000000000000aa")
	if _, err := e.env.bucket.Upload(ctx, orphan, strings.NewReader("orphan"), 6); err != nil {
		t.Fatal(err)
	}
	if enableLater {
		if err := m.Client().EnableVersioning(ctx, name); err != nil {
			t.Fatal(err)
		}
		nulls := 0
		for _, o := range e.allVersions(prefix) {
			if o.VersionID == "null" || o.VersionID == "" {
				nulls++
			}
		}
		if nulls == 0 {
			t.Fatal("no object written before versioning was enabled")
		}
		produce(t, p, 150)
		e.settle(p)
	}
	e.sweepRemoves(p, orphan)
	e.deleteTopicRemovesAll(p)
}

// TestNullDeleteMarkers: a delete marker put while the bucket's versioning
// was suspended (S3's "null" marker: remote retention, or an older
// release, deleted the object by key) goes with the orphan sweep and a
// topic's deletion once versioning is enabled again - on MinIO too, which
// answers a plain delete of that marker by writing it anew.
func TestNullDeleteMarkers(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	for _, scheme := range []string{"minio", "s3"} {
		t.Run(scheme, func(t *testing.T) {
			name := m.NewBucket(t)
			e := newEnvIn(t, m, name, scheme)
			p := e.openLocked("gone", ObjectLock{})
			produce(t, p, 150)
			e.settle(p)
			prefix := PartitionPrefix("gone", 0)
			// nullMarker leaves key deleted behind a null delete marker.
			nullMarker := func(key string) {
				t.Helper()
				if _, err := e.env.bucket.Upload(ctx, key, strings.NewReader("orphan"), 6); err != nil {
					t.Fatal(err)
				}
				if err := m.Client().SuspendVersioning(ctx, name); err != nil {
					t.Fatal(err)
				}
				if err := e.env.bucket.Delete(ctx, key); err != nil {
					t.Fatal(err)
				}
				if err := m.Client().EnableVersioning(ctx, name); err != nil {
					t.Fatal(err)
				}
				if got := e.entriesOf(prefix, key); len(got) == 0 || got[0] != key+" null marker" {
					t.Fatalf("%s: %q, want a null delete marker latest", key, got)
				}
			}
			swept := segmentKey("gone", 0, 1<<40, 0, "00000000000000aa")
			nullMarker(swept)
			produce(t, p, 150)
			e.settle(p)
			e.sweepRemoves(p, swept)
			nullMarker(segmentKey("gone", 0, 1<<41, 0, "00000000000000bb"))
			e.deleteTopicRemovesAll(p)
		})
	}
}
