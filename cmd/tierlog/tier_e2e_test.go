package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// tierTopicConfig makes a topic tier quickly: 64 KiB segments, rolled after
// a second even when not full (so the last records reach the bucket too),
// and nothing kept locally once uploaded.
var tierTopicConfig = []string{"--config", "segment.bytes=65536", "--config", "segment.ms=1000",
	"--config", "local.retention.bytes=0"}

// TestTieringMinIO is the tour a new user takes with MinIO: serve with a
// minio:// bucket, produce enough to make many segments, watch tier status
// move them to the bucket and empty the local disk, consume everything
// back from the bucket byte for byte; then lose the data directory and
// read the whole history again from the bucket alone.
func TestTieringMinIO(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	tierRoundTrip(t, m, m.MinIOURL(m.Bucket, "tierlog"), 20_000)
}

// TestTieringS3 takes the same tour through the s3:// backend
// (aws-sdk-go-v2) against the same kind of server, with less data.
func TestTieringS3(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	tierRoundTrip(t, m, m.S3URL(m.Bucket, "tierlog"), 5_000)
}

func tierRoundTrip(t *testing.T, m *testutil.MinIO, bucketURL string, nLines int) {
	start := time.Now()
	dataDir := filepath.Join(t.TempDir(), "data")
	env := m.Env()
	n := startNode(t, dataDir, env, "--bucket", bucketURL)
	createTiered(t, n, "events")

	lines := tierLines(nLines)
	input := joinLines(lines)
	// Batches of 100 records (~10 KiB) make several batches per segment.
	// --quiet prints nothing; the records are counted below (end offsets).
	if out := ok(t, n, input, "produce", "events", "--batch", "100", "--quiet"); out != "" {
		t.Fatalf("produce: %q", out)
	}
	end := int64(nLines)
	st := tierStatus(t, n, "events")
	checkTierStatusColumns(t, st)
	if !strings.Contains(st.bucket, m.Endpoint) || !strings.Contains(st.bucket, m.Bucket+"/tierlog/") ||
		strings.Contains(st.raw, m.SecretKey) {
		t.Errorf("tier status bucket line %q: want the URL naming %s and bucket %s, without the secret", st.bucket, m.Endpoint, m.Bucket)
	}
	t.Logf("%v: produced %d records", time.Since(start).Round(time.Millisecond), end)
	row := waitAllTiered(t, n, "events", end)
	remoteSegs, _ := row.int("REMOTE SEGS")
	rawBytes, _ := row.int("RAW BYTES")
	if minSegs := int64(len(input)) / 65536; remoteSegs < minSegs {
		t.Errorf("%d remote segments for %d bytes of records in 64 KiB segments, want at least %d", remoteSegs, len(input), minSegs)
	}
	if rawBytes < int64(len(input)) {
		t.Errorf("remote segments hold %d bytes, less than the %d bytes of record values", rawBytes, len(input))
	}
	// The disk comes to agree with tier status: only the empty active
	// segment. Retention drops segments from the log before it unlinks
	// their files, so status can be ahead of the disk for a moment (an
	// unlink waits on the journal while other tests fsync).
	eventually(t, "local segment files deleted", func() error {
		if got := localLogFiles(t, dataDir); got != 1 {
			return fmt.Errorf("%d segment files on local disk, want 1 (the active one)", got)
		}
		return nil
	})
	t.Logf("%v: tiered %d records into %d remote segments (%s bytes stored, %s raw)", time.Since(start).Round(time.Millisecond),
		end, remoteSegs, row["REMOTE BYTES"], row["RAW BYTES"])

	// Every record comes back from the bucket, byte for byte.
	if got := ok(t, n, "", "consume", "events"); got != input {
		t.Fatalf("consume from the bucket differs from the input: %d bytes, want %d", len(got), len(input))
	}
	// A start in the middle of the remote history.
	mid := nLines / 2
	if got := ok(t, n, "", "consume", "events", "--offset", fmt.Sprint(mid), "--max", "3"); got != joinLines(lines[mid:mid+3]) {
		t.Errorf("consume --offset %d --max 3: %q, want %q", mid, got, joinLines(lines[mid:mid+3]))
	}
	if strings.Contains(n.stderr.String(), m.SecretKey) {
		t.Errorf("the server log holds the secret key")
	}
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}

	// Lose the disk: a new node on an empty data directory and the same
	// bucket takes the prefix over (its owner is gone), restores the topic
	// and serves its whole history.
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	// Without --takeover the prefix's recorded owner keeps it: refused.
	if r, _ := serveFails(t, env, "--bucket", bucketURL); !strings.Contains(r.stderr, "is owned by node") || !strings.Contains(r.stderr, "--takeover") {
		t.Errorf("a new node on an owned prefix: exit %d, want a refusal naming the owner and --takeover:\n%s", r.code, r.stderr)
	}
	n = startNode(t, dataDir, env, "--bucket", bucketURL, "--takeover")
	t.Logf("%v: restarted on an empty data directory", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(n.stderr.String(), "restoring topic from the bucket") {
		t.Errorf("the restarted node does not log that it restores the topic")
	}
	if got := ok(t, n, "", "consume", "events"); got != input {
		t.Fatalf("consume after restore from the bucket differs from the input: %d bytes, want %d", len(got), len(input))
	}
	desc := ok(t, n, "", "topic", "describe", "events")
	for _, w := range []string{"segment.bytes=65536", "local.retention.bytes=0"} {
		if !strings.Contains(desc, w) {
			t.Errorf("restored topic config lacks %s:\n%s", w, desc)
		}
	}
	row2, err := tierStatus(t, n, "events").partitionRow()
	if err != nil {
		t.Fatal(err)
	}
	if row2["REMOTE SEGS"] != row["REMOTE SEGS"] || row2["REMOTE START"] != "0" || row2["END"] != fmt.Sprint(end) {
		t.Errorf("tier status after restore: %v, want REMOTE SEGS %s, REMOTE START 0, END %d", row2, row["REMOTE SEGS"], end)
	}
	// The log continues where the bucket's history ends.
	if out := ok(t, n, "", "produce", "events", "--value", "after restore"); out != fmt.Sprintf("0 %d\n", end) {
		t.Errorf("produce after restore: %q, want offset %d", out, end)
	}
	if got := ok(t, n, "", "consume", "events"); got != input+"after restore\n" {
		t.Errorf("consume after restore and a new record: %d bytes, want %d", len(got), len(input)+len("after restore\n"))
	}
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	t.Logf("%v: restored history read back", time.Since(start).Round(time.Millisecond))
}

// TestTieringKillMidUpload kills the server with SIGKILL while a segment
// upload is in flight: the fault proxy in front of MinIO lets the first
// two segment PUTs through and holds the answer to the third (MinIO has
// stored the object; the server has not heard so). Restarted straight on
// MinIO, the node withdraws the interrupted attempt, deletes its orphan
// object, uploads the segment again under a new name, and every record
// reads back byte for byte.
func TestTieringKillMidUpload(t *testing.T) {
	t.Parallel()
	start := time.Now()
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	stuck := proxy.Add(faultproxy.Rule{Method: "PUT", PathContains: ".seg", Fault: faultproxy.Slow,
		Delay: 10 * time.Minute, Skip: 2})
	viaProxy := "minio://" + proxy.Addr + "/" + m.Bucket + "/tierlog?secure=false"

	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, m.Env(), "--bucket", viaProxy)
	createTiered(t, n, "events")
	lines := tierLines(5000)
	input := joinLines(lines)
	ok(t, n, input, "produce", "events", "--batch", "100", "--quiet")

	// In flight: the held PUT has reached MinIO, two segments are committed,
	// and tier status counts the held one (at least) as upload lag.
	var before []string
	eventually(t, "the third segment upload held in flight", func() error {
		if stuck.Injected() < 1 {
			return fmt.Errorf("no segment PUT held yet (%d matched)", stuck.Matched())
		}
		var err error
		if before, err = segObjects(m); err != nil {
			return err
		}
		if len(before) != 3 {
			return fmt.Errorf("%d .seg objects in the bucket, want 3: %v", len(before), before)
		}
		row, err := tierStatus(t, n, "events").partitionRow()
		if err != nil {
			return err
		}
		v, err := row.ints("REMOTE SEGS", "LAG SEGS")
		if err != nil {
			return err
		}
		if v[0] != 2 || v[1] < 1 {
			return fmt.Errorf("want 2 remote segments and upload lag, got %v", row)
		}
		return nil
	})
	// Local retention (0 bytes) must not drop the held segment: with it in
	// flight, every record still reads back.
	if got := ok(t, n, "", "consume", "events"); got != input {
		t.Fatalf("consume with an upload in flight: %d bytes, want %d", len(got), len(input))
	}
	t.Logf("%v: upload held in flight; kill -9", time.Since(start).Round(time.Millisecond))
	if code := n.signal(syscall.SIGKILL); code != -1 {
		t.Fatalf("kill -9: exit %d, want -1 (killed by signal)", code)
	}

	n = startNode(t, dataDir, m.Env(), "--bucket", m.MinIOURL(m.Bucket, "tierlog"))
	row := waitAllTiered(t, n, "events", int64(len(lines)))
	t.Logf("%v: restarted on MinIO directly; all tiered", time.Since(start).Round(time.Millisecond))
	if got := ok(t, n, "", "consume", "events"); got != input {
		t.Fatalf("consume after kill -9 and restart: %d bytes, want %d", len(got), len(input))
	}

	// No orphans: the .seg objects are exactly those the newest manifest
	// copy in the bucket names, as many as tier status counts. The held
	// attempt's object reached MinIO whole (only its reply was held), so the
	// restart's sweep commits it rather than deleting it and uploading the
	// segment again: nothing that was in the bucket is gone.
	remoteSegs, _ := row.int("REMOTE SEGS")
	var after []string
	eventually(t, "the bucket holds exactly the manifest's segments", func() error {
		var err error
		if after, err = segObjects(m); err != nil {
			return err
		}
		named, err := newestManifestKeys(m, "events", 0)
		if err != nil {
			return err
		}
		if !slices.Equal(after, named) || int64(len(after)) != remoteSegs {
			return fmt.Errorf("bucket .seg objects %v\nnewest manifest names %v\ntier status REMOTE SEGS %d", after, named, remoteSegs)
		}
		return nil
	})
	var gone []string
	for _, k := range before {
		if !slices.Contains(after, k) {
			gone = append(gone, k)
		}
	}
	if len(gone) != 0 || !strings.Contains(n.stderr.String(), "committed a segment uploaded before a restart") {
		t.Errorf("objects deleted since the kill: %v, want none: the held attempt's whole object committed at restart", gone)
	}
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// TestTieringStartupErrors: a bucket that cannot be used stops `tierlog
// serve` at start with an error naming the bucket URL and the cause, and
// the secret never appears in its output.
func TestTieringStartupErrors(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	const secret = "not-the-secret-7f3a91c2"
	wrongMinIO := []string{"MINIO_ACCESS_KEY=" + m.AccessKey, "MINIO_SECRET_KEY=" + secret}
	wrongAWS := []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + secret}
	unreachableS3 := "s3://tierlog/p?endpoint=http://127.0.0.1:1&path_style=true&region=us-east-1"
	cases := []struct {
		name, url string
		env       []string
		want      []string
	}{
		{"minio wrong credentials", m.MinIOURL(m.Bucket, "p"), wrongMinIO,
			[]string{"minio://" + m.Endpoint + "/" + m.Bucket + "/p", "wrong credentials"}},
		{"s3 wrong credentials", m.S3URL(m.Bucket, "p"), wrongAWS,
			[]string{"s3://" + m.Bucket + "/p", m.URL(), "wrong credentials"}},
		{"minio missing bucket", m.MinIOURL("no-such-bucket", "p"), m.Env(),
			[]string{"minio://" + m.Endpoint + "/no-such-bucket/p", `bucket "no-such-bucket" does not exist`}},
		{"s3 missing bucket", m.S3URL("no-such-bucket", "p"), m.Env(),
			[]string{"s3://no-such-bucket/p", `bucket "no-such-bucket" does not exist`}},
		{"minio unreachable", "minio://127.0.0.1:1/tierlog/p?secure=false", wrongMinIO,
			[]string{"minio://127.0.0.1:1/tierlog/p", "unreachable"}},
		{"s3 unreachable", unreachableS3, wrongAWS,
			[]string{"s3://tierlog/p", "http://127.0.0.1:1", "unreachable"}},
		{"minio no credentials", m.MinIOURL(m.Bucket, "p"), nil,
			[]string{"minio://" + m.Endpoint + "/" + m.Bucket + "/p", "no credentials", "MINIO_ACCESS_KEY"}},
		// A secret put where it does not belong is refused, and not echoed
		// (the start-up log line shows the configuration, bucket included).
		{"minio secret in the URL", "minio://" + m.AccessKey + ":" + secret + "@" + m.Endpoint + "/" + m.Bucket + "/p?secure=false", m.Env(),
			[]string{"minio://" + m.AccessKey + ":xxxxx@" + m.Endpoint + "/" + m.Bucket + "/p", "credentials do not belong in the URL"}},
		{"s3 secret in the endpoint", "s3://" + m.Bucket + "/p?endpoint=http://" + m.AccessKey + ":" + secret + "@" + m.Endpoint + "&path_style=true", m.Env(),
			[]string{"s3://" + m.Bucket + "/p", "credentials do not belong in the endpoint URL"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r, took := serveFails(t, c.env, "--bucket", c.url)
			t.Logf("exit %d after %v: %s", r.code, took.Round(time.Millisecond), r.stderr)
			out := r.stdout + r.stderr
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, secret) || strings.Contains(out, m.SecretKey) {
				t.Errorf("output holds a secret:\n%s", out)
			}
		})
	}
}

// tierStatusColumns are the columns `tier status` prints, in order.
var tierStatusColumns = []string{"TOPIC", "PARTITION", "LOCAL SEGS", "LOCAL BYTES", "LOCAL START", "REMOTE SEGS",
	"REMOTE BYTES", "RAW BYTES", "REMOTE START", "END", "LAG SEGS", "LAG BYTES", "LAG AGE"}

func checkTierStatusColumns(t *testing.T, st tierStatusOut) {
	t.Helper()
	if !slices.Equal(st.columns, tierStatusColumns) {
		t.Errorf("tier status columns %q, want %q", st.columns, tierStatusColumns)
	}
	if !strings.Contains(st.raw, "Cache hit rate: ") {
		t.Errorf("tier status lacks the cache hit rate:\n%s", st.raw)
	}
}

// TestTierStatusOutput checks the table of `tier status` with the default
// bucket (a file:// bucket under the data directory): every column, one row
// per partition sorted by topic and partition, "off" for a topic that does
// not tier, and the bucket line; and with tiering turned off.
func TestTierStatusOutput(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, nil)
	ok(t, n, "", "topic", "create", "b-local", "--config", "remote.storage.enable=false")
	ok(t, n, "", "topic", "create", "a-tiered", "--partitions", "2")
	ok(t, n, "a\nb\nc\n", "produce", "a-tiered", "--partition", "1")

	st := tierStatus(t, n, "")
	checkTierStatusColumns(t, st)
	abs, err := filepath.Abs(filepath.Join(dataDir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.bucket, "file://") || !strings.Contains(st.bucket, abs) {
		t.Errorf("bucket line %q, want the file:// URL of %s", st.bucket, abs)
	}
	want := []struct{ topic, partition, end, remoteStart string }{
		{"a-tiered", "0", "0", "-"}, {"a-tiered", "1", "3", "-"}, {"b-local", "0", "0", "off"},
	}
	if len(st.rows) != len(want) {
		t.Fatalf("tier status: %d rows, want %d:\n%s", len(st.rows), len(want), st.raw)
	}
	for i, w := range want {
		r := st.rows[i]
		if r["TOPIC"] != w.topic || r["PARTITION"] != w.partition || r["END"] != w.end || r["REMOTE START"] != w.remoteStart ||
			r["LOCAL SEGS"] != "1" || r["REMOTE SEGS"] != "0" || r["LAG SEGS"] != "0" || r["LAG AGE"] != "0s" {
			t.Errorf("row %d: %v, want topic %s partition %s END %s REMOTE START %s, one local segment, nothing remote, no lag",
				i, r, w.topic, w.partition, w.end, w.remoteStart)
		}
	}
	if st := tierStatus(t, n, "a-tiered"); len(st.rows) != 2 {
		t.Errorf("tier status a-tiered: %d rows, want 2:\n%s", len(st.rows), st.raw)
	}
	if r := cli(t, n, "", "tier", "status", "nope"); r.code != 1 || !strings.Contains(r.stderr, "NotFound") {
		t.Errorf("tier status of a missing topic: exit %d, stderr %q; want 1 and NotFound", r.code, r.stderr)
	}
	n.signal(syscall.SIGTERM)

	off := startNode(t, filepath.Join(t.TempDir(), "data"), nil, "--bucket", "none")
	ok(t, off, "", "topic", "create", "t")
	st = tierStatus(t, off, "t")
	if st.bucket != "none (tiering off)" || len(st.rows) != 1 || st.rows[0]["REMOTE START"] != "off" {
		t.Errorf("tier status with --bucket none:\n%s", st.raw)
	}
}
