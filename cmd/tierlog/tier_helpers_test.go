package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

// tierLines are n deterministic lines of about 100 bytes, the first few
// with characters that are easy to mangle, so a byte-for-byte comparison
// of what comes back from the bucket means something.
func tierLines(n int) []string {
	special := []string{"", "tab\there", `quote " and \ backslash`, "héllo wörld ✓ 日本", "cr at end\r"}
	lines := make([]string, n)
	for i := range lines {
		if i < len(special) {
			lines[i] = special[i]
			continue
		}
		l := fmt.Sprintf(`{"seq":%d,"actor":"user-%d","action":"%s","object":"doc/%x"}`,
			i, i%97, []string{"read", "write", "delete", "share"}[i%4], i*2654435761)
		lines[i] = l + strings.Repeat(string(rune('a'+i%26)), max(0, 100-len(l)))
	}
	return lines
}

// tierStatusOut is `tier status` parsed: the bucket line and one map per
// partition row, keyed by column header.
type tierStatusOut struct {
	raw     string
	bucket  string
	columns []string
	rows    []tierRow
}

type tierRow map[string]string

// columnSep splits tabwriter output: it pads cells with at least two
// spaces, and headers such as "LOCAL SEGS" hold only one.
var columnSep = regexp.MustCompile(`\s{2,}`)

func parseTierStatus(out string) (tierStatusOut, error) {
	st := tierStatusOut{raw: out}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, line := range lines {
		if b, ok := strings.CutPrefix(line, "Bucket: "); ok {
			st.bucket = b
		}
		if strings.HasPrefix(line, "TOPIC ") {
			st.columns = columnSep.Split(strings.TrimSpace(line), -1)
			for _, row := range lines[i+1:] {
				cells := columnSep.Split(strings.TrimSpace(row), -1)
				if len(cells) != len(st.columns) {
					return st, fmt.Errorf("tier status row %q has %d cells, header has %d", row, len(cells), len(st.columns))
				}
				r := tierRow{}
				for k, c := range st.columns {
					r[c] = cells[k]
				}
				st.rows = append(st.rows, r)
			}
			return st, nil
		}
	}
	return st, fmt.Errorf("tier status printed no table:\n%s", out)
}

// int returns a numeric cell; the row's columns are known, so a bad cell
// is a failure of the command under test.
func (r tierRow) int(col string) (int64, error) {
	n, err := strconv.ParseInt(r[col], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("tier status column %q = %q: %v", col, r[col], err)
	}
	return n, nil
}

// ints returns several numeric cells at once.
func (r tierRow) ints(cols ...string) ([]int64, error) {
	out := make([]int64, len(cols))
	for i, c := range cols {
		n, err := r.int(c)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// tierStatus runs `tier status topic` against n ("": every topic) and
// parses it.
func tierStatus(t *testing.T, n *node, topic string) tierStatusOut {
	t.Helper()
	args := []string{"tier", "status"}
	if topic != "" {
		args = append(args, topic)
	}
	st, err := parseTierStatus(ok(t, n, "", args...))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// partitionRow returns the one row of a single-partition topic.
func (st tierStatusOut) partitionRow() (tierRow, error) {
	if len(st.rows) != 1 {
		return nil, fmt.Errorf("tier status: %d rows, want 1:\n%s", len(st.rows), st.raw)
	}
	return st.rows[0], nil
}

// createTiered creates topic name on n with tierTopicConfig and the
// further flags args.
func createTiered(t testing.TB, n *node, name string, args ...string) {
	t.Helper()
	ok(t, n, "", append(append([]string{"topic", "create", name}, tierTopicConfig...), args...)...)
}

// shortTopic creates topic "short" on n, produces 3000 tierLines to it and
// waits until all is tiered and remote retention (retention.bytes) deleted
// its start. It returns the lines and where the remote tier now starts.
func shortTopic(t testing.TB, n *node) ([]string, int64) {
	t.Helper()
	createTiered(t, n, "short", "--config", "retention.bytes=100000")
	lines := tierLines(3000)
	ok(t, n, joinLines(lines), "produce", "short", "--batch", "100", "--quiet")
	var start int64
	eventually(t, "retention deletes the start of short", func() error {
		if start = waitTiered(t, n, "short", []int64{int64(len(lines))})[0]; start == 0 {
			return fmt.Errorf("short's remote tier still starts at 0")
		}
		return nil
	})
	return lines, start
}

// waitTiered polls `tier status` until every partition of topic ends at
// its offset in ends, has no upload lag and keeps nothing locally: every
// record is in the bucket. It returns the REMOTE START of each partition.
func waitTiered(t testing.TB, n *node, topic string, ends []int64) []int64 {
	t.Helper()
	starts := make([]int64, len(ends))
	eventually(t, "all of "+topic+" tiered", func() error {
		st, err := parseTierStatus(ok(t, n, "", "tier", "status", topic))
		if err != nil {
			return err
		}
		if len(st.rows) != len(ends) {
			return fmt.Errorf("%d partitions, want %d:\n%s", len(st.rows), len(ends), st.raw)
		}
		for _, row := range st.rows {
			v, err := row.ints("PARTITION", "END", "LAG SEGS", "LOCAL START", "REMOTE START")
			if err != nil {
				return err
			}
			if p := v[0]; v[1] != ends[p] || v[2] != 0 || v[3] != ends[p] {
				return fmt.Errorf("partition %d: want END %d, no lag, LOCAL START %d:\n%s", p, ends[p], ends[p], st.raw)
			}
			starts[v[0]] = v[4]
		}
		return nil
	})
	return starts
}

// waitAllTiered polls `tier status` until every record of the topic's only
// partition is in the bucket and local retention has dropped every sealed
// segment: no upload lag, the remote tier starts at 0, the local log holds
// nothing but its empty active segment. It returns the last row.
func waitAllTiered(t *testing.T, n *node, topic string, end int64) tierRow {
	t.Helper()
	var row tierRow
	eventually(t, "all of "+topic+" tiered and dropped locally", func() error {
		st, err := parseTierStatus(ok(t, n, "", "tier", "status", topic))
		if err != nil {
			return err
		}
		if row, err = st.partitionRow(); err != nil {
			return err
		}
		v, err := row.ints("END", "REMOTE SEGS", "REMOTE START", "LAG SEGS", "LAG BYTES", "LOCAL SEGS", "LOCAL BYTES", "LOCAL START")
		if err != nil {
			return err
		}
		if v[0] != end || v[1] == 0 || v[2] != 0 || v[3] != 0 || v[4] != 0 || v[5] != 1 || v[6] != 0 || v[7] != end {
			return fmt.Errorf("want END %d, REMOTE SEGS > 0, REMOTE START 0, no lag, 1 empty local segment starting at %d:\n%s", end, end, st.raw)
		}
		return nil
	})
	return row
}

// localLogFiles counts the segment files (*.log) under dir.
func localLogFiles(t *testing.T, dir string) int {
	t.Helper()
	count := 0
	// Segments live under topics/ (groups/offsets.log is not one).
	err := filepath.WalkDir(filepath.Join(dir, "topics"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".log") {
			count++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return count
}

// serveFails runs `tierlog serve` expecting it to exit non-zero without
// ever becoming ready, and returns its output and how long it ran.
func serveFails(t *testing.T, env []string, args ...string) (result, time.Duration) {
	t.Helper()
	dir := t.TempDir()
	// The ready file would only appear if the server started; the
	// assertion on it is the exit code.
	all := append([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--grpc-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--ready-file", filepath.Join(dir, "ready.json")}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), all...)
	cmd.Env = cleanEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) || ctx.Err() != nil {
		t.Fatalf("tierlog %s: %v after %v, want a non-zero exit\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, took, &stdout, &stderr)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}, took
}

// segObjects lists the segment objects (*.seg) in the test bucket, sorted.
func segObjects(m *testutil.MinIO) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	for obj := range m.Client().ListObjects(ctx, m.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		if strings.HasSuffix(obj.Key, ".seg") {
			keys = append(keys, obj.Key)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// newestManifestKeys reads the newest manifest copy of a partition from
// the test bucket (under the "tierlog/" prefix) and returns the keys of
// the segments it names, sorted, failing unless all are committed.
func newestManifestKeys(m *testutil.MinIO, topic string, partition int32) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := "tierlog/" + tiering.PartitionPrefix(topic, partition)
	newest := ""
	for obj := range m.Client().ListObjects(ctx, m.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		// Versions are zero-padded: lexical order is version order.
		if name := path.Base(obj.Key); strings.HasPrefix(name, "manifest-") && obj.Key > newest {
			newest = obj.Key
		}
	}
	if newest == "" {
		return nil, fmt.Errorf("no manifest copy under %s", prefix)
	}
	o, err := m.Client().GetObject(ctx, m.Bucket, newest, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	var man tiering.Manifest
	if err := json.NewDecoder(o).Decode(&man); err != nil {
		return nil, fmt.Errorf("%s: %w", newest, err)
	}
	var keys []string
	for _, s := range man.Segments {
		if s.State != tiering.CopyFinished {
			return nil, fmt.Errorf("%s: segment %s in state %s", newest, s.Key, s.State)
		}
		keys = append(keys, "tierlog/"+s.Key)
	}
	slices.Sort(keys)
	return keys, nil
}
