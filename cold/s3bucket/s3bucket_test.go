package s3bucket_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/minio/minio-go/v7"
	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/coldtest"
	"github.com/tierlog/tierlog/cold/s3bucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func creds(m *testutil.MinIO) *cold.Credentials {
	return &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}
}

func open(t *testing.T, rawURL string, opts cold.Options) *s3bucket.Bucket {
	t.Helper()
	b, err := s3bucket.Open(context.Background(), rawURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestAcceptance(t *testing.T) {
	m := testutil.StartMinIO(t)
	t.Run("with prefix", func(t *testing.T) {
		coldtest.AcceptanceTest(t, open(t, m.S3URL(m.Bucket, "tier/prod"), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}))
	})
	t.Run("bucket root", func(t *testing.T) {
		coldtest.AcceptanceTest(t, open(t, m.S3URL(m.NewBucket(t), ""), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}))
	})
}

// Credentials from the SDK's environment chain, as a server takes them.
func TestCredentialsFromEnvironment(t *testing.T) {
	m := testutil.StartMinIO(t)
	t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	b := open(t, m.S3URL(m.Bucket, "env"), cold.Options{})
	if _, err := b.Upload(context.Background(), "k", strings.NewReader("v"), 1); err != nil {
		t.Fatal(err)
	}
}

func TestKeysLiveUnderThePrefix(t *testing.T) {
	m := testutil.StartMinIO(t)
	b := open(t, m.S3URL(m.Bucket, "a/b"), cold.Options{Credentials: creds(m)})
	ctx := context.Background()
	if _, err := b.Upload(ctx, "t/0/seg", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	var raw []string
	for o := range m.Client().ListObjects(ctx, m.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		raw = append(raw, o.Key)
	}
	if len(raw) != 1 || raw[0] != "a/b/t/0/seg" {
		t.Errorf("objects in the bucket: %q, want [a/b/t/0/seg]", raw)
	}
	// Another prefix sees nothing of it.
	other := open(t, m.S3URL(m.Bucket, "a/bc"), cold.Options{Credentials: creds(m)})
	if err := other.Iter(ctx, "", func(k string) error { return errors.New("saw " + k) }); err != nil {
		t.Error(err)
	}
}

func TestAbortIncompleteUploads(t *testing.T) {
	m := testutil.StartMinIO(t)
	b := open(t, m.S3URL(m.Bucket, "p"), cold.Options{Credentials: creds(m)})
	ctx := context.Background()
	// MinIO lists multipart uploads only for an exact object name (not by
	// prefix), so the daemon aborts by key: it knows the keys it started.
	key := "t/0/00000000000000000000-1-abc.seg"
	out, err := b.Client().CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(m.Bucket), Key: aws.String("p/" + key)})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := b.AbortIncompleteUploads(ctx, "t/", 0); err != nil {
		t.Errorf("abort by prefix: %v", err)
	} else {
		t.Logf("abort by directory prefix found %d", n)
	}
	if n, err := b.AbortIncompleteUploads(ctx, key, time.Hour); err != nil || n != 0 {
		t.Errorf("abort uploads older than an hour: %d, %v; want 0", n, err)
	}
	if n, err := b.AbortIncompleteUploads(ctx, key, 0); err != nil || n != 1 {
		t.Errorf("abort uploads older than 0: %d, %v; want 1", n, err)
	}
	_, err = b.Client().UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(m.Bucket), Key: aws.String("p/" + key),
		UploadId: out.UploadId, PartNumber: aws.Int32(1), Body: bytes.NewReader([]byte("x"))})
	if err == nil {
		t.Errorf("upload part after abort succeeded")
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
		{"wrong secret", m.S3URL(m.Bucket, ""), wrong, "wrong credentials"},
		{"unknown access key", m.S3URL(m.Bucket, ""), unknownKey, "wrong credentials"},
		{"missing bucket", m.S3URL("no-such-bucket", ""), good, `bucket "no-such-bucket" does not exist`},
		{"404 page, not S3", "s3://b/p?endpoint=" + notFound.URL + "&path_style=true", good, "does not speak S3"},
		{"web console, not S3", "s3://b/p?endpoint=" + console.URL + "&path_style=true", good, "does not speak S3"},
		{"unreachable", "s3://b/p?endpoint=http://" + closedPort + "&path_style=true&region=us-east-1", good, "endpoint unreachable"},
		{"unknown parameter", "s3://b/p?regoin=x", good, `unknown parameter "regoin"`},
		{"secret in URL", "s3://key:topsecret@b/p", good, "credentials do not belong in the URL"},
		{"bad path_style", "s3://b/p?path_style=maybe", good, "path_style"},
		{"no bucket", "s3:///p", good, "no bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := s3bucket.Open(ctx, tc.url, tc.opts)
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
			if !strings.Contains(msg, "s3://") {
				t.Errorf("error does not name the bucket URL: %q", msg)
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	c, err := s3bucket.ParseURL("s3://logs/tier/prod/?region=eu-west-1&endpoint=minio.local:9000&path_style=true")
	if err != nil {
		t.Fatal(err)
	}
	want := s3bucket.Config{Bucket: "logs", Prefix: "tier/prod/", Region: "eu-west-1", Endpoint: "https://minio.local:9000", PathStyle: true}
	if c != want {
		t.Errorf("ParseURL = %+v, want %+v", c, want)
	}
	again, err := s3bucket.ParseURL(c.URL())
	if err != nil || again != c {
		t.Errorf("ParseURL(URL()) = %+v, %v; want %+v", again, err, c)
	}
	if _, err := s3bucket.ParseURL("s3://logs/../x"); err == nil {
		t.Errorf("a prefix with .. parsed")
	}
}

func TestVersionedBucket(t *testing.T) {
	m := testutil.StartMinIO(t)
	if err := m.Client().EnableVersioning(context.Background(), m.Bucket); err != nil {
		t.Fatalf("enable versioning: %v", err)
	}
	coldtest.VersioningTest(t, open(t, m.S3URL(m.Bucket, "v"), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}))
}

// Null versions and delete markers of a bucket whose versioning was turned
// on late (see coldtest.NullVersionTest).
func TestNullVersions(t *testing.T) {
	m := testutil.StartMinIO(t)
	coldtest.NullVersionTest(t, m, func(t *testing.T, bucket string, c *cold.Credentials) cold.Bucket {
		return open(t, m.S3URL(bucket, "n"), cold.Options{Credentials: c})
	})
}

// Without any credentials the error says where to put them, quickly.
func TestOpenWithoutCredentials(t *testing.T) {
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	_, err := s3bucket.Open(context.Background(), "s3://bucket/p?endpoint=http://127.0.0.1:1&region=us-east-1", cold.Options{})
	if err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") || !strings.Contains(err.Error(), "s3://bucket/p/") {
		t.Errorf("Open without credentials: %v, want an error naming the URL and AWS_ACCESS_KEY_ID", err)
	}
	t.Log(err)
}

// With an endpoint (a store that is not AWS) the EC2 metadata service is
// not asked for credentials: a stand-in for it sees no request, and the
// error still says where credentials go.
func TestOpenWithEndpointSkipsIMDS(t *testing.T) {
	var asked atomic.Int64
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		asked.Add(1)
		w.WriteHeader(http.StatusForbidden)
	}))
	defer imds.Close()
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_EC2_METADATA_DISABLED"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)
	_, err := s3bucket.Open(context.Background(), "s3://bucket/p?endpoint=http://127.0.0.1:1&path_style=true", cold.Options{})
	if err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("Open without credentials: %v, want an error naming AWS_ACCESS_KEY_ID", err)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the EC2 metadata service was asked %d times for a bucket at an endpoint", n)
	}
	t.Log(err)
}

// A conditional upload to a bucket deleted after open is not a failed
// precondition (see coldtest.MissingBucketTest).
func TestConditionalUploadToMissingBucket(t *testing.T) {
	m := testutil.StartMinIO(t)
	name := m.NewBucket(t)
	b := open(t, m.S3URL(name, ""), cold.Options{Credentials: creds(m), MaxAttempts: 1})
	if err := m.Client().RemoveBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	coldtest.MissingBucketTest(t, b)
}

func TestObjectLock(t *testing.T) {
	m := testutil.StartMinIO(t)
	locked := m.NewLockedBucket(t)
	coldtest.LockTest(t, open(t, m.S3URL(locked, "p/"), cold.Options{PartSize: cold.MinPartSize, Credentials: creds(m)}), m.Client(), locked, "p/")
	plain := open(t, m.S3URL(m.Bucket, ""), cold.Options{Credentials: creds(m)})
	if on, err := plain.LockEnabled(context.Background()); on || err != nil {
		t.Errorf("LockEnabled on a bucket without Object Lock: %v, %v", on, err)
	}
}

// roundTripFunc is an http.RoundTripper from a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestCurrentVersionSendsNoVersionID: a version id "" names the current
// version, so no request carries an empty versionId parameter (which S3
// refuses as an invalid version id; MinIO takes it for the current one).
func TestCurrentVersionSendsNoVersionID(t *testing.T) {
	m := testutil.StartMinIO(t)
	var empty atomic.Value // the last request with versionId=""
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if q := r.URL.Query(); q.Has("versionId") && q.Get("versionId") == "" {
			empty.Store(r.Method + " " + r.URL.String())
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	ctx := context.Background()
	b := open(t, m.S3URL(m.NewLockedBucket(t), "v/"), cold.Options{Credentials: creds(m), Transport: tr})
	if _, err := b.Upload(ctx, "k", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.ObjectLock(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	if rc, err := b.GetRangeVersion(ctx, "k", "", 0, -1); err != nil {
		t.Fatal(err)
	} else {
		rc.Close()
	}
	if err := b.DeleteVersion(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	if req := empty.Load(); req != nil {
		t.Errorf("%s: an empty versionId sent for the current version", req)
	}
}
