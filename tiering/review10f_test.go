package tiering

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// failWrites makes two of the four drives refuse every change to object
// (the directory holding its xl.meta made immutable, which even root
// cannot write): MinIO then lacks write quorum for it, exactly as with two
// drives offline. It returns the function that heals them.
func failWrites(t *testing.T, m *testutil.MinIO, bucket, object string) (heal func()) {
	t.Helper()
	var paths []string
	for _, d := range []string{"d1", "d2"} {
		p := filepath.Join(m.DataDir, d, bucket, object)
		if out, err := exec.Command("chattr", "-R", "+i", p).CombinedOutput(); err != nil {
			t.Fatalf("chattr +i %s: %v %s", p, err, out)
		}
		paths = append(paths, p)
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, p := range paths {
				exec.Command("chattr", "-R", "-i", p).Run()
			}
		})
	}
	t.Cleanup(heal)
	return heal
}

// versionedBucket passes a Versioned bucket through, for a test's
// wrapper that changes one of its calls.
type versionedBucket struct {
	cold.Bucket
	v cold.Versioned
}

func wrapVersioned(b cold.Bucket) versionedBucket { return versionedBucket{b, b.(cold.Versioned)} }

func (b versionedBucket) GetRangeVersion(ctx context.Context, key, versionID string, off, length int64) (io.ReadCloser, error) {
	return b.v.GetRangeVersion(ctx, key, versionID, off, length)
}

func (b versionedBucket) DeleteVersion(ctx context.Context, key, versionID string) error {
	return b.v.DeleteVersion(ctx, key, versionID)
}

func (b versionedBucket) IterVersions(ctx context.Context, prefix string, f func(cold.ObjectVersion) error) error {
	return b.v.IterVersions(ctx, prefix, f)
}

func (b versionedBucket) KeepsVersions(ctx context.Context) (bool, error) {
	return b.v.KeepsVersions(ctx)
}

// healingBucket is a bucket whose failing drives heal right after the
// first delete they failed: a transient failure, which one retry gets
// past.
type healingBucket struct {
	versionedBucket
	heal   func()
	mu     sync.Mutex
	failed []error
}

func (h *healingBucket) DeleteVersion(ctx context.Context, key, versionID string) error {
	err := h.v.DeleteVersion(ctx, key, versionID)
	if err != nil {
		h.mu.Lock()
		h.failed = append(h.failed, err)
		h.mu.Unlock()
		h.heal()
	}
	return err
}

// TestNullVersionDeleteRetriesLostQuorum: the delete of a "null" version
// (an object written before versioning was enabled) goes by DeleteObjects
// (see DeleteVersion in both backends), whose per-object errors carry a code but no HTTP status.
// When MinIO loses write quorum for the object (two of four drives failing
// it) it answers SlowDownWrite: with status 503 to a single DELETE, which
// cold.IsRetryable retries, but inside a DeleteObjects answer with no
// status, and "SlowDownWrite" is not among cold's retryableCodes. So the
// purge of an orphan or of a deleted topic's object fails at the first
// such answer instead of retrying it, on both backends - while the very
// same failure of a version with an id (single DELETE) is retried.
//
// The drives heal right after the first failed delete; one retry would
// have removed the object. Fix: give the per-object errors of
// deleteNull/removeNull the status their code implies (or classify them by
// code: SlowDownWrite and SlowDownRead are MinIO's 503 quorum answers,
// XMinioBackendDown, etc.), and add SlowDownRead/SlowDownWrite to
// cold.retryableCodes so a code alone is enough.
func TestNullVersionDeleteRetriesLostQuorum(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartErasureMinIO(t, 4)
	for _, scheme := range []string{"minio", "s3"} {
		for _, null := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/null=%v", scheme, null), func(t *testing.T) {
				name := m.NewBucket(t)
				b := newEnvIn(t, m, name, scheme).env.bucket
				key := "topics/x/0/00000000000000000000-1.seg"
				if null {
					// Written before versioning was enabled: its null
					// version, and a newer one.
					if _, err := b.Upload(ctx, key, strings.NewReader("before"), 6); err != nil {
						t.Fatal(err)
					}
				}
				if err := m.Client().EnableVersioning(ctx, name); err != nil {
					t.Fatal(err)
				}
				if !null {
					if _, err := b.Upload(ctx, key, strings.NewReader("first"), 5); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := b.Upload(ctx, key, strings.NewReader("after"), 5); err != nil {
					t.Fatal(err)
				}
				vs, err := versionsOf(ctx, b, key)
				if err != nil || len(vs) != 2 {
					t.Fatalf("versions of %s: %+v, %v", key, vs, err)
				}
				h := &healingBucket{versionedBucket: wrapVersioned(b), heal: failWrites(t, m, name, lockedPrefix+key)}
				r, err := purge(ctx, h, &bucketVersioning{b: h}, key, vs, nil)
				if err != nil {
					t.Errorf("purge of %s (versions %s, %s) after a transient loss of write quorum: %v", key, vs[0].VersionID, vs[1].VersionID, err)
				}
				for _, e := range h.failed {
					t.Logf("failed delete: %v (retryable: %v)", e, cold.IsRetryable(e))
				}
				if left, _ := versionsOf(ctx, b, key); len(left) > 0 || !r.gone() {
					for _, v := range left {
						t.Errorf("left after purge: %s %s marker=%v", v.Key, v.VersionID, v.DeleteMarker)
					}
				}
				if len(h.failed) == 0 {
					t.Fatal("no delete failed: the drives did not lose quorum")
				}
			})
		}
	}
}

// enablingBucket plays an operator who turns versioning on while a
// deletion runs: right after the first delete by key it enables the
// bucket's versioning (as NullVersionTest says an operator may, under a
// running node).
type enablingBucket struct {
	versionedBucket
	enable func()
	once   sync.Once
}

func (e *enablingBucket) Delete(ctx context.Context, key string) error {
	err := e.Bucket.Delete(ctx, key)
	e.once.Do(e.enable)
	return err
}

// TestDeleteTopicWhileVersioningIsEnabled: a topic's deletion (purgeAll)
// asks the bucket's versioning status once, at its first unversioned
// object, and trusts that "no" for every object after (bucketVersioning).
// An operator who enables versioning while a long deletion runs - which
// the change means to support: objects written before versioning are
// deleted by their null version - gets every later object of the topic
// deleted by key, which on the now versioned bucket only hides its null
// version behind a new delete marker. purgeAll reports success; the
// partition and topic are gone, so nothing lists that prefix again: the
// null versions stay, billed, for good.
//
// Fix: do not trust a cached "keeps no versions" past the delete it was
// asked for - e.g. read the DeleteObject answer (x-amz-delete-marker /
// x-amz-version-id say a marker was written) and, when a marker was
// written, purge what is left of the key by id (versionsOf, as the
// unknown path does); or ask KeepsVersions again after each delete by key
// that wrote a marker.
func TestDeleteTopicWhileVersioningIsEnabled(t *testing.T) {
	ctx := context.Background()
	m := testutil.StartMinIO(t)
	for _, scheme := range []string{"minio", "s3"} {
		t.Run(scheme, func(t *testing.T) {
			name := m.NewBucket(t)
			e := newEnvIn(t, m, name, scheme)
			b := e.env.bucket
			prefix := PartitionPrefix("gone", 0)
			var keys []string
			for i := range 5 {
				k := segmentKey("gone", 0, int64(i)*100, 0, fmt.Sprintf("%016x", i+1))
				keys = append(keys, k)
				if _, err := b.Upload(ctx, k, strings.NewReader("segment"), 7); err != nil {
					t.Fatal(err)
				}
			}
			eb := &enablingBucket{versionedBucket: wrapVersioned(b), enable: func() {
				if err := m.Client().EnableVersioning(ctx, name); err != nil {
					t.Error(err)
				}
			}}
			s := &Store{Bucket: eb}
			if err := s.purgeAll(ctx, "topic deletion", "gone", []string{prefix}, nil); err != nil {
				t.Fatal(err)
			}
			for _, o := range e.allVersions(prefix) {
				t.Errorf("left after the topic's deletion said it removed everything: %s", entry(o))
			}
		})
	}
}
