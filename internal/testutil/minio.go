package testutil

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

//go:embed minio_version.txt
var minioVersionFile string

// MinIOVersion is the pinned MinIO server version: a Go module version of
// github.com/minio/minio, which `make minio` builds and caches. The
// Makefile reads the same file.
func MinIOVersion() string { return strings.TrimSpace(minioVersionFile) }

// Root credentials of every test MinIO server.
const (
	MinIOAccessKey = "tierlog-test"
	MinIOSecretKey = "tierlog-test-secret"
	// MinIORegion is the region the test server reports.
	MinIORegion = "us-east-1"
)

// MinIO is a real MinIO server run for one test on 127.0.0.1, with a
// throw-away data directory. StartMinIO starts it; the test's cleanup
// stops it.
type MinIO struct {
	// Endpoint is host:port, e.g. "127.0.0.1:41234".
	Endpoint  string
	AccessKey string
	SecretKey string
	// Bucket is a bucket created at start, empty.
	Bucket string
	// DataDir holds the server's data: on drives d1, d2, ... below it
	// for a server started by StartErasureMinIO.
	DataDir string
	drives  int

	client  *minio.Client
	buckets atomic.Int64
	logPath string
	pid     int
}

// MinIOBinary finds the MinIO server binary: $TIERLOG_MINIO_BIN (which
// `make test` exports), else the cache that `make minio` fills,
// ${TIERLOG_CACHE_DIR:-$HOME/.cache/tierlog}/minio-<version>/minio. It
// returns an error saying how to get one.
func MinIOBinary() (string, error) {
	if bin := os.Getenv("TIERLOG_MINIO_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("TIERLOG_MINIO_BIN=%s: %w (run `make minio` to build it)", bin, err)
		}
		return bin, nil
	}
	cache := os.Getenv("TIERLOG_CACHE_DIR")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no MinIO server binary: TIERLOG_MINIO_BIN and TIERLOG_CACHE_DIR are unset and there is no home directory (%v); run `make test` or `make minio`", err)
		}
		cache = filepath.Join(home, ".cache", "tierlog")
	}
	bin := filepath.Join(cache, "minio-"+MinIOVersion(), "minio")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no MinIO server binary at %s and TIERLOG_MINIO_BIN is unset: run `make test` (or `make minio` once, then `go test`)", bin)
	}
	return bin, nil
}

// StartMinIO starts a MinIO server for t and waits until it is live and
// its Bucket exists. It fails t (never skips) when the binary is missing:
// the S3 and MinIO backends must be tested against the real thing.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	return startMinIO(t, 1)
}

// StartErasureMinIO is StartMinIO of a server in erasure mode on drives
// directories DataDir/d1 ... (4 make one set with 2 parity drives: a write
// needs 3), for tests that take drives away as production loses them.
func StartErasureMinIO(t testing.TB, drives int) *MinIO {
	t.Helper()
	return startMinIO(t, drives)
}

func startMinIO(t testing.TB, drives int) *MinIO {
	t.Helper()
	bin, err := MinIOBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m := &MinIO{
		AccessKey: MinIOAccessKey,
		SecretKey: MinIOSecretKey,
		DataDir:   filepath.Join(dir, "data"),
		logPath:   filepath.Join(dir, "minio.log"),
		drives:    drives,
	}
	// A port picked free may be taken before the server binds it; then
	// try again with another.
	var lastErr error
	for range 3 {
		if lastErr = m.start(t, bin, dir); lastErr == nil {
			break
		}
		// MinIO says "port is already in use" in its log.
		if !strings.Contains(m.logTail(), "already in use") {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("start MinIO (%s): %v\n%s", bin, lastErr, m.logTail())
	}
	m.client, err = minio.New(m.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Region: MinIORegion,
	})
	if err != nil {
		t.Fatalf("MinIO client: %v", err)
	}
	m.Bucket = m.NewBucket(t)
	if err := m.waitIAM(30 * time.Second); err != nil {
		t.Fatalf("MinIO %s: %v\n%s", m.Endpoint, err, m.logTail())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("MinIO log (%s):\n%s", m.Endpoint, m.logTail())
		}
	})
	return m
}

func (m *MinIO) start(t testing.TB, bin, dir string) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	console, err := freeAddr()
	if err != nil {
		return err
	}
	logf, err := os.Create(m.logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	data := m.DataDir
	if m.drives > 1 {
		data = filepath.Join(m.DataDir, fmt.Sprintf("d{1...%d}", m.drives))
	}
	cmd := exec.Command(bin, "server", "--address", addr, "--console-address", console,
		"--certs-dir", filepath.Join(dir, "certs"), data)
	cmd.Env = append(cleanEnv(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=on",
		"MINIO_REGION="+MinIORegion,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	m.pid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	m.Endpoint = addr
	if err := waitLive(addr, exited, 60*time.Second); err != nil {
		stop()
		return err
	}
	t.Cleanup(stop)
	return nil
}

// waitLive polls the liveness endpoint until it answers 200, the process
// exits, or timeout passes.
func waitLive(addr string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get("http://" + addr + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the server exited before it was live")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not live at http://%s/minio/health/live after %v (last: %v)", addr, timeout, err)
		}
	}
}

// cleanEnv is the environment without MINIO_ and AWS_ variables, so a
// developer's settings cannot change the test server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MINIO_") && !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return env
}

func (m *MinIO) logTail() string {
	data, _ := os.ReadFile(m.logPath)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitIAM waits until the server checks access keys. The root user works
// as soon as MinIO is live, but any other key gets 503
// XMinioIAMNotInitialized until its IAM subsystem has started, which turned
// tests of wrong credentials into flakes on a loaded machine.
func (m *MinIO) waitIAM(timeout time.Duration) error {
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4("tierlog-unknown-key", "tierlog-unknown-secret", ""),
		Region: MinIORegion,
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = nil
		// A LIST, not a HEAD: only a response with a body names the error.
		for obj := range c.ListObjects(ctx, m.Bucket, minio.ListObjectsOptions{MaxKeys: 1}) {
			if obj.Err != nil {
				err = obj.Err
			}
		}
		cancel()
		if code := minio.ToErrorResponse(err).Code; code != "XMinioIAMNotInitialized" && code != "XMinioServerNotInitialized" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("IAM not initialized after %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a server that says "try again"
	}
}

// NewBucket creates another empty bucket on the server and returns its
// name, so tests sharing a server do not see each other's keys.
func (m *MinIO) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("tierlog-test-%d", m.buckets.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: MinIORegion}); err != nil {
		t.Fatalf("MinIO %s: create bucket %s: %v", m.Endpoint, name, err)
	}
	return name
}

// NewLockedBucket creates another empty bucket with S3 Object Lock enabled
// (which turns on versioning) and returns its name. The server runs in
// MinIO's single-drive xl-single mode on a fresh data directory, which
// supports versioning and Object Lock; the older single-drive "fs" mode
// refused both.
func (m *MinIO) NewLockedBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("tierlog-locked-%d", m.buckets.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.client.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: MinIORegion, ObjectLocking: true}); err != nil {
		t.Fatalf("MinIO %s: create bucket %s with Object Lock: %v", m.Endpoint, name, err)
	}
	return name
}

// Restricted returns temporary credentials (MinIO's STS AssumeRole) that
// may do only the S3 actions named (e.g. "s3:GetObject") on bucket and its
// objects: the credentials an operator following a documented permission
// list would give a node. Good for an hour.
func (m *MinIO) Restricted(t testing.TB, bucket string, actions ...string) (accessKey, secretKey, sessionToken string) {
	t.Helper()
	quoted := make([]string, len(actions))
	for i, a := range actions {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[%s],"Resource":["arn:aws:s3:::%s","arn:aws:s3:::%s/*"]}]}`,
		strings.Join(quoted, ","), bucket, bucket)
	creds, err := credentials.NewSTSAssumeRole(m.URL(), credentials.STSAssumeRoleOptions{
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, Policy: policy, Location: MinIORegion, DurationSeconds: 3600,
	})
	if err != nil {
		t.Fatalf("MinIO %s: assume role: %v", m.Endpoint, err)
	}
	v, err := creds.GetWithContext(nil)
	if err != nil {
		t.Fatalf("MinIO %s: assume role with actions %v: %v", m.Endpoint, actions, err)
	}
	return v.AccessKeyID, v.SecretAccessKey, v.SessionToken
}

// URL is the server's base URL, http://host:port.
func (m *MinIO) URL() string { return "http://" + m.Endpoint }

// MinIOURL is the minio:// bucket URL of bucket and prefix on this server.
func (m *MinIO) MinIOURL(bucket, prefix string) string {
	return (&url.URL{Scheme: "minio", Host: m.Endpoint, Path: "/" + bucket + "/" + prefix, RawQuery: "secure=false"}).String()
}

// S3URL is the s3:// bucket URL of bucket and prefix on this server.
func (m *MinIO) S3URL(bucket, prefix string) string {
	q := url.Values{"endpoint": {m.URL()}, "path_style": {"true"}, "region": {MinIORegion}}
	return (&url.URL{Scheme: "s3", Host: bucket, Path: "/" + prefix, RawQuery: q.Encode()}).String()
}

// Env is the environment a process needs to reach this server with either
// backend's usual credential sources.
func (m *MinIO) Env() []string {
	return []string{
		"MINIO_ACCESS_KEY=" + m.AccessKey, "MINIO_SECRET_KEY=" + m.SecretKey,
		"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey,
		"AWS_REGION=" + MinIORegion,
	}
}

// Client is a minio-go client of the server with root credentials, for
// tests that look behind a backend's back.
func (m *MinIO) Client() *minio.Client { return m.client }

// CPU is the processor time (user + system) the server has used so far,
// for benchmarks that report what the server, not tierlog, spent.
func (m *MinIO) CPU() (time.Duration, error) {
	return ProcessCPU(m.pid)
}
