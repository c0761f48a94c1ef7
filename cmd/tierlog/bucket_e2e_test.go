package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
)

// bucketState is every object of a bucket with its content digest and
// attributes, and for a file bucket every file and directory under its
// root, so any write - an object, a temporary or lock file - shows.
func bucketState(t *testing.T, rawURL string, creds *cold.Credentials) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := bucketurl.Open(ctx, rawURL, cold.Options{Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	state := map[string]string{}
	err = b.Iter(ctx, "", func(key string) error {
		a, err := b.Attributes(ctx, key)
		if err != nil {
			return err
		}
		rc, err := b.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			return err
		}
		state[key] = fmt.Sprintf("%x %d %s %s %v", h.Sum(nil), a.Size, a.ETag, a.VersionID, a.LastModified.UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if root, isFile := strings.CutPrefix(rawURL, "file://"); isFile {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			state["file:"+path] = fmt.Sprintf("%v %d %v", info.Mode(), info.Size(), info.ModTime().UnixNano())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(state) == 0 {
		t.Fatalf("bucket %s is empty", rawURL)
	}
	return state
}

// TestBucketConsume replays a stopped node's history from its bucket with
// no server, for a MinIO bucket (read through both the minio:// and s3://
// backends) and a file bucket: every record byte for byte in order, offset
// and time ranges, a multi-partition topic, a topic whose start retention
// deleted, and the errors. The bucket is byte-identical afterwards.
func TestBucketConsume(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	fileBucket := filepath.Join(t.TempDir(), "bucket")
	if err := os.MkdirAll(fileBucket, 0o755); err != nil {
		t.Fatal(err)
	}
	creds := &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}
	for _, tc := range []struct {
		name     string
		serveURL string
		readURLs []string
	}{
		{"minio", m.MinIOURL(m.Bucket, "tierlog"), []string{m.MinIOURL(m.Bucket, "tierlog"), m.S3URL(m.Bucket, "tierlog")}},
		{"file", "file://" + fileBucket, []string{"file://" + fileBucket}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tierHistory(t, m.Env(), tc.serveURL)
			before := bucketState(t, tc.serveURL, creds)
			for _, u := range tc.readURLs {
				h.check(t, m.Env(), u)
			}
			after := bucketState(t, tc.serveURL, creds)
			if !maps.Equal(before, after) {
				for k := range maps.Keys(after) {
					if before[k] != after[k] {
						t.Errorf("bucket changed by bucket consume: %s: %q, was %q", k, after[k], before[k])
					}
				}
				for k := range maps.Keys(before) {
					if _, ok := after[k]; !ok {
						t.Errorf("bucket changed by bucket consume: %s deleted", k)
					}
				}
			}
		})
	}
}

// history is what a node wrote to a bucket before it was stopped and its
// data directory deleted.
type history struct {
	audit      []string // topic "audit", one partition
	split      int      // audit[:split] were produced before midMs, the rest after
	midMs      int64
	multi      [3][]string // topic "multi", per partition
	short      []string    // topic "short": retention deleted its start
	shortStart int64
}

func tierHistory(t *testing.T, env []string, bucketURL string) *history {
	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, env, "--bucket", bucketURL)
	createTiered(t, n, "audit")
	createTiered(t, n, "multi", "--partitions", "3")

	h := &history{audit: tierLines(3000), split: 1700}
	ok(t, n, joinLines(h.audit[:h.split]), "produce", "audit", "--batch", "100", "--quiet")
	// Every record of the first part has a timestamp <= done; wait for
	// the clock to pass it, so the second part's are all later than midMs.
	done := time.Now().UnixMilli()
	eventually(t, "the clock passes the first part's timestamps", func() error {
		if h.midMs = time.Now().UnixMilli(); h.midMs <= done {
			return fmt.Errorf("now %d, want > %d", h.midMs, done)
		}
		return nil
	})
	// Compressed batches: their records are decoded, not copied.
	ok(t, n, joinLines(h.audit[h.split:]), "produce", "audit", "--batch", "100", "--quiet", "--compression", "zstd")
	for p := range h.multi {
		for i, l := range tierLines(700 + 300*p) {
			h.multi[p] = append(h.multi[p], fmt.Sprintf("p%d-%d %s", p, i, l))
		}
		ok(t, n, joinLines(h.multi[p]), "produce", "multi", "--partition", fmt.Sprint(p), "--batch", "50", "--quiet")
	}
	h.short, h.shortStart = shortTopic(t, n)

	waitTiered(t, n, "audit", []int64{int64(len(h.audit))})
	waitTiered(t, n, "multi", []int64{int64(len(h.multi[0])), int64(len(h.multi[1])), int64(len(h.multi[2]))})
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *history) check(t *testing.T, env []string, bucketURL string) {
	t.Helper()
	consume := func(args ...string) string {
		t.Helper()
		return bucketOK(t, env, append([]string{"bucket", "consume", "--bucket", bucketURL}, args...)...)
	}
	// The whole history, byte for byte.
	if got, want := consume("audit"), joinLines(h.audit); got != want {
		t.Fatalf("bucket consume audit from %s: %d bytes, want %d (first difference at byte %d)", bucketURL, len(got), len(want), firstDiff(got, want))
	}
	// JSON: offsets in order, values as produced.
	recs := parseJSONRecs(t, consume("audit", "--format", "json"))
	if len(recs) != len(h.audit) {
		t.Fatalf("json: %d records, want %d", len(recs), len(h.audit))
	}
	for i, r := range recs {
		if r.Partition != 0 || r.Offset != int64(i) || r.Value == nil || *r.Value != h.audit[i] {
			t.Fatalf("json record %d: %+v, want partition 0 offset %d value %q", i, r, i, h.audit[i])
		}
	}
	// Offset ranges: --to is inclusive; a range across segments; one record.
	for _, c := range []struct {
		args     []string
		from, to int
	}{
		{[]string{"--from", "1234"}, 1234, len(h.audit)},
		{[]string{"--to", "99"}, 0, 100},
		{[]string{"--from", "450", "--to", "2550"}, 450, 2551},
		{[]string{"--from", "2999", "--to", "2999"}, 2999, 3000},
		{[]string{"--from", "2999", "--to", "100000"}, 2999, 3000},
		{[]string{"--from", "3000"}, 3000, 3000},
		{[]string{"--from", "10", "--max", "5"}, 10, 15},
	} {
		if got, want := consume(append([]string{"audit"}, c.args...)...), joinLines(h.audit[c.from:c.to]); got != want && !(c.from == c.to && got == "") {
			t.Errorf("bucket consume audit %v: %d bytes, want offsets %d..%d (%d bytes)", c.args, len(got), c.from, c.to-1, len(want))
		}
	}
	// Time ranges: the first part ends before midMs, the second starts at
	// or after it.
	mid := time.UnixMilli(h.midMs).UTC().Format(timestampLayout)
	before := time.UnixMilli(h.midMs - 1).UTC().Format(timestampLayout)
	if got, want := consume("audit", "--from-time", mid), joinLines(h.audit[h.split:]); got != want {
		t.Errorf("--from-time %s: %d bytes, want the %d records produced after it", mid, len(got), len(h.audit)-h.split)
	}
	if got, want := consume("audit", "--to-time", before), joinLines(h.audit[:h.split]); got != want {
		t.Errorf("--to-time %s: %d bytes, want the %d records produced before it", before, len(got), h.split)
	}
	if got := consume("audit", "--from-time", mid, "--to", "1799"); got != joinLines(h.audit[h.split:1800]) {
		t.Errorf("--from-time %s --to 1799: %d bytes, want offsets %d..1799", mid, len(got), h.split)
	}

	// Every partition, in partition order, each in offset order.
	var all []string
	for p := range h.multi {
		all = append(all, h.multi[p]...)
		if got := consume("multi", "--partition", fmt.Sprint(p)); got != joinLines(h.multi[p]) {
			t.Errorf("multi --partition %d: %d bytes, want %d", p, len(got), len(joinLines(h.multi[p])))
		}
	}
	if got := consume("multi"); got != joinLines(all) {
		t.Errorf("multi: %d bytes, want %d", len(got), len(joinLines(all)))
	}
	recs = parseJSONRecs(t, consume("multi", "--format", "json", "--from", "650", "--to", "849"))
	var wantN int
	for p := range h.multi {
		wantN += min(len(h.multi[p]), 850) - 650
	}
	if len(recs) != wantN {
		t.Errorf("multi --from 650 --to 849: %d records, want %d", len(recs), wantN)
	}
	for i, r := range recs {
		if i > 0 && (r.Partition < recs[i-1].Partition || (r.Partition == recs[i-1].Partition && r.Offset != recs[i-1].Offset+1)) {
			t.Fatalf("multi json record %d: partition %d offset %d after partition %d offset %d", i, r.Partition, r.Offset, recs[i-1].Partition, recs[i-1].Offset)
		}
		if r.Offset < 650 || r.Offset > 849 || *r.Value != h.multi[r.Partition][r.Offset] {
			t.Fatalf("multi json record %d: %+v, want offsets 650..849 as produced", i, r)
		}
	}

	// Retention deleted the start of short: by default the archive
	// starts where it now starts; --from below that says where it starts.
	if got := consume("short"); got != joinLines(h.short[h.shortStart:]) {
		t.Errorf("short: %d bytes, want offsets %d.. (%d bytes)", len(got), h.shortStart, len(joinLines(h.short[h.shortStart:])))
	}
	errCases := []struct {
		args []string
		want []string
	}{
		{[]string{"short", "--from", "0"}, []string{"short/0", "offset 0 is below the start of the archive", fmt.Sprintf("holds offsets %d to %d", h.shortStart, len(h.short)-1)}},
		{[]string{"nosuch"}, []string{`no topic "nosuch"`, `"audit"`, `"multi"`}},
		{[]string{"multi", "--partition", "3"}, []string{"topic multi has 3 partitions"}},
	}
	for _, c := range errCases {
		r := runCLI(t, env, "", append([]string{"bucket", "consume", "--bucket", bucketURL}, c.args...)...)
		if r.code != 1 || r.stdout != "" {
			t.Errorf("bucket consume %v: exit %d, stdout %q; want exit 1 and no output", c.args, r.code, r.stdout)
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("bucket consume %v: stderr %q, want it to say %q", c.args, r.stderr, w)
			}
		}
	}
}

func parseJSONRecs(t *testing.T, out string) []jsonRec {
	t.Helper()
	var recs []jsonRec
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r jsonRec
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("json line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestBucketConsumeUnreachable: a bucket that cannot be read fails with
// exit 1 and a message naming the bucket, never its secret.
func TestBucketConsumeUnreachable(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	missing := filepath.Join(t.TempDir(), "no-such-bucket")
	wrongKey := []string{"MINIO_ACCESS_KEY=" + m.AccessKey, "MINIO_SECRET_KEY=wrong-secret-4711"}
	for _, c := range []struct {
		url  string
		env  []string
		want []string
	}{
		{"file://" + missing, nil, []string{"file://" + missing, "no such file or directory"}},
		{"minio://127.0.0.1:1/b/p?secure=false", m.Env(), []string{"minio://127.0.0.1:1/b/p"}},
		{m.MinIOURL("no-such-bucket", "p"), m.Env(), []string{"no-such-bucket"}},
		{m.MinIOURL(m.Bucket, "p"), wrongKey, []string{m.Bucket}},
	} {
		r := runCLI(t, c.env, "", "bucket", "consume", "--bucket", c.url, "audit")
		if r.code != 1 {
			t.Errorf("bucket consume --bucket %s: exit %d, want 1\nstderr: %s", c.url, r.code, r.stderr)
		}
		for _, w := range append(c.want, "open bucket") {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("bucket consume --bucket %s: stderr %q, want it to say %q", c.url, r.stderr, w)
			}
		}
		if strings.Contains(r.stderr, m.SecretKey) || strings.Contains(r.stderr, "wrong-secret-4711") {
			t.Errorf("bucket consume --bucket %s: stderr holds a secret: %s", c.url, r.stderr)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("bucket consume created the missing file bucket %s (stat: %v)", missing, err)
	}
	// Usage errors: exit 2.
	for _, args := range [][]string{
		{"audit"},
		{"--bucket", "file://" + missing, "audit", "--from", "5", "--to", "4"},
		{"--bucket", "file://" + missing, "audit", "--from", "5", "--from-time", "1h"},
		{"--bucket", "file://" + missing, "audit", "--to-time", "soon"},
	} {
		if r := runCLI(t, nil, "", append([]string{"bucket", "consume"}, args...)...); r.code != 2 {
			t.Errorf("bucket consume %v: exit %d, want 2 (usage)\nstderr: %s", args, r.code, r.stderr)
		}
	}
}
