package cold_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/miniobucket"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// minioMaker opens a fresh prefix of a bucket on the MinIO server at
// endpoint (the server itself, or a fault proxy in front of it).
func minioMaker(m *testutil.MinIO, endpoint string, opts cold.Options) bucketMaker {
	var n atomic.Int64
	return func(t testing.TB) *countingBucket {
		t.Helper()
		opts.Credentials = &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey}
		url := fmt.Sprintf("minio://%s/%s/reader-%d?secure=false", endpoint, m.Bucket, n.Add(1))
		b, err := miniobucket.Open(context.Background(), url, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return &countingBucket{Bucket: b}
	}
}

// The reader against a real MinIO server: the same round trips, request
// counts, sharing and corruption checks as against the filesystem.
func TestReaderMinIO(t *testing.T) {
	m := testutil.StartMinIO(t)
	mk := minioMaker(m, m.Endpoint, cold.Options{})
	t.Run("every offset", func(t *testing.T) { testReaderEveryOffset(t, mk, []batch.Codec{batch.None, batch.Zstd}) })
	t.Run("by time", func(t *testing.T) { testReaderOffsetForTime(t, mk) })
	t.Run("sequential GETs", func(t *testing.T) { testReaderSequentialGETs(t, mk) })
	t.Run("concurrent misses", func(t *testing.T) { testReaderConcurrentMisses(t, mk) })
	t.Run("corrupt objects", func(t *testing.T) { testReaderCorrupt(t, mk) })
}

// Replays through a fault-injecting proxy (each rule lets the footer GET
// through, so the faults hit chunk downloads) in front of MinIO: with the
// backend's own retries off, every fault reaches the Reader, which retries
// and returns the right bytes, or fails with a clear error; never wrong
// bytes.
func TestReaderMinIOFaults(t *testing.T) {
	m := testutil.StartMinIO(t)
	p := faultproxy.Start(t, m.URL())
	// 2s, not less: on a loaded machine a shorter stall timeout turns a slow
	// but healthy request (the set-up upload) into a stall.
	mk := minioMaker(m, p.Addr, cold.Options{MaxAttempts: 1, StallTimeout: 2 * time.Second})
	b := mk(t)
	// Incompressible values: chunks stored raw, full size, so body faults
	// land inside them.
	log, _ := buildLog(t, segSpec{base: 0, nBatches: 200, recs: 8, size: 200, random: true})
	seg, f := putSegment(t, b, "t/0/00000000000000000000-0-a.seg", log, cold.SegmentOptions{ChunkBytes: 16 << 10})
	for _, tc := range []struct {
		name string
		rule faultproxy.Rule
	}{
		{"503 SlowDown", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Error, Status: 503, Times: 3, Skip: 2}},
		{"500", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Error, Status: 500, Times: 2, Skip: 2}},
		{"reset", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Reset, Times: 3, Skip: 2}},
		{"truncated bodies", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Truncate, After: 5000, Times: 4, Skip: 2}},
		{"stalled bodies", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.StallBody, After: 3000, Times: 2, Skip: 2}},
		{"slow bodies", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Slow, ChunkSize: 4096, Delay: time.Millisecond, Times: 3, Skip: 2}},
		{"random mix", faultproxy.Rule{RangeOnly: true, Fault: faultproxy.Truncate, After: 700, Probability: 0.3, Skip: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Clear()
			h := p.Add(tc.rule)
			// A short prefetch: many GETs, each a chance for a fault.
			r, _ := newReader(t, b, cold.ChunkCacheOptions{}, cold.ReaderOptions{PrefetchBytes: 48 << 10,
				RetryBase: time.Millisecond, RetryMax: 10 * time.Millisecond, GetAttempts: 6})
			var got []byte
			for off := f.BaseOffset; off < f.NextOffset; {
				data, err := r.Read(context.Background(), seg, off, 5000)
				if err != nil {
					// Allowed only for the random mix, where a chunk can be
					// unlucky six times, and only as a clear error.
					if tc.rule.Probability == 0 || !strings.Contains(err.Error(), seg.Key) {
						t.Fatalf("read at %d: %v", off, err)
					}
					t.Logf("read at %d failed after retries (allowed): %v", off, err)
					return
				}
				if !bytes.Equal(data, log[len(got):len(got)+len(data)]) {
					t.Fatalf("read at %d returned wrong bytes", off)
				}
				got = append(got, data...)
				off = lastNext(t, data)
			}
			if !bytes.Equal(got, log) || h.Injected() == 0 {
				t.Fatalf("replay: %d of %d bytes, %d faults injected", len(got), len(log), h.Injected())
			}
			t.Logf("%d faults injected, %d GETs", h.Injected(), r.GetRequests())
		})
	}
}
