package hot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// Review 7 (leader epochs, TruncateTo, structMu): single-node regressions.

// TestStructMuStress runs, on one log of a shared scheduler, every
// path that takes structMu, l.mu, the group commit or the scheduler at once:
// appends that roll (tiny segments) under each flush policy, background
// sealing and maintenance (age roll, retention), ShrinkTo, explicit Roll,
// Flush, SetLeaderEpoch, readers and OffsetForTime, and finally Close while
// all of them still run. A deadlock fails the watchdog with every
// goroutine's stack. Afterwards every acknowledged batch that retention
// kept reads back byte for byte with the epoch it was stamped with.
func TestStructMuStress(t *testing.T) {
	for _, policy := range []FlushPolicy{FlushAlways, FlushInterval, FlushOS} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) { reviewStress(t, policy) })
	}
}

func reviewStress(t *testing.T, policy FlushPolicy) {
	dir := t.TempDir()
	sched := NewScheduler(SchedulerOptions{Workers: 2})
	defer sched.Close()
	cfg := testConfig(policy)
	cfg.SegmentBytes = 8 << 10
	cfg.IndexIntervalBytes = 512
	cfg.SegmentAge = 3 * time.Millisecond
	cfg.RetentionBytes = 256 << 10
	cfg.FlushInterval = 2 * time.Millisecond
	cfg.FlushMessages = 0
	l := openLog(t, dir, cfg, Options{Scheduler: sched, BackgroundInterval: time.Millisecond})

	type acked struct {
		base  int64
		epoch int32
		n     int
	}
	var (
		mu   sync.Mutex
		acks []acked
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	closedOK := func(err error) bool { return err == nil || errors.Is(err, ErrClosed) }
	fail := func(format string, args ...any) {
		select {
		case <-stop:
			return // errors after Close are expected
		default:
		}
		t.Errorf(format, args...)
	}
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				b := testutil.Batch(t, 0, 1+i%4, 200, int64(w*1_000_000+i))
				res, err := l.Append(b)
				if err != nil {
					if !closedOK(err) {
						fail("append: %v", err)
					}
					return
				}
				// The epoch it was stamped with, read back from the log.
				h := readHeaderAt(t, l, res.BaseOffset)
				if h.PartitionLeaderEpoch == -2 {
					continue // closed before we could look
				}
				mu.Lock()
				acks = append(acks, acked{res.BaseOffset, h.PartitionLeaderEpoch, int(res.LastOffset - res.BaseOffset + 1)})
				mu.Unlock()
			}
		}()
	}
	loop := func(fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := fn(); err != nil && !closedOK(err) {
					fail("%v", err)
				}
				runtime.Gosched()
			}
		}()
	}
	loop(func() error { l.ShrinkTo(128 << 10); return nil })
	loop(func() error { l.ApplyRetention(time.Now()); return nil })
	loop(func() error { return l.Roll() })
	loop(func() error { return l.Flush() })
	loop(func() error {
		err := l.SetLeaderEpoch(l.LeaderEpoch() + 1)
		time.Sleep(time.Millisecond) // an epoch change is rare; keep some batches per epoch
		return err
	})
	for range 2 {
		loop(func() error {
			off := l.StartOffset()
			for range 50 {
				res, err := l.Read(off, 4<<10)
				var oor *OffsetOutOfRangeError
				if errors.As(err, &oor) {
					return nil // retention passed us
				}
				if err != nil {
					return fmt.Errorf("read at %d: %w", off, err)
				}
				if len(res.Records) == 0 {
					return nil
				}
				recs, err := batch.DecodeAll(res.Records)
				if err != nil {
					return fmt.Errorf("decode at %d: %w", off, err)
				}
				off = recs[len(recs)-1].Offset + 1
			}
			return nil
		})
	}
	loop(func() error { _, err := l.OffsetForTime(500_000); return err })

	time.Sleep(3 * time.Second)
	done := make(chan error, 1)
	closeStart := time.Now()
	go func() { done <- l.Close() }() // with everything still running
	watchdog(t, done, "Close")
	t.Logf("Close took %v with everything running", time.Since(closeStart))
	close(stop)
	wgDone := make(chan error, 1)
	go func() { wg.Wait(); wgDone <- nil }()
	watchdog(t, wgDone, "workers after Close")
	if t.Failed() {
		return
	}

	l2 := openLog(t, dir, cfg, Options{Scheduler: sched})
	defer l2.Close()
	start := l2.StartOffset()
	if len(acks) < 100 {
		t.Fatalf("only %d appends acknowledged in 3s", len(acks))
	}
	entries := l2.EpochEntries()
	checked := 0
	for _, a := range acks {
		if a.base < start {
			continue
		}
		h := readHeaderAt(t, l2, a.base)
		if h.BaseOffset != a.base || h.PartitionLeaderEpoch != a.epoch || int(h.NumRecords) != a.n {
			t.Fatalf("acked batch at %d (epoch %d, %d records) reads back as base %d epoch %d, %d records",
				a.base, a.epoch, a.n, h.BaseOffset, h.PartitionLeaderEpoch, h.NumRecords)
		}
		// The cache names the batch's epoch as the largest at or below its offset.
		var want int32 = -1
		for _, e := range entries {
			if e.StartOffset <= a.base {
				want = e.Epoch
			}
		}
		if want != a.epoch {
			t.Fatalf("batch at %d has epoch %d, the epoch cache %v says %d", a.base, a.epoch, entries, want)
		}
		checked++
	}
	t.Logf("%d appends acknowledged, %d checked after retention (start %d), %d epochs", len(acks), checked, start, len(entries))
}

// watchdog waits for done; after 60s it fails with every goroutine's stack
// (a deadlock never returns; a Close racing 3 appenders on a loaded 2-core
// machine was seen to take 15s).
func watchdog(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(60 * time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s did not return in 60s (deadlock?):\n%s", what, buf)
	}
}

// readHeaderAt reads the header of the batch at base (or fails).
func readHeaderAt(t testing.TB, l *Log, base int64) batch.Header {
	t.Helper()
	for {
		res, err := l.Read(base, 1)
		if err != nil {
			var oor *OffsetOutOfRangeError
			if errors.As(err, &oor) && base >= oor.Start && base >= oor.End {
				// Not yet visible (an fsync pending under flush=always
				// is acknowledged only after it, so this is the OS or
				// interval policy): wait for it.
				time.Sleep(time.Millisecond)
				continue
			}
			if errors.As(err, &oor) || errors.Is(err, ErrClosed) {
				return batch.Header{BaseOffset: base, PartitionLeaderEpoch: -2}
			}
			t.Errorf("read header at %d: %v", base, err)
			return batch.Header{}
		}
		if len(res.Records) < batch.HeaderSize {
			time.Sleep(time.Millisecond)
			continue
		}
		h, err := batch.ParseHeader(res.Records)
		if err != nil {
			t.Errorf("parse header at %d: %v", base, err)
		}
		return h
	}
}

// setFileEpochs rewrites, in a closed log's segment files, the partition
// leader epoch of every batch (outside the CRC) to epochOf(base offset): a
// data directory as another build left it.
func setFileEpochs(t *testing.T, dir string, epochOf func(base int64) int32) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, p := range logs {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for pos := 0; pos+batch.HeaderSize <= len(data); {
			n := int(binary.BigEndian.Uint32(data[pos+8:]))
			b := data[pos : pos+12+n]
			batch.SetLeaderEpoch(b, epochOf(int64(binary.BigEndian.Uint64(b))))
			pos += 12 + n
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenOldAndOddEpochCheckpoints: whatever the checkpoint says
// (missing: a data directory from before it; ahead of the log; out of
// order; garbage) and whatever epochs the batches carry (0 only, -1 only,
// or going down, as main left a log whose SetLeaderEpoch was not persisted
// across a restart), Open keeps every record byte for byte, and the next
// appends follow them.
func TestOpenOldAndOddEpochCheckpoints(t *testing.T) {
	cases := []struct {
		name       string
		epochOf    func(int64) int32
		checkpoint string // "" removes the file
	}{
		{"no-checkpoint-epoch0", func(int64) int32 { return 0 }, ""},
		{"no-checkpoint-epoch-1", func(int64) int32 { return -1 }, ""},
		{"no-checkpoint-epochs-go-down", func(o int64) int32 {
			if o < 600 {
				return 4
			}
			return 0
		}, ""},
		{"checkpoint-ahead-of-log", func(int64) int32 { return 0 }, "0\n3\n0 0\n5 1000\n9 100000\n"},
		{"checkpoint-out-of-order", func(o int64) int32 { return int32(o / 300) }, "0\n3\n0 0\n3 900\n1 300\n"},
		{"checkpoint-garbage", func(o int64) int32 { return int32(o / 300) }, "0\n2\nzz\n"},
		{"checkpoint-behind", func(o int64) int32 { return int32(o / 300) }, "0\n1\n0 0\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(FlushAlways)
			cfg.SegmentBytes = 16 << 10
			l := openLog(t, dir, cfg, Options{})
			appendRecords(t, l, 120, 10, 100) // 1200 records, many segments
			end := l.EndOffset()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			setFileEpochs(t, dir, c.epochOf)
			cp := filepath.Join(dir, epochCheckpointFile)
			if c.checkpoint == "" {
				os.Remove(cp)
			} else if err := os.WriteFile(cp, []byte(c.checkpoint), 0o644); err != nil {
				t.Fatal(err)
			}
			for round := range 2 { // the rewritten checkpoint opens too
				l = openLog(t, dir, cfg, Options{})
				if l.EndOffset() != end {
					t.Fatalf("round %d: end %d after open, want %d", round, l.EndOffset(), end)
				}
				checkRecords(t, readAll(t, l, 0), 0, end, 100)
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			}
			l = openLog(t, dir, cfg, Options{})
			appendRecords(t, l, 3, 10, 100)
			checkRecords(t, readAll(t, l, 0), 0, end+30, 100)
			t.Logf("epochs %v, leader epoch %d", l.EpochEntries(), l.LeaderEpoch())
			l.Close()
		})
	}
}

// TestOpenManySegmentsRebuildsEpochs: a log of many segments and epochs
// whose checkpoint is gone reopens with the same epoch cache, rebuilt from
// the batch headers; the Open times, with and without the checkpoint, are
// logged as figures (not asserted).
func TestOpenManySegmentsRebuildsEpochs(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(FlushOS)
	cfg.SegmentBytes = 4 << 10
	l := openLog(t, dir, cfg, Options{})
	for i := range 3000 {
		if _, err := l.Append(testutil.Batch(t, 0, 4, 200, int64(i))); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			l.SetLeaderEpoch(l.LeaderEpoch() + 1) // many epochs
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var want []EpochEntry
	measure := func(what string, prep func()) {
		var best time.Duration
		for i := range 3 {
			prep()
			start := time.Now()
			l := openLog(t, dir, cfg, Options{})
			d := time.Since(start)
			if i == 0 || d < best {
				best = d
			}
			got := l.EpochEntries()
			if want == nil {
				want = got
			} else if !slices.Equal(got, want) {
				t.Errorf("%s: epoch cache %v, want %v", what, got, want)
			}
			l.Close()
		}
		t.Logf("FIGURE open %d segments, %s: %v (best of 3)", len(segs), what, best)
	}
	measure("checkpoint present", func() {})
	measure("checkpoint missing", func() { os.Remove(filepath.Join(dir, "leader-epoch-checkpoint")) })
}

// TestSealDoesNotBlockAppends: a seal whose fsync hangs (a slow
// disk) holds structMu; appends to the new active segment, reads and
// SetLeaderEpoch must go on meanwhile (they need l.mu only).
func TestSealDoesNotBlockAppends(t *testing.T) {
	dir := t.TempDir()
	var hang atomic.Bool
	release := make(chan struct{})
	var entered atomic.Int32
	open := func(name string, flag int, perm os.FileMode) (File, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		return &hangFile{File: f, hang: &hang, release: release, entered: &entered}, nil
	}
	cfg := testConfig(FlushOS)
	l := openLog(t, dir, cfg, Options{OpenFile: open})
	defer l.Close()
	appendRecords(t, l, 5, 10, 100)
	hang.Store(true)
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return entered.Load() > 0 }, "seal's fsync started")
	done := make(chan error, 1)
	go func() {
		hang.Store(false) // new files' fsyncs (the active segment's) do not hang
		appendRecords(t, l, 5, 10, 100)
		if err := l.SetLeaderEpoch(3); err != nil {
			done <- err
			return
		}
		appendRecords(t, l, 5, 10, 100)
		readAll(t, l, 0)
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("appends / SetLeaderEpoch / reads waited for a seal's fsync")
	}
	close(release)
}

type hangFile struct {
	*os.File
	hang    *atomic.Bool
	release chan struct{}
	entered *atomic.Int32
}

func (f *hangFile) Sync() error {
	if f.hang.Load() {
		f.entered.Add(1)
		<-f.release
	}
	return f.File.Sync()
}

// TestShrinkToDoesNotWaitForSealFsync: sealing now holds structMu across
// the sealed segment's fsync, index and snapshot writes (for every pending
// segment in turn), and ShrinkTo / ApplyRetention take structMu first. A
// slow seal fsync therefore stalls the tiering daemon's disk-ceiling
// relief (freeUploaded calls ShrinkTo partition by partition), which
// appends at the ceiling wait for; on main retention never waited for a
// seal's fsync.
func TestShrinkToDoesNotWaitForSealFsync(t *testing.T) {
	dir := t.TempDir()
	var hang atomic.Bool
	release := make(chan struct{})
	var entered atomic.Int32
	open := func(name string, flag int, perm os.FileMode) (File, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		return &hangFile{File: f, hang: &hang, release: release, entered: &entered}, nil
	}
	cfg := testConfig(FlushOS)
	cfg.SegmentBytes = 8 << 10
	l := openLog(t, dir, cfg, Options{OpenFile: open})
	defer l.Close()
	appendRecords(t, l, 60, 10, 100) // several sealed segments
	testutil.Eventually(t, 5*time.Second, func() bool { return l.SealedEnd() >= l.EndOffset()-100 }, "segments sealed")
	hang.Store(true)
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return entered.Load() > 0 }, "seal's fsync started")
	hang.Store(false)
	done := make(chan int, 1)
	go func() { done <- l.ShrinkTo(0) }()
	select {
	case n := <-done:
		t.Logf("ShrinkTo deleted %d segments while a seal's fsync hung", n)
		close(release)
	case <-time.After(3 * time.Second):
		close(release)
		<-done
		t.Fatal("ShrinkTo (disk-ceiling relief) waited for an unrelated segment's seal fsync")
	}
}
