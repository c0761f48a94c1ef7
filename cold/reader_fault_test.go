package cold_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// brokenBody returns half of what it is asked for, then err.
type brokenBody struct {
	io.ReadCloser
	left int
	err  error
}

func (b *brokenBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p[:min(len(p), b.left)])
	b.left -= n
	return n, err
}

// flippingBody flips one bit of the first byte it returns.
type flippingBody struct {
	io.ReadCloser
	done bool
}

func (b *flippingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && !b.done {
		p[0] ^= 1
		b.done = true
	}
	return n, err
}

// faultSetup is a segment in a counting bucket and a reader with a fast
// backoff, the footer already read.
func faultSetup(t *testing.T, ro cold.ReaderOptions) (*countingBucket, *cold.Reader, cold.SegmentRef, []byte, *prometheus.Registry) {
	t.Helper()
	b := newFileBucket(t)
	log, _ := buildLog(t, segSpec{nBatches: 40, recs: 4, size: 200})
	seg, _ := putSegment(t, b, "t/0/x.seg", log, cold.SegmentOptions{ChunkBytes: 4 << 10})
	reg := prometheus.NewRegistry()
	ro.RetryBase, ro.RetryMax, ro.Registerer = time.Millisecond, time.Millisecond, reg
	if ro.PrefetchBytes == 0 {
		ro.PrefetchBytes = -1
	}
	r, _ := newReader(t, b, cold.ChunkCacheOptions{}, ro)
	if _, err := r.Footer(context.Background(), seg); err != nil {
		t.Fatal(err)
	}
	b.gets.Store(0)
	return b, r, seg, log, reg
}

// failFirst makes the first n GETs fail with err.
func failFirst(n int64, err error) func(context.Context, string, int64, int64) error {
	var calls atomic.Int64
	return func(context.Context, string, int64, int64) error {
		if calls.Add(1) <= n {
			return err
		}
		return nil
	}
}

func TestReaderRetriesTransientFaults(t *testing.T) {
	reset := fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	cases := []struct {
		name      string
		hook      func(context.Context, string, int64, int64) error
		body      func() func(io.ReadCloser) io.ReadCloser
		gets      int64
		checksums float64
	}{
		{"connection resets", failFirst(2, reset), nil, 3, 0},
		{"truncated body", nil, func() func(io.ReadCloser) io.ReadCloser {
			var n atomic.Int64
			return func(rc io.ReadCloser) io.ReadCloser {
				if n.Add(1) == 1 {
					return &brokenBody{ReadCloser: rc, left: 100, err: io.ErrUnexpectedEOF}
				}
				return rc
			}
		}, 2, 0},
		{"body ends early", nil, func() func(io.ReadCloser) io.ReadCloser {
			var n atomic.Int64
			return func(rc io.ReadCloser) io.ReadCloser {
				if n.Add(1) == 1 {
					return &brokenBody{ReadCloser: rc, left: 100, err: io.EOF}
				}
				return rc
			}
		}, 2, 0},
		{"bit flipped in transit", nil, func() func(io.ReadCloser) io.ReadCloser {
			var n atomic.Int64
			return func(rc io.ReadCloser) io.ReadCloser {
				if n.Add(1) == 1 {
					return &flippingBody{ReadCloser: rc}
				}
				return rc
			}
		}, 2, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, r, seg, log, reg := faultSetup(t, cold.ReaderOptions{})
			var body func(io.ReadCloser) io.ReadCloser
			if tc.body != nil {
				body = tc.body()
			}
			b.setHooks(tc.hook, body)
			got, err := r.Read(context.Background(), seg, 0, 1)
			if err != nil || !bytes.Equal(got, log[:len(got)]) || len(got) == 0 {
				t.Fatalf("read: %v", err)
			}
			if n := b.gets.Load(); n != tc.gets {
				t.Fatalf("%d GETs, want %d", n, tc.gets)
			}
			if v := counterValue(t, reg, "tierlog_cold_chunk_checksum_failures_total"); v != tc.checksums {
				t.Fatalf("%v checksum failures, want %v", v, tc.checksums)
			}
			if v := counterValue(t, reg, "tierlog_cold_get_retries_total"); v != float64(tc.gets-1) {
				t.Fatalf("%v retries, want %d", v, tc.gets-1)
			}
		})
	}
}

func TestReaderGivesUp(t *testing.T) {
	t.Run("permanent error fails at once", func(t *testing.T) {
		b, r, seg, _, _ := faultSetup(t, cold.ReaderOptions{})
		denied := errors.New("access denied")
		b.setHooks(failFirst(100, denied), nil)
		if _, err := r.Read(context.Background(), seg, 0, 1); !errors.Is(err, denied) {
			t.Fatalf("err %v, want access denied", err)
		}
		if n := b.gets.Load(); n != 1 {
			t.Fatalf("%d GETs for a permanent error", n)
		}
	})
	t.Run("retryable error stops after GetAttempts", func(t *testing.T) {
		b, r, seg, _, _ := faultSetup(t, cold.ReaderOptions{GetAttempts: 3})
		b.setHooks(failFirst(100, syscall.ECONNREFUSED), nil)
		if _, err := r.Read(context.Background(), seg, 0, 1); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("err %v", err)
		}
		if n := b.gets.Load(); n != 3 {
			t.Fatalf("%d GETs, want 3", n)
		}
		// Errors are not cached: the next read tries again.
		b.setHooks(nil, nil)
		if _, err := r.Read(context.Background(), seg, 0, 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("corruption in transit every time", func(t *testing.T) {
		b, r, seg, _, _ := faultSetup(t, cold.ReaderOptions{})
		b.setHooks(nil, func(rc io.ReadCloser) io.ReadCloser { return &flippingBody{ReadCloser: rc} })
		_, err := r.Read(context.Background(), seg, 0, 1)
		if !errors.Is(err, cold.ErrCorruptObject) {
			t.Fatalf("err %v", err)
		}
		if n := b.gets.Load(); n != 2 {
			t.Fatalf("%d GETs, want 2 (one retry)", n)
		}
	})
}

func TestReaderCallerGivesUpDownloadGoesOn(t *testing.T) {
	b, r, seg, _, _ := faultSetup(t, cold.ReaderOptions{})
	release := make(chan struct{})
	b.setHooks(func(context.Context, string, int64, int64) error { <-release; return nil }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(ctx, seg, 0, 1)
		done <- err
	}()
	testutil.Eventually(t, 10*time.Second, func() bool { return b.gets.Load() == 1 }, "the GET to start")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	close(release)
	// The download finished for the next reader: no second GET.
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := r.Read(context.Background(), seg, 0, 1)
		return err == nil
	}, "the read to succeed")
	if n := b.gets.Load(); n != 1 {
		t.Fatalf("%d GETs, want 1", n)
	}
}

func TestReaderCloseStopsDownloads(t *testing.T) {
	b, r, seg, _, _ := faultSetup(t, cold.ReaderOptions{PrefetchBytes: 64 << 10})
	b.setHooks(func(ctx context.Context, _ string, _, _ int64) error { <-ctx.Done(); return ctx.Err() }, nil)
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(context.Background(), seg, 0, 1)
		done <- err
	}()
	testutil.Eventually(t, 10*time.Second, func() bool { return b.gets.Load() >= 1 }, "the GET to start")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, cold.ErrReaderClosed) {
		t.Fatalf("err %v, want ErrReaderClosed", err)
	}
	if _, err := r.Read(context.Background(), seg, 0, 1); !errors.Is(err, cold.ErrReaderClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

func TestReaderRateLimited(t *testing.T) {
	_, r, seg, log, _ := faultSetup(t, cold.ReaderOptions{ReadRateLimit: 1 << 20, PrefetchBytes: 16 << 10})
	f, _ := r.Footer(context.Background(), seg)
	if got := replay(t, r, seg, f, 3000); !bytes.Equal(got, log) {
		t.Fatal("replay differs")
	}
}
