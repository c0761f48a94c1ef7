package hot

import (
	"errors"
	"io/fs"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

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
// (disk full) and fsyncs that fail.
type faultyFS struct {
	failSync  atomic.Bool
	shortNext atomic.Bool
}

func (fs_ *faultyFS) open(name string, flag int, perm fs.FileMode) (File, error) {
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
