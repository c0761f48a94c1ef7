package hot

import (
	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// countingSyncs counts fsyncs of segment files.
type countingSyncs struct{ n atomic.Int64 }

func (c *countingSyncs) open(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &countingFile{File: f, n: &c.n}, nil
}

type countingFile struct {
	*os.File
	n *atomic.Int64
}

func (f *countingFile) Sync() error { f.n.Add(1); return f.File.Sync() }

// faultyFS hands out files that fail on command: writes that stop short
// (disk full), fsyncs that fail, and new files that cannot be opened.
type faultyFS struct {
	failSync   atomic.Bool
	shortNext  atomic.Bool
	failCreate atomic.Bool // creating a file fails with EMFILE
}

func (fs_ *faultyFS) open(name string, flag int, perm fs.FileMode) (File, error) {
	if flag&os.O_CREATE != 0 && fs_.failCreate.Load() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EMFILE}
	}
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultyFile{File: f, fs: fs_}, nil
}

type faultyFile struct {
	*os.File
	fs *faultyFS
}

func (f *faultyFile) Write(b []byte) (int, error) {
	if f.fs.shortNext.Load() {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, syscall.ENOSPC
	}
	return f.File.Write(b)
}

func (f *faultyFile) Sync() error {
	if f.fs.failSync.Load() {
		return syscall.EIO
	}
	return f.File.Sync()
}

func TestFaults(t *testing.T) {
	for _, c := range []struct {
		name   string
		inject func(*faultyFS)
	}{
		{"fsync error", func(f *faultyFS) { f.failSync.Store(true) }},
		{"disk full short write", func(f *faultyFS) { f.shortNext.Store(true) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			var ffs faultyFS
			l := openLog(t, dir, testConfig(FlushAlways), Options{OpenFile: ffs.open})
			appendRecords(t, l, 20, 5, 100)
			c.inject(&ffs)
			if _, err := l.Append(testutil.Batch(t, 100, 5, 100, 1)); err == nil {
				t.Fatal("append succeeded through an injected fault")
			}
			// The fault clears, but the log stays failed: a write whose
			// outcome is unknown is never followed by a silent success.
			ffs.failSync.Store(false)
			ffs.shortNext.Store(false)
			_, err := l.Append(testutil.Batch(t, 100, 5, 100, 1))
			if !errors.Is(err, ErrLogFailed) {
				t.Fatalf("append after a fault: %v, want ErrLogFailed", err)
			}
			t.Log(err)
			// Acknowledged records are still readable.
			checkRecords(t, readAll(t, l, 0), 0, 100, 100)
			l.Close()
			// Reopening recovers (truncating any partial batch) and appends
			// work again.
			l = openLog(t, dir, testConfig(FlushAlways), Options{})
			defer l.Close()
			end := l.EndOffset()
			if end != 100 && end != 105 {
				t.Fatalf("end offset after recovery %d", end)
			}
			// The unacknowledged batch may or may not have survived; every
			// acknowledged one did.
			checkRecords(t, readAll(t, l, 0), 0, end, 100)
			appendRecords(t, l, 2, 5, 100)
		})
	}
}

// TestRollOpenFailureIsRetriable is issue 6 item 14 (hot part): a segment
// roll that could not open the new file (EMFILE) failed the partition until
// restart. It must fail only that append, retriably, with nothing written;
// the next append retries the roll.
func TestRollOpenFailureIsRetriable(t *testing.T) {
	dir := t.TempDir()
	var ffs faultyFS
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := openLog(t, dir, testConfig(FlushAlways), Options{OpenFile: ffs.open, Now: clock})
	defer func() { l.Close() }()
	appendRecords(t, l, 20, 5, 100)
	ffs.failCreate.Store(true)
	var failed int
	for range 300 { // 64 KiB segments: a roll comes within ~110 batches
		end := l.EndOffset()
		_, err := l.Append(testutil.Batch(t, end, 5, 100, 1_000_000+end))
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrRetriable) || !errors.Is(err, syscall.EMFILE) || errors.Is(err, ErrLogFailed) {
			t.Fatalf("append whose roll could not open the new segment: %v, want ErrRetriable wrapping EMFILE", err)
		}
		if failed++; failed == 1 {
			t.Log(err)
		}
		if l.EndOffset() != end {
			t.Fatalf("a failed append moved the end offset from %d to %d", end, l.EndOffset())
		}
		if failed == 3 {
			break
		}
	}
	if failed == 0 {
		t.Fatal("no append needed a roll")
	}
	if err := l.Roll(); !errors.Is(err, ErrRetriable) {
		t.Fatalf("Roll with the open failing: %v, want ErrRetriable", err)
	}
	// An age roll in the background fails the same way and leaves the log usable.
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	l.maintain(clock())
	l.mu.RLock()
	ferr := l.failed
	l.mu.RUnlock()
	if ferr != nil {
		t.Fatalf("failed age roll failed the log: %v", ferr)
	}

	ffs.failCreate.Store(false)
	end := l.EndOffset()
	appendRecords(t, l, 5, 5, 100) // the roll is retried and succeeds
	if n := len(l.Segments()); n < 2 {
		t.Fatalf("%d segments after the retried roll", n)
	}
	checkRecords(t, readAll(t, l, 0), 0, end+25, 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, testConfig(FlushAlways), Options{})
	checkRecords(t, readAll(t, l, 0), 0, end+25, 100)
}
