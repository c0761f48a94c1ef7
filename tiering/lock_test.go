package tiering

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
)

// lockedEnv is a node on a bucket created with Object Lock, with a clock
// the test can stop (nil: the real one).
type lockedEnv struct {
	*env
	m      *testutil.MinIO
	bucket string // the MinIO bucket
	clock  atomic.Pointer[time.Time]
}

const lockedPrefix = "t/"

func newLockedEnv(t *testing.T, scheme string) *lockedEnv {
	m := testutil.StartMinIO(t)
	return newEnvIn(t, m, m.NewLockedBucket(t), scheme)
}

// newEnvIn is a node on MinIO bucket name, under lockedPrefix, through
// the minio or the s3 backend.
func newEnvIn(t *testing.T, m *testutil.MinIO, name, scheme string) *lockedEnv {
	return newEnvAs(t, m, name, scheme, cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey})
}

// newEnvAs is newEnvIn with the node's credentials c.
func newEnvAs(t *testing.T, m *testutil.MinIO, name, scheme string, c cold.Credentials) *lockedEnv {
	u := m.MinIOURL(name, lockedPrefix)
	if scheme == "s3" {
		u = m.S3URL(name, lockedPrefix)
	}
	b, err := bucketurl.Open(context.Background(), u, cold.Options{Credentials: &c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	le := &lockedEnv{env: newEnv(t, b, t.TempDir()), m: m, bucket: name}
	le.daemon.opts.Now = func() time.Time {
		if c := le.clock.Load(); c != nil {
			return *c
		}
		return time.Now()
	}
	return le
}

func (e *lockedEnv) openLocked(topic string, l ObjectLock) *Partition {
	e.t.Helper()
	p, err := OpenPartition(context.Background(), PartitionOptions{
		Dir: filepath.Join(e.dataDir, topic, "0"), Topic: topic, Hot: hotConfig(),
		Store: e.store, Reader: e.reader, Remote: true, Retention: Retention{Bytes: -1}, ObjectLock: l,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.daemon.Add(p)
	e.t.Cleanup(func() { p.Close() })
	return p
}

// statVersion asks MinIO about one version, as an administrator would.
func (e *lockedEnv) statVersion(key, version string) error {
	_, err := e.m.Client().StatObject(context.Background(), e.bucket, lockedPrefix+key, minio.StatObjectOptions{VersionID: version})
	return err
}

func setRetention(p *Partition, r Retention) {
	p.mu.Lock()
	p.retention = r
	p.mu.Unlock()
}

// TestLockedTopicRetention: a locked topic's segments are uploaded with a
// retention; the manifest records their version ids and retain-until
// dates; reads use the version (an overwrite behind tierlog's back changes
// nothing); the bucket refuses an administrator's delete; remote retention
// does not start deleting before the date, and completes after it; a
// refused delete the manifest could not foresee stays delete_started and
// is retried after the date the bucket gives.
func TestLockedTopicRetention(t *testing.T) {
	// Short, for the test's end waits for the real dates to pass; long
	// enough for the checks on locked versions to run before they do.
	const lockPeriod = 5 * time.Second
	for _, scheme := range []string{"minio", "s3"} {
		t.Run(scheme, func(t *testing.T) {
			ctx := context.Background()
			e := newLockedEnv(t, scheme)
			e.signWith(filepath.Join(t.TempDir(), "signing.key"))
			p := e.openLocked("audit", ObjectLock{Mode: cold.LockCompliance, Period: lockPeriod})
			produce(t, p, 300)
			e.settle(p)
			segs := p.Manifest().committed()
			// An administrator tries to erase history: the bucket refuses
			// to delete the version, even to root bypassing governance.
			// Tried at once on the newest segment, whose lock has the
			// longest left: the locks last only lockPeriod, and a run on
			// loaded cores once outlasted the first segment's 2 s before
			// this check.
			if len(segs) == 0 {
				t.Fatal("no committed segments")
			}
			last := segs[len(segs)-1]
			if err := e.m.Client().RemoveObject(ctx, e.bucket, lockedPrefix+last.Key, minio.RemoveObjectOptions{VersionID: last.VersionID, GovernanceBypass: true}); err == nil {
				t.Fatalf("root deleted a locked segment version")
			}
			// The tree's tiles and numbered checkpoints are locked like the
			// segments; the latest checkpoint, a pointer rewritten at every
			// segment, is not.
			var tlog int
			latest := audit.LatestCheckpointKey(PartitionPrefix("audit", 0))
			err := e.env.bucket.Iter(ctx, PartitionPrefix("audit", 0)+"tlog/", func(key string) error {
				tlog++
				ret, _, err := e.env.bucket.(cold.Locker).ObjectLock(ctx, key, "")
				if key == latest {
					if err != nil || ret.Mode != "" {
						t.Errorf("%s: retention %+v (%v), want none", key, ret, err)
					}
					return nil
				}
				if err != nil || ret.Mode != cold.LockCompliance || ret.Until.IsZero() {
					t.Errorf("tlog object %s: retention %+v (%v), want compliance", key, ret, err)
				}
				return nil
			})
			if err != nil || tlog < 2 {
				t.Fatalf("%d tlog objects (%v), want tiles and checkpoints", tlog, err)
			}
			if len(segs) < 3 {
				t.Fatalf("%d committed segments, want at least 3", len(segs))
			}
			// The manifest records the version and the date the bucket
			// keeps (no later than lockPeriod, rounded up, after the
			// commit).
			for _, s := range segs {
				ret, _, err := e.env.bucket.(cold.Locker).ObjectLock(ctx, s.Key, s.VersionID)
				if err != nil || s.VersionID == "" || ret.Mode != cold.LockCompliance || !ret.Until.Equal(s.RetainUntil) ||
					s.RetainUntil.After(s.UploadedAt.Add(lockPeriod+time.Second)) {
					t.Fatalf("segment %s: version %q, retain until %v, uploaded %v; the bucket says %+v (%v)", s.Key, s.VersionID, s.RetainUntil, s.UploadedAt, ret, err)
				}
			}
			// An overwrite is a new version that reads do not use.
			first := segs[0]
			forged := bytes.Repeat([]byte("x"), int(first.Size))
			if _, err := e.m.Client().PutObject(ctx, e.bucket, lockedPrefix+first.Key, bytes.NewReader(forged), first.Size, minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			checkRecords(t, readAll(t, p, 0), 0, p.EndOffset())

			// Retention past every segment, on a clock stopped before the
			// first date: nothing is started, reads go on.
			stopped := segs[0].RetainUntil.Add(-time.Millisecond)
			e.clock.Store(&stopped)
			setRetention(p, Retention{Age: time.Millisecond, Bytes: -1})
			for range 3 {
				e.daemon.pass(ctx)
			}
			m := p.Manifest()
			if m.LogStartOffset != 0 || len(m.committed()) != len(segs) {
				t.Fatalf("retention started before the retain-until date: log start %d, %d of %d segments committed", m.LogStartOffset, len(m.committed()), len(segs))
			}
			if n := promtest.ToFloat64(e.daemon.m.lockDeferred); n != 1 {
				t.Errorf("locked deletes deferred: %v, want 1 (the first locked segment, counted once)", n)
			}
			checkRecords(t, readAll(t, p, 0), 0, p.EndOffset())

			// A lock the manifest does not know of (here: a legal hold set
			// by hand, and the recorded date lost): the delete is started,
			// refused, and left delete_started.
			hold := minio.LegalHoldEnabled
			if err := e.m.Client().PutObjectLegalHold(ctx, e.bucket, lockedPrefix+first.Key, minio.PutObjectLegalHoldOptions{VersionID: first.VersionID, Status: &hold}); err != nil {
				t.Fatal(err)
			}
			e.daemon.opts.LockRetry = 20 * time.Millisecond
			p.tierMu.Lock()
			err = p.commit(func(m *Manifest) {
				for i := range m.Segments {
					if m.Segments[i].ID == first.ID {
						m.Segments[i].RetainUntil = time.Time{}
					}
				}
			})
			p.tierMu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			e.daemon.pass(ctx)
			m = p.Manifest()
			if len(m.Segments) != len(segs) || m.Segments[0].State != DeleteStarted || m.LogStartOffset != first.NextOffset {
				t.Fatalf("after a refused delete: %d entries (want %d), first %s, log start %d (want %d)", len(m.Segments), len(segs), m.Segments[0].State, m.LogStartOffset, first.NextOffset)
			}
			if err := e.statVersion(first.Key, first.VersionID); err != nil {
				t.Fatalf("the refused version: %v", err)
			}
			// The refused delete, and the next segment now first in line.
			if n := promtest.ToFloat64(e.daemon.m.lockDeferred); n != 3 {
				t.Errorf("locked deletes deferred: %v, want 3", n)
			}

			// The hold lifted and the real clock: every delete completes
			// once its date passes.
			hold = minio.LegalHoldDisabled
			if err := e.m.Client().PutObjectLegalHold(ctx, e.bucket, lockedPrefix+first.Key, minio.PutObjectLegalHoldOptions{VersionID: first.VersionID, Status: &hold}); err != nil {
				t.Fatal(err)
			}
			e.clock.Store(nil)
			testutil.Eventually(t, 30*time.Second, func() bool {
				e.daemon.pass(ctx)
				return len(p.Manifest().Segments) == 0
			}, "retention did not delete the locked segments after their dates")
			for _, s := range segs {
				if err := e.statVersion(s.Key, s.VersionID); minio.ToErrorResponse(err).StatusCode != 404 {
					t.Errorf("segment %s version %s after retention: %v, want gone", s.Key, s.VersionID, err)
				}
			}
		})
	}
}

// TestLegalHold: turning a topic's legal hold on holds every object it
// has (segments and tlog/ objects), stops retention and blocks an
// administrator's delete; turning it off lets retention finish.
func TestLegalHold(t *testing.T) {
	ctx := context.Background()
	e := newLockedEnv(t, "minio")
	p := e.openLocked("held", ObjectLock{})
	produce(t, p, 200)
	e.settle(p)
	tile := PartitionPrefix("held", 0) + "tlog/tile/0/000"
	if _, err := e.env.bucket.Upload(ctx, tile, strings.NewReader("tile"), 4); err != nil {
		t.Fatal(err)
	}
	segs := p.Manifest().committed()
	locker := e.env.bucket.(cold.Locker)
	held := func(key, version string) bool {
		t.Helper()
		_, hold, err := locker.ObjectLock(ctx, key, version)
		if err != nil {
			t.Fatal(err)
		}
		return hold
	}
	if held(segs[0].Key, segs[0].VersionID) {
		t.Fatalf("a segment of a topic without legal hold is held")
	}

	p.SetObjectLock(ObjectLock{LegalHold: true})
	testutil.Eventually(t, 10*time.Second, func() bool { e.daemon.pass(ctx); return p.Manifest().LegalHold }, "legal hold not applied")
	for _, s := range segs {
		if !held(s.Key, s.VersionID) {
			t.Errorf("segment %s is not held", s.Key)
		}
	}
	if !held(tile, "") {
		t.Errorf("tlog object %s is not held", tile)
	}
	if err := e.m.Client().RemoveObject(ctx, e.bucket, lockedPrefix+segs[0].Key, minio.RemoveObjectOptions{VersionID: segs[0].VersionID, GovernanceBypass: true}); err == nil {
		t.Fatalf("root deleted a held segment version")
	}
	// New uploads are held as they are made.
	produce(t, p, 50)
	e.settle(p)
	newest := p.Manifest().committed()
	if last := newest[len(newest)-1]; !held(last.Key, last.VersionID) {
		t.Errorf("segment %s uploaded under the hold is not held", last.Key)
	}
	setRetention(p, Retention{Age: time.Millisecond, Bytes: -1})
	for range 3 {
		e.daemon.pass(ctx)
	}
	if m := p.Manifest(); m.LogStartOffset != 0 {
		t.Fatalf("retention moved the log start to %d under a legal hold", m.LogStartOffset)
	}

	p.SetObjectLock(ObjectLock{})
	testutil.Eventually(t, 10*time.Second, func() bool {
		e.daemon.pass(ctx)
		return len(p.Manifest().Segments) == 0
	}, "retention did not finish after the hold was lifted")
	if held(tile, "") {
		t.Errorf("tlog object %s is still held", tile)
	}
	if err := e.statVersion(segs[0].Key, segs[0].VersionID); minio.ToErrorResponse(err).StatusCode != 404 {
		t.Errorf("segment version after retention: %v, want gone", err)
	}
}

// TestLockWithoutObjectLockBucket: a partition told to lock on a bucket
// that cannot fails its upload with an error saying so (the broker refuses
// such a topic before it exists; this is the last line).
func TestLockWithoutObjectLockBucket(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	p, err := OpenPartition(context.Background(), PartitionOptions{
		Dir: filepath.Join(e.dataDir, "x", "0"), Topic: "x", Hot: hotConfig(), Store: e.store, Reader: e.reader,
		Remote: true, Retention: Retention{Bytes: -1}, ObjectLock: ObjectLock{Mode: cold.LockGovernance, Period: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	produce(t, p, 100)
	p.Log().Roll()
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err = e.daemon.uploadPending(context.Background(), p)
		return err != nil
	}, "no upload of the sealed segment")
	if !strings.Contains(err.Error(), "Object Lock") {
		t.Fatalf("upload of a locked topic to a file bucket: %v, want an Object Lock error", err)
	}
	if len(p.Manifest().committed()) != 0 {
		t.Errorf("a segment was committed without its lock")
	}
}
