package testutil

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartMinIO(t *testing.T) {
	var m *MinIO
	t.Run("run", func(t *testing.T) {
		m = StartMinIO(t)
		ctx := context.Background()
		ok, err := m.Client().BucketExists(ctx, m.Bucket)
		if err != nil || !ok {
			t.Fatalf("bucket %s: exists %v, %v", m.Bucket, ok, err)
		}
		other := m.NewBucket(t)
		if other == m.Bucket {
			t.Errorf("NewBucket returned the start bucket %s again", other)
		}
		if u := m.MinIOURL("b", "p/q"); u != "minio://"+m.Endpoint+"/b/p/q?secure=false" {
			t.Errorf("MinIOURL = %s", u)
		}
		if u := m.S3URL("b", "p"); !strings.HasPrefix(u, "s3://b/p?") || !strings.Contains(u, "path_style=true") {
			t.Errorf("S3URL = %s", u)
		}
	})
	// The subtest's cleanup stopped the server.
	resp, err := http.Get(m.URL() + "/minio/health/live")
	if err == nil {
		resp.Body.Close()
		t.Errorf("MinIO still answers after its test ended")
	}
	if _, err := os.Stat(m.DataDir); !os.IsNotExist(err) {
		t.Errorf("data dir %s still there: %v", m.DataDir, err)
	}
}

// TestNewLockedBucket checks that the pinned server, as StartMinIO runs
// it, keeps a locked object: a version under retention cannot be deleted.
func TestNewLockedBucket(t *testing.T) {
	m := StartMinIO(t)
	ctx := context.Background()
	name := m.NewLockedBucket(t)
	_, mode, _, _, err := m.Client().GetObjectLockConfig(ctx, name)
	if err != nil {
		t.Fatalf("object lock config of %s: %v", name, err)
	}
	if mode != nil {
		t.Errorf("default retention mode %v, want none", *mode)
	}
	if _, _, _, _, err := m.Client().GetObjectLockConfig(ctx, m.Bucket); err == nil {
		t.Errorf("the plain bucket %s has an object lock config", m.Bucket)
	}
	until := time.Now().Add(time.Hour)
	compliance := minio.Compliance
	info, err := m.Client().PutObject(ctx, name, "k", strings.NewReader("x"), 1,
		minio.PutObjectOptions{Mode: compliance, RetainUntilDate: until})
	if err != nil {
		t.Fatalf("put with retention: %v", err)
	}
	if info.VersionID == "" {
		t.Errorf("no version id from a locked bucket")
	}
	err = m.Client().RemoveObject(ctx, name, "k", minio.RemoveObjectOptions{VersionID: info.VersionID})
	if err == nil {
		t.Errorf("deleted a version under compliance retention")
	}
}

func TestMinIOBinaryMissing(t *testing.T) {
	t.Setenv("TIERLOG_MINIO_BIN", "")
	t.Setenv("TIERLOG_CACHE_DIR", t.TempDir())
	_, err := MinIOBinary()
	if err == nil || !strings.Contains(err.Error(), "make test") {
		t.Errorf("MinIOBinary with an empty cache: %v, want an error saying to run make test", err)
	}
	t.Setenv("TIERLOG_MINIO_BIN", "/nonexistent/minio")
	if _, err := MinIOBinary(); err == nil || !strings.Contains(err.Error(), "make minio") {
		t.Errorf("MinIOBinary with a wrong TIERLOG_MINIO_BIN: %v", err)
	}
}
