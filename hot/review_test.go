package hot

import (
	"errors"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// holdFS hands out segment files one of whose calls can be held: the next
// Sync or ReadAt of the file named by arm waits until release receives the
// error it should return (nil: the real call's result). entered is closed
// when the held call starts.
type holdFS struct {
	mu      sync.Mutex
	path    string // "": nothing armed
	op      string // "sync" or "readat"
	entered chan struct{}
	release chan error
}

func (h *holdFS) arm(path, op string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.path, h.op = path, op
	h.entered, h.release = make(chan struct{}), make(chan error, 1)
}

// take reports whether this call is the held one and, if so, disarms.
func (h *holdFS) take(path, op string) (chan struct{}, chan error, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.path != path || h.op != op {
		return nil, nil, false
	}
	h.path = ""
	return h.entered, h.release, true
}

func (h *holdFS) open(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &holdFile{File: f, h: h, name: name}, nil
}

type holdFile struct {
	*os.File
	h    *holdFS
	name string
}

func (f *holdFile) Sync() error {
	if entered, release, ok := f.h.take(f.name, "sync"); ok {
		close(entered)
		injected := <-release
		err := f.File.Sync()
		if injected != nil {
			return injected
		}
		return err
	}
	return f.File.Sync()
}

func (f *holdFile) ReadAt(b []byte, off int64) (int, error) {
	if entered, release, ok := f.h.take(f.name, "readat"); ok {
		close(entered)
		if err := <-release; err != nil {
			return 0, err
		}
	}
	return f.File.ReadAt(b, off)
}

// An fsync error must fail the log even when sealing fsyncs the same
// segment meanwhile and succeeds. On Linux the first fsync after a
// writeback error reports it and the pages are marked clean, so a second
// fsync returns success although the data never reached the disk; the
// package's own rule is that "a later success would be a lie". syncDirty
// ignored a failed fsync whenever the segment had become durable by
// sealing, so an append under flush.policy=always was acknowledged as
// fsynced although the fsync covering it failed.
func TestFsyncErrorNotHiddenBySealing(t *testing.T) {
	t.Run("always: a failed group-commit fsync of a segment sealed meanwhile acknowledges the append", func(t *testing.T) {
		dir := t.TempDir()
		var h holdFS
		l := openLog(t, dir, testConfig(FlushAlways), Options{OpenFile: h.open})
		defer l.Close()
		appendRecords(t, l, 10, 5, 100)
		seg0 := segmentPrefix(dir, 0) + ".log"

		h.arm(seg0, "sync")
		entered, release := h.entered, h.release
		type result struct {
			res AppendResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			end := l.EndOffset()
			res, err := l.Append(testutil.Batch(t, end, 5, 100, 1_000_000+end))
			done <- result{res, err}
		}()
		<-entered // the append's fsync of segment 0 is under way
		if err := l.Roll(); err != nil {
			t.Fatal(err)
		}
		// Sealing fsyncs segment 0 (that fsync is not held) and seals it.
		testutil.Eventually(t, 10*time.Second, func() bool { return len(l.SealedSegments()) == 1 }, "segment 0 sealed")
		release <- syscall.EIO // the group commit's fsync fails
		r := <-done
		if r.err == nil {
			t.Fatalf("append acknowledged (%v) although the fsync covering it failed with EIO", r.res.Durability)
		}
		if !errors.Is(r.err, ErrLogFailed) {
			t.Errorf("append: %v, want ErrLogFailed", r.err)
		}
	})
}

// ErrRetriable promises "nothing was written, the same call may succeed
// later". Append stamped the caller's buffer (LogAppendTime attribute,
// max timestamp, CRC) before the roll that failed, so on a LogAppendTime
// topic retrying the same buffer was refused as a producer batch carrying
// the LogAppendTime bit.
func TestRetriableAppendRetriesWithTheSameBuffer(t *testing.T) {
	for _, tt := range []TimestampType{CreateTime, LogAppendTime} {
		t.Run(string(tt)+": retry after a failed roll", func(t *testing.T) {
			var ffs faultyFS
			var mu sync.Mutex
			now := time.UnixMilli(1_700_000_000_000)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			cfg := testConfig(FlushAlways)
			cfg.TimestampType = tt
			l := openLog(t, t.TempDir(), cfg, Options{OpenFile: ffs.open, Now: clock})
			defer l.Close()
			if _, err := l.Append(producerBatch(t, "a", 2, batch.Zstd, 1000)); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			now = now.Add(2 * time.Hour) // the next append rolls (segment.ms)
			mu.Unlock()
			ffs.failCreate.Store(true)
			b := producerBatch(t, "b", 2, batch.Zstd, 2000)
			if _, err := l.Append(b); !errors.Is(err, ErrRetriable) {
				t.Fatalf("append whose roll fails: %v, want ErrRetriable", err)
			}
			ffs.failCreate.Store(false)
			res, err := l.Append(b)
			if err != nil {
				t.Fatalf("the same append retried after ErrRetriable: %v", err)
			}
			if res.BaseOffset != 2 {
				t.Fatalf("retried append at %d, want 2", res.BaseOffset)
			}
			got, err := l.Read(2, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := batch.DecodeAll(got.Records)
			if err != nil || len(recs) != 2 || string(recs[1].Value) != "b-1" {
				t.Fatalf("read back %d records, %v", len(recs), err)
			}
		})
	}
}

// OffsetForTime looks its segment up under the lock and scans it after
// letting go; retention deleting that segment in between closed the file
// under the scan, and the caller got "file already closed" instead of the
// answer a lookup after the deletion gives (item 5's rule for reads).
func TestOffsetForTimeRacingRetention(t *testing.T) {
	t.Run("retention closes the segment being scanned", func(t *testing.T) {
		dir := t.TempDir()
		var h holdFS
		cfg := testConfig(FlushOS)
		l := openLog(t, dir, cfg, Options{OpenFile: h.open})
		defer l.Close()
		appendRecords(t, l, 10, 5, 100) // timestamps 1,000,000 + offset
		if err := l.Roll(); err != nil {
			t.Fatal(err)
		}
		appendRecords(t, l, 10, 5, 100)
		testutil.Eventually(t, 10*time.Second, func() bool { return len(l.SealedSegments()) == 1 }, "segment 0 sealed")

		h.arm(segmentPrefix(dir, 0)+".log", "readat")
		entered, release := h.entered, h.release
		type result struct {
			off int64
			err error
		}
		done := make(chan result, 1)
		go func() {
			off, err := l.OffsetForTime(1_000_000 + 20) // inside segment 0
			done <- result{off, err}
		}()
		<-entered
		cfg.RetentionBytes = 0
		if err := l.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		if n := l.ApplyRetention(time.Now()); n != 1 {
			t.Fatalf("retention deleted %d segments, want 1", n)
		}
		release <- nil
		r := <-done
		if r.err != nil {
			t.Fatalf("OffsetForTime racing retention: %v; want the answer after the deletion (offset 50, the new start)", r.err)
		}
		if r.off != 50 {
			t.Fatalf("OffsetForTime = %d, want 50 (the new start)", r.off)
		}
	})
}

// A read or time lookup that finds the log closed under it (the broker
// closing, or a topic being deleted) scanned a closed file and answered
// "short batch" - InvalidArgument at the gRPC API, as if the client had
// asked something malformed, which ends a follow stream - instead of
// ErrClosed (Unavailable: retry elsewhere or later).
func TestReadRacingCloseAnswersErrClosed(t *testing.T) {
	setup := func(t *testing.T) (*Log, *holdFS, string) {
		dir := t.TempDir()
		h := &holdFS{}
		l := openLog(t, dir, testConfig(FlushAlways), Options{OpenFile: h.open})
		appendRecords(t, l, 10, 5, 100)
		return l, h, segmentPrefix(dir, 0) + ".log"
	}
	t.Run("read after Close is not a short batch", func(t *testing.T) {
		l, _, _ := setup(t)
		l.Close()
		if _, err := l.Read(10, 1<<20); !errors.Is(err, ErrClosed) {
			t.Fatalf("read of a closed log: %v, want ErrClosed", err)
		}
		if _, err := l.OffsetForTime(1_000_010); !errors.Is(err, ErrClosed) {
			t.Fatalf("OffsetForTime of a closed log: %v, want ErrClosed", err)
		}
	})
	t.Run("read under way when Close closes the file is not a short batch", func(t *testing.T) {
		l, h, seg0 := setup(t)
		h.arm(seg0, "readat")
		entered, release := h.entered, h.release
		done := make(chan error, 1)
		go func() {
			_, err := l.Read(10, 1<<20)
			done <- err
		}()
		<-entered
		l.Close()
		release <- nil
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("read racing Close: %v, want ErrClosed", err)
		}
	})
}

// A read error during the recovery scan (EIO from a failing disk, say) was
// turned into "short batch" by the scanner, so recovery took it for a torn
// tail and truncated the segment there: under flush.policy=always the
// records after the recovery point are acknowledged as fsynced, and one
// failed read at open deleted them. An I/O error must make Open fail and
// leave the files alone.
func TestRecoveryReadErrorTruncatesNothing(t *testing.T) {
	t.Run("EIO while scanning the active segment after a crash", func(t *testing.T) {
		dir := t.TempDir()
		l := openLog(t, dir, testConfig(FlushAlways), Options{})
		appendRecords(t, l, 20, 5, 100) // acknowledged as fsynced
		// The crash: a copy of the directory as it is now, before Close
		// writes indexes and moves the recovery point (still 0).
		crashed := t.TempDir()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(dir + "/" + e.Name())
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(crashed+"/"+e.Name(), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()

		h := &holdFS{}
		h.arm(segmentPrefix(crashed, 0)+".log", "readat")
		h.release <- syscall.EIO // the scan's first read fails
		if l2, err := Open(crashed, testConfig(FlushAlways), Options{OpenFile: h.open}); err == nil {
			n := l2.EndOffset()
			l2.Close()
			t.Errorf("open through a read error succeeded with end offset %d, want an error naming EIO", n)
		} else if !errors.Is(err, syscall.EIO) {
			t.Errorf("open through a read error: %v, want an error wrapping EIO", err)
		} else {
			t.Logf("open through a read error: %v", err)
		}
		l3 := openLog(t, crashed, testConfig(FlushAlways), Options{})
		defer l3.Close()
		if end := l3.EndOffset(); end != 100 {
			t.Fatalf("after one failed read at open the log ends at %d, want 100: acknowledged records were truncated", end)
		}
		checkRecords(t, readAll(t, l3, 0), 0, 100, 100)
	})
}
