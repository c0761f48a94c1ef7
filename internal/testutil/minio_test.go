package testutil

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

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
