package miniobucket_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/coldtest"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func creds(m *testutil.MinIO) *cold.Credentials {
	return &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}
}

func open(t *testing.T, rawURL string, opts cold.Options) *miniobucket.Bucket {
	t.Helper()
	b, err := miniobucket.Open(context.Background(), rawURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestAcceptance(t *testing.T) {
	m := testutil.StartMinIO(t)
	t.Run("with prefix", func(t *testing.T) {
		coldtest.AcceptanceTest(t, open(t, m.MinIOURL(m.Bucket, "tier/prod"), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}))
	})
	t.Run("bucket root", func(t *testing.T) {
		coldtest.AcceptanceTest(t, open(t, m.MinIOURL(m.NewBucket(t), ""), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}))
	})
}

// Credentials from each environment pair, in the documented order.
func TestCredentialsFromEnvironment(t *testing.T) {
	m := testutil.StartMinIO(t)
	pairs := [][2]string{
		{"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"},
		{"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
		{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
	}
	for i, pair := range pairs {
		t.Run(pair[0], func(t *testing.T) {
			for _, p := range pairs {
				t.Setenv(p[0], "")
				t.Setenv(p[1], "")
			}
			t.Setenv(pair[0], m.AccessKey)
			t.Setenv(pair[1], m.SecretKey)
			// A later pair with wrong values must not win.
			for _, later := range pairs[i+1:] {
				t.Setenv(later[0], "wrong")
				t.Setenv(later[1], "wrong-secret")
			}
			b := open(t, m.MinIOURL(m.Bucket, "env"), cold.Options{})
			if _, err := b.Upload(context.Background(), "k", strings.NewReader("v"), 1); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		for _, p := range pairs {
			t.Setenv(p[0], "")
			t.Setenv(p[1], "")
		}
		_, err := miniobucket.Open(context.Background(), m.MinIOURL(m.Bucket, ""), cold.Options{})
		if err == nil || !strings.Contains(err.Error(), "MINIO_ACCESS_KEY") {
			t.Errorf("Open without credentials: %v, want an error naming the variables", err)
		}
	})
}

func TestAbortIncompleteUploads(t *testing.T) {
	m := testutil.StartMinIO(t)
	b := open(t, m.MinIOURL(m.Bucket, "p"), cold.Options{Credentials: creds(m)})
	ctx := context.Background()
	key := "t/0/00000000000000000000-1-abc.seg"
	core := &minio.Core{Client: m.Client()}
	if _, err := core.NewMultipartUpload(ctx, m.Bucket, "p/"+key, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if n, err := b.AbortIncompleteUploads(ctx, key, time.Hour); err != nil || n != 0 {
		t.Errorf("abort uploads older than an hour: %d, %v; want 0", n, err)
	}
	if n, err := b.AbortIncompleteUploads(ctx, key, 0); err != nil || n != 1 {
		t.Errorf("abort uploads older than 0: %d, %v; want 1", n, err)
	}
	if n, err := b.AbortIncompleteUploads(ctx, key, 0); err != nil || n != 0 {
		t.Errorf("abort again: %d, %v; want 0", n, err)
	}
}

func TestOpenErrors(t *testing.T) {
	m := testutil.StartMinIO(t)
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()
	fast := cold.Options{OpenTimeout: 5 * time.Second, MaxAttempts: 1}
	wrong := fast
	wrong.Credentials = &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: "not-the-secret-xyzzy"}
	unknownKey := fast
	unknownKey.Credentials = &cold.Credentials{AccessKeyID: "nobody", SecretAccessKey: "not-the-secret-xyzzy"}
	good := fast
	good.Credentials = creds(m)
	// Plain HTTP servers where the S3 port should be: a 404 page for
	// every path (like tierlog's own --http-addr) and a web app answering
	// 200 with HTML (like a store's console).
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	console := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<!doctype html><html><body>console</body></html>"))
	}))
	defer console.Close()
	for _, tc := range []struct {
		name, url string
		opts      cold.Options
		want      string
	}{
		{"wrong secret", m.MinIOURL(m.Bucket, ""), wrong, "wrong credentials"},
		{"unknown access key", m.MinIOURL(m.Bucket, ""), unknownKey, "wrong credentials"},
		{"missing bucket", m.MinIOURL("no-such-bucket", ""), good, `bucket "no-such-bucket" does not exist`},
		{"404 page, not S3", "minio://" + strings.TrimPrefix(notFound.URL, "http://") + "/bucket/p?secure=false", good, "does not speak S3"},
		{"web console, not S3", "minio://" + strings.TrimPrefix(console.URL, "http://") + "/bucket/p?secure=false", good, "does not speak S3"},
		{"unreachable", "minio://" + closedPort + "/bucket/p?secure=false", good, "endpoint unreachable"},
		{"invalid bucket name", m.MinIOURL("b", ""), good, `invalid bucket name "b"`},
		{"unknown parameter", "minio://h:9000/bucket/p?secrue=false", good, `unknown parameter "secrue"`},
		{"secret in URL", "minio://key:topsecret@h:9000/bucket", good, "credentials do not belong in the URL"},
		{"no bucket", "minio://h:9000/", good, "no bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := miniobucket.Open(ctx, tc.url, tc.opts)
			if err == nil {
				b.Close()
				t.Fatalf("Open(%s) succeeded", tc.url)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("Open(%s) = %q, want it to say %q", tc.url, msg, tc.want)
			}
			if strings.Contains(msg, "xyzzy") || strings.Contains(msg, "topsecret") || strings.Contains(msg, m.SecretKey) {
				t.Errorf("error shows a secret: %q", msg)
			}
			if !strings.Contains(msg, "minio://") {
				t.Errorf("error does not name the bucket URL: %q", msg)
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	c, err := miniobucket.ParseURL("minio://minio.local:9000/logs/tier/prod?secure=false&region=eu-1")
	if err != nil {
		t.Fatal(err)
	}
	want := miniobucket.Config{Endpoint: "minio.local:9000", Bucket: "logs", Prefix: "tier/prod/", Region: "eu-1"}
	if c != want {
		t.Errorf("ParseURL = %+v, want %+v", c, want)
	}
	again, err := miniobucket.ParseURL(c.URL())
	if err != nil || again != c {
		t.Errorf("ParseURL(URL()) = %+v, %v; want %+v", again, err, c)
	}
	if c, err := miniobucket.ParseURL("minio://h:1/bucket"); err != nil || !c.Secure || c.Prefix != "" {
		t.Errorf("defaults: %+v, %v; want secure, no prefix", c, err)
	}
}

// minio-go's error responses are classified by their status and code.
func TestResponseErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		resp minio.ErrorResponse
		want bool
	}{
		{minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, true},
		{minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, true},
		{minio.ErrorResponse{StatusCode: 503, Code: "XMinioServerNotInitialized"}, true},
		{minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"}, false},
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchKey"}, false},
		{minio.ErrorResponse{StatusCode: 400, Code: "RequestTimeout"}, true},
	} {
		err := fmt.Errorf("op: %w", &miniobucket.ResponseError{Resp: tc.resp})
		if got := cold.IsRetryable(err); got != tc.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", err, got, tc.want)
		}
		var resp minio.ErrorResponse
		if !errors.As(err, &resp) || resp.Code != tc.resp.Code {
			t.Errorf("errors.As(%v) does not find the minio.ErrorResponse", err)
		}
	}
}

func TestVersionedBucket(t *testing.T) {
	m := testutil.StartMinIO(t)
	if err := m.Client().EnableVersioning(context.Background(), m.Bucket); err != nil {
		t.Fatalf("enable versioning: %v", err)
	}
	coldtest.VersioningTest(t, open(t, m.MinIOURL(m.Bucket, "v"), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}))
}

// Null versions and delete markers of a bucket whose versioning was turned
// on late (see coldtest.NullVersionTest).
func TestNullVersions(t *testing.T) {
	m := testutil.StartMinIO(t)
	coldtest.NullVersionTest(t, m, func(t *testing.T, bucket string, c *cold.Credentials) cold.Bucket {
		return open(t, m.MinIOURL(bucket, "n"), cold.Options{Credentials: c})
	})
}

// A conditional upload to a bucket deleted after open is not a failed
// precondition (see coldtest.MissingBucketTest).
func TestConditionalUploadToMissingBucket(t *testing.T) {
	m := testutil.StartMinIO(t)
	name := m.NewBucket(t)
	b := open(t, m.MinIOURL(name, ""), cold.Options{Credentials: creds(m), MaxAttempts: 1})
	if err := m.Client().RemoveBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	coldtest.MissingBucketTest(t, b)
}

func TestObjectLock(t *testing.T) {
	m := testutil.StartMinIO(t)
	locked := m.NewLockedBucket(t)
	coldtest.LockTest(t, open(t, m.MinIOURL(locked, "p/"), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}), m.Client(), locked, "p/")
	plain := open(t, m.MinIOURL(m.Bucket, ""), cold.Options{Credentials: creds(m)})
	if on, err := plain.LockEnabled(context.Background()); on || err != nil {
		t.Errorf("LockEnabled on a bucket without Object Lock: %v, %v", on, err)
	}
}
