package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/auditgen"
)

var bucketBenchBytes = flag.Int64("bucketconsume.bytes", 64<<20, "BenchmarkBucketConsume: bytes of audit events to produce and replay")

// BenchmarkBucketConsume measures `tierlog bucket consume` replaying a
// stopped node's history from a local MinIO, next to raw GETs of the same
// segment objects in the same run: the real binary (process start, topic
// record and manifest reads included) printing every record to a pipe,
// against whole-object GETs one after another that only move the bytes.
// Three rounds each, alternating; medians. Throughput is in MB of records
// (the values printed, newline included) per second; the ratio is consume
// over raw GETs. It never fails on timing; it fails if the replay prints
// anything but what was produced.
//
//	go test -run=NONE -bench=BenchmarkBucketConsume -benchtime=1x ./cmd/tierlog [-bucketconsume.bytes=67108864]
func BenchmarkBucketConsume(b *testing.B) {
	m := testutil.StartMinIO(b)
	url := m.MinIOURL(m.Bucket, "tierlog")
	dataDir := filepath.Join(b.TempDir(), "data")
	input, records := benchAuditHistory(b, dataDir, m.Env(), url, *bucketBenchBytes)
	os.RemoveAll(dataDir)

	ctx := context.Background()
	bucket, err := bucketurl.OpenReadOnly(ctx, url, cold.Options{Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}})
	if err != nil {
		b.Fatal(err)
	}
	defer bucket.Close()
	var segs []string
	if err := bucket.Iter(ctx, "", func(k string) error {
		if strings.HasSuffix(k, ".seg") {
			segs = append(segs, k)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	rawGets := func() (time.Duration, int64) {
		start, stored := time.Now(), int64(0)
		for _, k := range segs {
			rc, err := bucket.Get(ctx, k)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				b.Fatal(err)
			}
			stored += n
		}
		return time.Since(start), stored
	}
	consume := func(args ...string) (time.Duration, []byte) {
		r := timedRun(b, m.Env(), append([]string{"bucket", "consume", "--bucket", url, "audit"}, args...)...)
		return r.took, r.out
	}
	var raw, cons, first []time.Duration
	var stored int64
	b.ResetTimer()
	for range 3 {
		d, s := rawGets()
		raw, stored = append(raw, d), s
		d, out := consume()
		if !bytes.Equal(out, input) {
			b.Fatalf("bucket consume printed %d bytes, want the %d produced", len(out), len(input))
		}
		cons = append(cons, d)
		// The fixed cost: process start, bucket open, topic record,
		// manifest, the first chunk of the first segment.
		d, out = consume("--to", "0")
		if !bytes.Equal(out, input[:bytes.IndexByte(input, '\n')+1]) {
			b.Fatalf("bucket consume --to 0 printed %q", out)
		}
		first = append(first, d)
	}
	b.StopTimer()
	slices.Sort(raw)
	slices.Sort(cons)
	slices.Sort(first)
	mb := float64(len(input)) / 1e6
	rawMBs, consMBs := mb/raw[1].Seconds(), mb/cons[1].Seconds()
	b.ReportMetric(consMBs, "consume_MB/s")
	b.ReportMetric(rawMBs, "rawget_MB/s")
	b.ReportMetric(consMBs/rawMBs, "ratio")
	fmt.Fprintf(os.Stderr, "bucket consume bench: %d records, %.1f MB of records in %d segment objects (%.1f MB stored)\n"+
		"  bucket consume (binary, to a pipe)  %8v  %7.1f MB/s of records\n"+
		"  of which fixed cost (--to 0)        %8v\n"+
		"  raw GETs of the objects             %8v  %7.1f MB/s of records (%.1f MB/s stored)\n"+
		"  ratio consume / raw GETs            %.2fx\n",
		records, mb, len(segs), float64(stored)/1e6, cons[1].Round(time.Millisecond), consMBs, first[1].Round(time.Millisecond),
		raw[1].Round(time.Millisecond), rawMBs, float64(stored)/1e6/raw[1].Seconds(), consMBs/rawMBs)
}

// benchAuditHistory runs a node in dataDir on the bucket at url (env: its
// credentials, args: more serve flags), produces generated audit events,
// one a line, to topic "audit" (16 MiB segments) until about size bytes,
// waits until every one is in the bucket and stops the node. It returns
// the lines as produced and their count.
func benchAuditHistory(b *testing.B, dataDir string, env []string, url string, size int64, args ...string) ([]byte, int64) {
	b.Helper()
	n := startNode(b, dataDir, env, append([]string{"--bucket", url}, args...)...)
	ok(b, n, "", "topic", "create", "audit", "--config", "segment.bytes=16777216", "--config", "segment.ms=1000",
		"--config", "local.retention.bytes=0")
	var input bytes.Buffer
	g := auditgen.New(auditgen.Options{Seed: 1})
	for int64(input.Len()) < size {
		input.Write(bytes.ReplaceAll(g.Next().Value, []byte{'\n'}, []byte{' '}))
		input.WriteByte('\n')
	}
	records := int64(bytes.Count(input.Bytes(), []byte{'\n'}))
	start := time.Now()
	ok(b, n, input.String(), "produce", "audit", "--batch", "1000", "--quiet")
	b.Logf("produced %d records, %.1f MB, in %v", records, float64(input.Len())/1e6, time.Since(start).Round(time.Millisecond))
	waitTiered(b, n, "audit", []int64{records})
	if code := n.signal(syscall.SIGTERM); code != 0 {
		b.Fatalf("SIGTERM: exit %d", code)
	}
	return input.Bytes(), records
}

// timed is one run of the tierlog binary: how long it took, the
// processor time (user + system) it used, what it printed.
type timed struct {
	took, cpu time.Duration
	out       []byte
}

// timedRun runs the tierlog binary with the extra environment env; it
// fails unless it exits 0.
func timedRun(b *testing.B, env []string, args ...string) timed {
	b.Helper()
	cmd := exec.Command(binary(b), args...)
	cmd.Env = cleanEnv(env...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("tierlog %s: %v\n%s\n%s", strings.Join(args, " "), err, &out, &stderr)
	}
	took := time.Since(start)
	return timed{took: took, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), out: out.Bytes()}
}
