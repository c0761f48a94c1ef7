package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// bucketOutside is a file:// bucket beside (not inside) the data directory,
// so the data directory can be lost while the bucket stays.
func bucketOutside(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bucket")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return "file://" + dir
}

// TestTierUpload: `tier upload` makes every record remote at once - the
// active segment too, which with the default segment.bytes and segment.ms
// would stay local for an hour - and, with local.retention.bytes=0, leaves
// nothing local; tier status right after it says so, without waiting.
// --partition uploads one partition only; a topic that does not tier and a
// bad partition are refused with errors that say why.
func TestTierUpload(t *testing.T) {
	t.Parallel()
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	ok(t, n, "", "topic", "create", "events", "--partitions", "2", "--config", "local.retention.bytes=0")
	lines := tierLines(3000)
	input := joinLines(lines)
	ok(t, n, input, "produce", "events", "--partition", "0", "--batch", "100", "--quiet")
	ok(t, n, "a\nb\n", "produce", "events", "--partition", "1", "--quiet")

	out := ok(t, n, "", "tier", "upload", "events", "--partition", "1")
	if want := "events/1: uploaded offsets 0-1; the bucket holds every offset below 2\n"; out != want {
		t.Errorf("tier upload --partition 1: %q, want %q", out, want)
	}
	st := tierStatus(t, n, "events")
	if len(st.rows) != 2 || st.rows[0]["REMOTE START"] != "-" || st.rows[1]["REMOTE START"] != "0" {
		t.Fatalf("after tier upload --partition 1, want only partition 1 remote:\n%s", st.raw)
	}

	out = ok(t, n, "", "tier", "upload", "events")
	want := "events/0: uploaded offsets 0-2999; the bucket holds every offset below 3000\n" +
		"events/1: nothing to upload; the bucket holds every offset below 2\n"
	if out != want {
		t.Errorf("tier upload: %q, want %q", out, want)
	}
	st = tierStatus(t, n, "events")
	for i, end := range []string{"3000", "2"} {
		r := st.rows[i]
		if r["REMOTE START"] != "0" || r["END"] != end || r["LOCAL START"] != end || r["LOCAL BYTES"] != "0" ||
			r["LOCAL SEGS"] != "1" || r["REMOTE SEGS"] != "1" || r["LAG SEGS"] != "0" {
			t.Errorf("partition %d after tier upload: %v, want every record remote (REMOTE START 0, END %s, one remote segment) and none local", i, r, end)
		}
	}
	if !strings.Contains(st.raw, "Local disk: 0 bytes, 0 not yet uploaded") {
		t.Errorf("tier status after tier upload, want no local bytes:\n%s", st.raw)
	}
	// Read back from the bucket alone (nothing is local).
	if got := ok(t, n, "", "consume", "events", "--partition", "0"); got != input {
		t.Errorf("consume after tier upload: %d bytes, want %d", len(got), len(input))
	}

	ok(t, n, "", "topic", "create", "local", "--config", "remote.storage.enable=false")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"local"}, []string{"remote.storage.enable=false", "FailedPrecondition"}},
		{[]string{"events", "--partition", "2"}, []string{"partitions 0 to 1, not 2", "InvalidArgument"}},
		{[]string{"nope"}, []string{"unknown topic: nope", "NotFound"}},
	} {
		r := cli(t, n, "", append([]string{"tier", "upload"}, c.args...)...)
		for _, w := range c.want {
			if r.code != 1 || !strings.Contains(r.stderr, w) {
				t.Errorf("tier upload %v: exit %d, stderr %q; want 1 and %q", c.args, r.code, r.stderr, w)
			}
		}
	}
	n.signal(syscall.SIGTERM)
}

// TestShutdownUploadThenRestore: after a clean stop (SIGTERM) the data
// directory can be lost: `serve --takeover` on an empty one restores every
// record from the bucket, the tail that sat in the active segment
// included. With --shutdown-upload-timeout 0 the tail stays local and a
// restore has only what was sealed before.
func TestShutdownUploadThenRestore(t *testing.T) {
	t.Parallel()
	lines := tierLines(2000)
	input := joinLines(lines)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"default", nil, input},
		{"off", []string{"--shutdown-upload-timeout", "0"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bucket := bucketOutside(t)
			dataDir := filepath.Join(t.TempDir(), "data")
			n := startNode(t, dataDir, nil, append([]string{"--bucket", bucket}, c.args...)...)
			// The default segment.bytes and segment.ms: every record stays
			// in the active segment until the shutdown.
			ok(t, n, "", "topic", "create", "events")
			ok(t, n, input, "produce", "events", "--batch", "100", "--quiet")
			if code := n.signal(syscall.SIGTERM); code != 0 {
				t.Fatalf("SIGTERM: exit %d", code)
			}
			if c.want != "" && !strings.Contains(n.stderr.String(), "left_local=0") {
				t.Errorf("the shutdown does not log that nothing was left local:\n%s", n.stderr.String())
			}
			if err := os.Rename(dataDir, dataDir+".lost"); err != nil {
				t.Fatal(err)
			}
			n = startNode(t, dataDir, nil, "--bucket", bucket, "--takeover")
			if got := ok(t, n, "", "consume", "events"); got != c.want {
				t.Errorf("consume after a clean stop and a restore into an empty data directory: %d bytes, want %d", len(got), len(c.want))
			}
			n.signal(syscall.SIGTERM)
		})
	}
}

// TestShutdownUploadBucketDown: a bucket failing every PUT cannot hold
// SIGTERM past --shutdown-upload-timeout: the node exits, logs what it left
// local, and loses nothing - restarted on the same data directory against
// the healthy bucket, it uploads the rest and serves every record.
func TestShutdownUploadBucketDown(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	viaProxy := "minio://" + proxy.Addr + "/" + m.Bucket + "/tierlog?secure=false"
	dataDir := filepath.Join(t.TempDir(), "data")
	const bound = 3 * time.Second
	n := startNode(t, dataDir, m.Env(), "--bucket", viaProxy, "--shutdown-upload-timeout", bound.String())
	ok(t, n, "", "topic", "create", "events")
	input := joinLines(tierLines(2000))
	ok(t, n, input, "produce", "events", "--batch", "100", "--quiet")

	down := proxy.Add(faultproxy.Rule{Method: "PUT", Fault: faultproxy.Error, Status: 503})
	start := time.Now()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Without the bound the node would retry the upload for as long as the
	// bucket is down; two minutes only keeps a hung test from hanging.
	select {
	case <-n.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("SIGTERM with the bucket failing every PUT: still running after 2 minutes (bound %v)", bound)
	}
	t.Logf("exited %v after SIGTERM (bound %v), %d PUTs failed", time.Since(start).Round(time.Millisecond), bound, down.Injected())
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	logs := n.stderr.String()
	if down.Injected() == 0 || !strings.Contains(logs, "shutdown: records left local, not in the bucket") ||
		!strings.Contains(logs, "topic=events") || !strings.Contains(logs, "left_local=1") {
		t.Errorf("want the shutdown to try the bucket (%d PUTs failed) and log what it left local:\n%s", down.Injected(), logs)
	}

	n = startNode(t, dataDir, m.Env(), "--bucket", m.MinIOURL(m.Bucket, "tierlog"))
	// The restarted node's daemon may upload the sealed tail before the
	// command asks: either way the bucket must hold every offset.
	out := ok(t, n, "", "tier", "upload", "events")
	if !strings.HasSuffix(out, "the bucket holds every offset below 2000\n") || !strings.HasPrefix(out, "events/0: ") {
		t.Errorf("tier upload after the restart: %q, want the bucket to hold every offset below 2000", out)
	}
	if got := ok(t, n, "", "consume", "events"); got != input {
		t.Errorf("consume after the restart: %d bytes, want %d", len(got), len(input))
	}
	n.signal(syscall.SIGTERM)
}
