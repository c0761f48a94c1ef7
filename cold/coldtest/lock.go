package coldtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// LockTest holds a backend to cold.Locker and cold.Versioned on a bucket
// created with Object Lock (b opens it under prefix; raw is a root client
// of the same server, playing an administrator who tries to get rid of
// locked bytes behind tierlog's back).
func LockTest(t *testing.T, b cold.Bucket, raw *minio.Client, bucket, prefix string) {
	ctx := context.Background()
	l, ok := b.(cold.Locker)
	if !ok {
		t.Fatalf("%T does not implement cold.Locker", b)
	}
	if on, err := l.LockEnabled(ctx); err != nil || !on {
		t.Fatalf("LockEnabled on a bucket with Object Lock: %v, %v", on, err)
	}
	put := func(key string, data []byte, ret cold.Retention, hold bool) cold.Attributes {
		t.Helper()
		a, err := l.UploadLocked(ctx, key, bytes.NewReader(data), int64(len(data)), ret, hold)
		if err != nil {
			t.Fatalf("UploadLocked %s (%d bytes): %v", key, len(data), err)
		}
		if a.VersionID == "" {
			t.Fatalf("UploadLocked %s: no version id", key)
		}
		return a
	}
	readVersion := func(key, version string) ([]byte, error) {
		rc, err := cold.GetRangeVersion(ctx, b, key, version, 0, -1)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, cold.ErrObjectLocked) || cold.IsRetryable(err) {
			t.Errorf("%s: %v, want ErrObjectLocked, not retryable", what, err)
		}
	}

	t.Run("compliance", func(t *testing.T) {
		until := time.Now().Add(time.Hour).Truncate(time.Second)
		for _, data := range [][]byte{Data(1, 1000), Data(2, cold.MinPartSize+1)} { // one PUT, multipart
			key := "locked/compliance-" + string(rune('a'+len(data)%26))
			a := put(key, data, cold.Retention{Mode: cold.LockCompliance, Until: until}, false)
			if !a.RetainUntil.Equal(until) {
				t.Errorf("RetainUntil %v, want %v", a.RetainUntil, until)
			}
			// A restart adopting an object reads its date from Attributes.
			if got, err := b.Attributes(ctx, key); err != nil || !got.RetainUntil.Equal(until) || got.VersionID != a.VersionID {
				t.Errorf("Attributes: %+v, %v; want version %s retained until %v", got, err, a.VersionID, until)
			}
			ret, hold, err := l.ObjectLock(ctx, key, a.VersionID)
			if err != nil || ret.Mode != cold.LockCompliance || !ret.Until.Equal(until) || hold {
				t.Errorf("ObjectLock: %+v, hold %v, %v; want compliance until %v, no hold", ret, hold, err, until)
			}
			// What an administrator with root credentials may try: delete
			// the version, bypassing governance; overwrite the key.
			obj := prefix + key
			if err := raw.RemoveObject(ctx, bucket, obj, minio.RemoveObjectOptions{VersionID: a.VersionID}); err == nil {
				t.Errorf("root deleted a version under compliance retention")
			}
			if err := raw.RemoveObject(ctx, bucket, obj, minio.RemoveObjectOptions{VersionID: a.VersionID, GovernanceBypass: true}); err == nil {
				t.Errorf("root deleted a version under compliance retention with the governance bypass")
			}
			if _, err := raw.PutObject(ctx, bucket, obj, strings.NewReader("forged"), 6, minio.PutObjectOptions{}); err != nil {
				t.Fatalf("overwrite (a new version): %v", err)
			}
			refused("DeleteVersion under compliance", cold.DeleteVersion(ctx, b, key, a.VersionID))
			// The overwrite is a new version; the recorded one reads as
			// written.
			got, err := readVersion(key, a.VersionID)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("read of the recorded version after an overwrite: %d bytes, %v; want the %d written", len(got), err, len(data))
			}
			if cur, _ := readVersion(key, ""); string(cur) != "forged" {
				t.Errorf("current version %q, want the forged overwrite", cur)
			}
		}
	})

	t.Run("governance", func(t *testing.T) {
		key := "locked/governance"
		a := put(key, []byte("g"), cold.Retention{Mode: cold.LockGovernance, Until: time.Now().Add(time.Hour)}, false)
		refused("DeleteVersion under governance", cold.DeleteVersion(ctx, b, key, a.VersionID))
		// Governance yields to a user allowed to bypass it (root is).
		if err := raw.RemoveObject(ctx, bucket, prefix+key, minio.RemoveObjectOptions{VersionID: a.VersionID, GovernanceBypass: true}); err != nil {
			t.Errorf("root with the governance bypass: %v", err)
		}
	})

	t.Run("legal hold", func(t *testing.T) {
		key := "locked/held"
		a := put(key, []byte("held"), cold.Retention{}, true)
		if _, hold, err := l.ObjectLock(ctx, key, a.VersionID); err != nil || !hold {
			t.Errorf("ObjectLock: hold %v, %v; want on", hold, err)
		}
		refused("DeleteVersion under legal hold", cold.DeleteVersion(ctx, b, key, a.VersionID))
		if err := raw.RemoveObject(ctx, bucket, prefix+key, minio.RemoveObjectOptions{VersionID: a.VersionID, GovernanceBypass: true}); err == nil {
			t.Errorf("root deleted a version under legal hold")
		}
		if err := l.SetLegalHold(ctx, key, a.VersionID, false); err != nil {
			t.Fatal(err)
		}
		if _, hold, err := l.ObjectLock(ctx, key, a.VersionID); err != nil || hold {
			t.Errorf("ObjectLock after release: hold %v, %v", hold, err)
		}
		if err := cold.DeleteVersion(ctx, b, key, a.VersionID); err != nil {
			t.Fatalf("DeleteVersion after the hold is off: %v", err)
		}
		if _, err := readVersion(key, a.VersionID); !errors.Is(err, cold.ErrNotFound) {
			t.Errorf("read of the deleted version: %v, want ErrNotFound", err)
		}
		// On again for a version uploaded without one.
		a = put(key, []byte("later"), cold.Retention{}, false)
		if err := l.SetLegalHold(ctx, key, "", true); err != nil {
			t.Fatal(err)
		}
		refused("DeleteVersion after SetLegalHold on", cold.DeleteVersion(ctx, b, key, a.VersionID))
		if err := l.SetLegalHold(ctx, key, a.VersionID, false); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("current version", func(t *testing.T) {
		// A version id "" names the current version, as it does for
		// SetLegalHold: DeleteVersion then deletes as Delete does (on a
		// versioned bucket, a delete marker hides the key).
		key := "unlocked/current"
		put(key, []byte("plain"), cold.Retention{}, false)
		if err := b.(cold.Versioned).DeleteVersion(ctx, key, ""); err != nil {
			t.Fatalf("DeleteVersion of the current version: %v", err)
		}
		if _, err := readVersion(key, ""); !errors.Is(err, cold.ErrNotFound) {
			t.Errorf("read after DeleteVersion of the current version: %v, want ErrNotFound", err)
		}
	})

	t.Run("retention ends", func(t *testing.T) {
		key := "locked/short"
		until := time.Now().Add(3 * time.Second)
		a := put(key, []byte("short"), cold.Retention{Mode: cold.LockCompliance, Until: until}, false)
		// (Refused for certain only while the date is ahead: the
		// compliance test above shows the refusal; this one the end.)
		if err := cold.DeleteVersion(ctx, b, key, a.VersionID); err == nil && time.Now().Before(until) {
			t.Fatalf("DeleteVersion before the retain-until date succeeded")
		}
		testutil.Eventually(t, 30*time.Second, func() bool { return cold.DeleteVersion(ctx, b, key, a.VersionID) == nil },
			"the version is still refused after its retain-until date")
		if _, err := readVersion(key, a.VersionID); !errors.Is(err, cold.ErrNotFound) {
			t.Errorf("read of the deleted version: %v, want ErrNotFound", err)
		}
	})
}
