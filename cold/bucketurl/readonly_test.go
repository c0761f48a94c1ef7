package bucketurl_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
)

// TestOpenReadOnly: through a read-only bucket of every backend, reads
// work and nothing can change an object, delete it or add one; the
// backend's conditional upload and multipart aborter are not reachable.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "bucket")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := testutil.StartMinIO(t)
	opts := cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}}
	for _, u := range []string{"file://" + dir, m.S3URL(m.Bucket, "s3"), m.MinIOURL(m.Bucket, "minio")} {
		rw, err := bucketurl.Open(ctx, u, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rw.Upload(ctx, "a/obj", strings.NewReader("history"), 7); err != nil {
			t.Fatal(err)
		}
		ro, err := bucketurl.OpenReadOnly(ctx, u, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ro.Upload(ctx, "a/obj", strings.NewReader("rewritten"), 9); !errors.Is(err, cold.ErrReadOnly) {
			t.Errorf("%s: Upload over an object: %v, want ErrReadOnly", u, err)
		}
		if _, err := ro.Upload(ctx, "a/new", strings.NewReader("x"), 1); !errors.Is(err, cold.ErrReadOnly) {
			t.Errorf("%s: Upload of a new object: %v, want ErrReadOnly", u, err)
		}
		if err := ro.Delete(ctx, "a/obj"); !errors.Is(err, cold.ErrReadOnly) {
			t.Errorf("%s: Delete: %v, want ErrReadOnly", u, err)
		}
		if _, isCU := ro.(cold.ConditionalUploader); isCU {
			t.Errorf("%s: a read-only bucket offers conditional uploads", u)
		}
		if _, isMA := ro.(cold.MultipartAborter); isMA {
			t.Errorf("%s: a read-only bucket offers to abort uploads", u)
		}
		rc, err := ro.Get(ctx, "a/obj")
		if err != nil {
			t.Fatalf("%s: Get through the read-only bucket: %v", u, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(got) != "history" {
			t.Errorf("%s: object after refused writes: %q, %v; want %q", u, got, err, "history")
		}
		if ok, err := rw.Exists(ctx, "a/new"); ok || err != nil {
			t.Errorf("%s: a refused upload created an object (exists %v, %v)", u, ok, err)
		}
		var keys []string
		if err := ro.Iter(ctx, "", func(k string) error { keys = append(keys, k); return nil }); err != nil || len(keys) != 1 {
			t.Errorf("%s: Iter: %q, %v; want the one object", u, keys, err)
		}
		if ro.Name() != rw.Name() {
			t.Errorf("read-only Name %s, want %s", ro.Name(), rw.Name())
		}
		ro.Close()
		rw.Close()
	}
	// A missing directory is an error, not an empty bucket created for it.
	missing := filepath.Join(t.TempDir(), "typo")
	if _, err := bucketurl.OpenReadOnly(ctx, "file://"+missing, opts); err == nil || !strings.Contains(err.Error(), "file://"+missing) {
		t.Errorf("OpenReadOnly of a missing directory: %v, want an error naming it", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("OpenReadOnly created %s (stat: %v)", missing, err)
	}
}
