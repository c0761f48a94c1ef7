package bucketurl_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpenEachScheme(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "bucket")
	m := testutil.StartMinIO(t)
	opts := cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}}
	for _, tc := range []struct{ url, want string }{
		{"file://" + dir, "*filebucket.Bucket"},
		{"file://localhost" + dir, "*filebucket.Bucket"},
		{m.S3URL(m.Bucket, "p"), "*s3bucket.Bucket"},
		{m.MinIOURL(m.Bucket, "p"), "*miniobucket.Bucket"},
	} {
		b, err := bucketurl.Open(ctx, tc.url, opts)
		if err != nil {
			t.Errorf("Open(%s): %v", tc.url, err)
			continue
		}
		if got := fmt.Sprintf("%T", b); got != tc.want {
			t.Errorf("Open(%s) = %s, want %s", tc.url, got, tc.want)
		}
		// Name is itself a URL that opens the same bucket.
		again, err := bucketurl.Open(ctx, b.Name(), opts)
		if err != nil {
			t.Errorf("Open(Name() = %s): %v", b.Name(), err)
		} else {
			if again.Name() != b.Name() {
				t.Errorf("Name() of reopened %s is %s", b.Name(), again.Name())
			}
			again.Close()
		}
		b.Close()
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"/var/lib/bucket", "has no scheme"},
		{"gs://bucket/p", `unknown scheme "gs"`},
		{"file://data/bucket", "three slashes"},
		{"file:///tmp/x?sync=false", "no parameters"},
		{"ftp://user:hunter2@host/p", `unknown scheme "ftp"`},
		{"s3://user:hunter2@bucket/p", "credentials do not belong"},
		{"%zz", "invalid URL escape"},
		// A password in a URL that does not parse, or in an endpoint
		// parameter, is not echoed either.
		{"s3://user:hunter2@bucket%zz/p", "invalid URL escape"},
		{"s3://bucket/p?endpoint=http://user:hunter2@host:9000", "credentials do not belong in the endpoint URL"},
		{"s3://bucket/p?endpoint=http://user:hunter2@host:9000&bogus=1", "s3://bucket/p"},
		{"gs://bucket/p?endpoint=http://user:hunter2@host:9000", `unknown scheme "gs"`},
		{"s3://bucket/p?endpoint=http://user:hunter2@host:bad", "is not a URL like http://host:port"},
		{"minio://user:hunter2@host%zz/bucket/p", "invalid URL escape"},
	} {
		_, err := bucketurl.Open(context.Background(), tc.url, cold.Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want an error saying %q", tc.url, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) error shows the password: %v", tc.url, err)
		}
	}
}
