package hot

import (
	"io/fs"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestFlushAfterRetention is issue 6 item 1: with flush.ms longer than the
// maintenance tick (or flush.policy=os), segments that rolled, were sealed
// and then deleted by retention stayed on the flush list; the next flush
// fsynced a closed file and failed the log, and under os the list grew with
// every segment ever written.
func TestFlushAfterRetention(t *testing.T) {
	for _, p := range []FlushPolicy{FlushInterval, FlushOS} {
		t.Run(string(p), func(t *testing.T) {
			cfg := testConfig(p)
			cfg.FlushInterval = time.Hour // no interval flush during the test: only Flush fsyncs
			cfg.RetentionBytes = 64 << 10
			l := openLog(t, t.TempDir(), cfg, Options{})
			defer l.Close()
			appendRecords(t, l, 600, 5, 100) // ~6 segments of 64 KiB
			testutil.Eventually(t, 10*time.Second, func() bool { return len(l.SealedSegments()) == len(l.Segments())-1 }, "rolled segments sealed")
			l.mu.RLock()
			for _, s := range l.dirty {
				if s.sealed {
					t.Errorf("sealed segment %s is still on the flush list (%d entries)", s.logPath(), len(l.dirty))
				}
			}
			l.mu.RUnlock()
			if n := l.ApplyRetention(time.Now()); n == 0 {
				t.Fatal("retention deleted nothing; the test needs deleted segments")
			}
			if err := l.Flush(); err != nil {
				t.Fatalf("flush after retention: %v", err)
			}
			appendRecords(t, l, 10, 5, 100) // the log was not failed
			start := l.StartOffset()
			checkRecords(t, readAll(t, l, start), start, 3050, 100)
		})
	}
}

// gatedFS hands out files whose first fsync after arm() blocks until
// release is closed: a slow group-commit fsync. It reports file closes.
type gatedFS struct {
	armed   atomic.Bool
	entered chan struct{} // closed when the gated fsync starts
	release chan struct{}
	closes  atomic.Int64
}

func newGatedFS() *gatedFS {
	return &gatedFS{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedFS) open(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &gatedFile{File: f, g: g}, nil
}

type gatedFile struct {
	*os.File
	g *gatedFS
}

func (f *gatedFile) Sync() error {
	if f.g.armed.CompareAndSwap(true, false) {
		close(f.g.entered)
		<-f.g.release
	}
	return f.File.Sync()
}

func (f *gatedFile) Close() error { f.g.closes.Add(1); return f.File.Close() }

// TestCloseDuringGroupCommit is issue 6 item 17 (third bullet): Close
// during an in-flight group-commit fsync. Close fsynced the appends of the
// writers waiting on that fsync and closed the files; their fsync then hit
// a closed file and they were told their append failed, so their clients
// retried and wrote duplicates. An append whose bytes are durable must be
// acknowledged.
func TestCloseDuringGroupCommit(t *testing.T) {
	dir := t.TempDir()
	g := newGatedFS()
	l := openLog(t, dir, testConfig(FlushAlways), Options{OpenFile: g.open})
	appendRecords(t, l, 4, 5, 100)
	g.armed.Store(true)
	results := make(chan error, 2)
	appendAt := func(off int64) {
		_, err := l.Append(testutil.Batch(t, off, 5, 100, 1_000_000+off))
		results <- err
	}
	go appendAt(20) // its fsync is the slow one
	<-g.entered
	go appendAt(25) // written, waits for the fsync in flight
	testutil.Eventually(t, 5*time.Second, func() bool { l.mu.RLock(); defer l.mu.RUnlock(); return l.seq == 6 }, "second append written")
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	// Let the slow fsync finish once Close has closed the files (the old
	// behaviour) or is waiting for that fsync with the second appender.
	testutil.Eventually(t, 5*time.Second, func() bool { return g.closes.Load() > 0 || l.gc.waitingNow() >= 2 }, "close under way")
	close(g.release)
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("append during close: %v; its bytes were fsynced by Close, so a client retry writes a duplicate", err)
		}
	}
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
	l = openLog(t, dir, testConfig(FlushAlways), Options{})
	defer l.Close()
	checkRecords(t, readAll(t, l, 0), 0, 30, 100)
}
