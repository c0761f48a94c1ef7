package hot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// checkEmptyAt checks that l is an empty log starting at offset, with no
// producer snapshot, epoch checkpoint or marker left in its directory.
func checkEmptyAt(t *testing.T, l *Log, dir string, offset int64) {
	t.Helper()
	if s, e := l.StartOffset(), l.EndOffset(); s != offset || e != offset {
		t.Fatalf("log spans %d to %d, want an empty log at %d", s, e, offset)
	}
	if segs := l.Segments(); len(segs) != 1 || segs[0].BaseOffset != offset || segs[0].Size != 0 {
		t.Fatalf("segments %+v, want one empty segment at %d", segs, offset)
	}
	if got := l.EpochEntries(); len(got) != 0 {
		t.Fatalf("epochs %v, want none", got)
	}
	var oor *OffsetOutOfRangeError
	if _, err := l.Read(offset-1, 1<<20); offset > 0 && !errors.As(err, &oor) {
		t.Fatalf("read below the new start: %v, want out of range", err)
	}
	if res, err := l.Read(offset, 1<<20); err != nil || len(res.Records) != 0 {
		t.Fatalf("read at the new start: %d bytes, %v", len(res.Records), err)
	}
	names := dirNames(t, dir)
	want := []string{filepath.Base(segmentPrefix(dir, offset)) + ".log", recoveryPointFile}
	if !slices.Equal(names, want) {
		t.Fatalf("directory holds %v, want %v", names, want)
	}
	if rp := readRecoveryPoint(dir); rp != offset {
		t.Fatalf("recovery point %d, want %d", rp, offset)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// newLeaderAt builds a leader log that starts at offset (its older
// batches tiered away) with 30 batches of epoch 3, some from producer 7.
func newLeaderAt(t *testing.T, offset int64) *Log {
	t.Helper()
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{InitialOffset: offset, LeaderEpoch: 3})
	for i := range 30 {
		b := testutil.Batch(t, l.EndOffset(), 5, 1000, 2_000_000+l.EndOffset())
		if i%3 == 0 {
			b = testutil.IdempotentBatch(t, 7, 1, int32(i/3*5), 5, 1000)
		}
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// follower builds, in a new directory, a replica of the epochs leader:
// several segments, producer snapshots, an epoch checkpoint.
func follower(t *testing.T, leader *Log) (*Log, string) {
	t.Helper()
	dir := t.TempDir()
	f := openLog(t, dir, testConfig(FlushAlways), Options{})
	replicate(t, leader, f)
	return f, dir
}

func TestTruncateFullyAndStartAt(t *testing.T) {
	leader, _ := leaderWithEpochs(t, t.TempDir())
	defer leader.Close()
	end := leader.EndOffset()
	mid := leader.Segments()[1].BaseOffset // a segment of the old log has this base
	for _, c := range []struct {
		name   string
		offset int64
	}{
		{"above the log (KIP-1023: the leader's tiered offset)", end + 1000},
		{"at an old segment's base", mid},
		{"inside an old batch", mid + 2},
		{"at zero (a wiped follower)", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, dir := follower(t, leader)
			defer func() { f.Close() }()
			if err := f.TruncateFullyAndStartAt(c.offset); err != nil {
				t.Fatal(err)
			}
			checkEmptyAt(t, f, dir, c.offset)
			// The producer state went too: producer 7's old sequence 0
			// is new, not a retry of the old log's batch.
			if c.offset == 0 {
				res := mustAppend(t, f, testutil.IdempotentBatch(t, 7, 0, 0, 5, 1000))
				if res.Duplicate || res.BaseOffset != 0 {
					t.Fatalf("append after a full truncation answered %+v, want a new batch at 0", res)
				}
				return
			}
			// The follower now replicates the new leader from offset.
			nl := newLeaderAt(t, c.offset)
			defer nl.Close()
			replicate(t, nl, f)
			checkPrefixFrom(t, nl, f, c.offset)
			f.Close()
			f = openLog(t, dir, testConfig(FlushAlways), Options{})
			checkPrefixFrom(t, nl, f, c.offset)
			// The producer state came from the new leader's batches: a
			// retry of producer 7's last batch is a duplicate.
			_, order := logBatches(t, nl, c.offset)
			var last batch.Header
			all, _ := logBatches(t, nl, c.offset)
			for _, base := range order {
				if h, _ := batch.Peek(all[base]); h.ProducerID == 7 {
					last = h
				}
			}
			wantDup(t, f, testutil.IdempotentBatch(t, 7, 1, last.BaseSequence, 5, 1000), last.BaseOffset, last.LastOffset())
		})
	}
}

// checkPrefixFrom checks that f holds exactly leader's batches and epochs
// from start to leader's end.
func checkPrefixFrom(t *testing.T, leader, f *Log, start int64) {
	t.Helper()
	if f.StartOffset() != start || f.EndOffset() != leader.EndOffset() {
		t.Fatalf("log spans %d to %d, want %d to %d", f.StartOffset(), f.EndOffset(), start, leader.EndOffset())
	}
	want, wantOrder := logBatches(t, leader, start)
	got, order := logBatches(t, f, start)
	if !slices.Equal(order, wantOrder) {
		t.Fatalf("batches at %v, want %v", order, wantOrder)
	}
	for _, base := range order {
		if !bytes.Equal(got[base], want[base]) {
			t.Fatalf("batch at %d differs from the leader's", base)
		}
	}
	if got, want := f.EpochEntries(), leader.EpochEntries(); !slices.Equal(got, want) {
		t.Fatalf("epochs %v, want %v", got, want)
	}
}

// TestTruncateFullyRacesReaders reads the old log from several goroutines
// while it is replaced: every read answers with the old log's batches,
// out of range, or the new empty log - never an error or foreign bytes.
func TestTruncateFullyRacesReaders(t *testing.T) {
	leader, _ := leaderWithEpochs(t, t.TempDir())
	defer leader.Close()
	all, order := logBatches(t, leader, 0)
	f, _ := follower(t, leader)
	defer f.Close()
	const offset = 5000
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := g; !stop.Load(); i++ {
				off := order[i%len(order)]
				res, err := f.Read(off, 4096)
				reads.Add(1)
				var oor *OffsetOutOfRangeError
				switch {
				case errors.As(err, &oor):
					if oor.Start != offset && oor.Start != 0 {
						errs <- err
						return
					}
				case err != nil:
					errs <- err
					return
				case len(res.Records) > 0:
					h, perr := batch.Peek(res.Records)
					if perr != nil || !bytes.Equal(res.Records[:h.Size()], all[h.BaseOffset]) {
						errs <- errors.New("read at " + strconv.FormatInt(off, 10) + " returned bytes that are not the old log's")
						return
					}
				}
			}
		})
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return reads.Load() > 200 }, "readers started")
	if err := f.TruncateFullyAndStartAt(offset); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return reads.Load() > 400 }, "readers after the truncation")
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if f.StartOffset() != offset || f.EndOffset() != offset {
		t.Fatalf("log spans %d to %d, want empty at %d", f.StartOffset(), f.EndOffset(), offset)
	}
}

// TestKill9DuringTruncateFully kills a real process with SIGKILL at each
// step of a full truncation: the log opens either as the old one (killed
// before the marker) or as the new empty one - never a mix, never a gap
// error - and a replica then appends at the new start.
func TestKill9DuringTruncateFully(t *testing.T) {
	leader, _ := leaderWithEpochs(t, t.TempDir())
	defer leader.Close()
	src := t.TempDir()
	f := openLog(t, src, testConfig(FlushAlways), Options{})
	replicate(t, leader, f)
	mid := f.Segments()[1].BaseOffset
	f.Close()
	for _, offset := range []int64{leader.EndOffset() + 1000, mid} {
		nl := newLeaderAt(t, offset)
		for _, step := range []string{"fully-begin", "fully-marker", "fully-segment-deleted", "fully-created", "fully-state", "fully-done"} {
			dir := t.TempDir()
			copyDir(t, src, dir)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), truncateChildEnv+"="+dir+","+strconv.FormatInt(offset, 10)+","+step+",fully")
			out, err := cmd.CombinedOutput()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("offset %d step %s: child was not killed: %v: %s", offset, step, err, out)
			}
			l := openLog(t, dir, testConfig(FlushAlways), Options{})
			if step == "fully-begin" {
				checkPrefixOf(t, leader, l, leader.EndOffset())
				if err := l.TruncateFullyAndStartAt(offset); err != nil {
					t.Fatal(err)
				}
			} else {
				if _, err := os.Stat(filepath.Join(dir, truncateFullyFile)); !os.IsNotExist(err) {
					t.Fatalf("offset %d step %s: marker left after Open: %v", offset, step, err)
				}
			}
			checkEmptyAtOpened(t, l, offset)
			replicate(t, nl, l)
			checkPrefixFrom(t, nl, l, offset)
			l.Close()
			t.Logf("offset %d: killed at %s: reopened empty at %d", offset, step, offset)
		}
		nl.Close()
	}
}

// checkEmptyAtOpened is checkEmptyAt for a reopened log, whose directory
// also holds the files Open writes (a producer snapshot and a checkpoint
// of the log's epoch, both at offset).
func checkEmptyAtOpened(t *testing.T, l *Log, offset int64) {
	t.Helper()
	if s, e := l.StartOffset(), l.EndOffset(); s != offset || e != offset {
		t.Fatalf("log spans %d to %d, want an empty log at %d", s, e, offset)
	}
	if segs := l.Segments(); len(segs) != 1 || segs[0].BaseOffset != offset || segs[0].Size != 0 {
		t.Fatalf("segments %+v, want one empty segment at %d", segs, offset)
	}
	if snaps, _ := producerSnapshotOffsets(l.dir); len(snaps) > 1 || (len(snaps) == 1 && snaps[0] != offset) {
		t.Fatalf("producer snapshots at %v survived", snaps)
	}
}

// logRecorder keeps the messages logged at Warn and above.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) has(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.msgs, func(m string) bool { return strings.HasPrefix(m, prefix) })
}

// TestEpochCheckpointContradictedByBatches writes checkpoints that
// disagree with the batch headers: Open warns and rebuilds them. A
// consistent one (including an epoch with no batches yet) is used as is,
// without the rebuild.
func TestEpochCheckpointContradictedByBatches(t *testing.T) {
	const rebuiltMsg = "WARN leader epoch checkpoint disagrees"
	const scanMsg = "INFO rebuilt leader epochs from batch headers"
	open := func(dir string) (*Log, *logRecorder) {
		rec := &logRecorder{}
		return openLog(t, dir, testConfig(FlushAlways), Options{Logger: slog.New(rec)}), rec
	}

	// Batches all of epoch 0, past offset 1000 (1000 a batch boundary).
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	appendRecords(t, l, 220, 5, 100)
	l.Close()
	path := filepath.Join(dir, epochCheckpointFile)
	for _, c := range []struct{ name, file string }{
		{"an epoch no batch has", "0\n2\n0 0\n5 1000\n"},
		{"an epoch starting inside a batch", "0\n2\n0 0\n5 1003\n"},
		{"a first epoch the batches do not carry", "0\n1\n1 0\n"},
	} {
		os.WriteFile(path, []byte(c.file), 0o644)
		l, rec := open(dir)
		if got := l.EpochEntries(); !slices.Equal(got, []EpochEntry{{0, 0}}) {
			t.Fatalf("%s: epochs %v, want [{0 0}]", c.name, got)
		}
		l.Close()
		if !rec.has(rebuiltMsg) {
			t.Fatalf("%s: no warning: %v", c.name, rec.msgs)
		}
		if got, err := readEpochCheckpoint(path); err != nil || !slices.Equal(got, []EpochEntry{{0, 0}}) {
			t.Fatalf("%s: checkpoint rewritten as %v (%v)", c.name, got, err)
		}
	}

	// Three epochs (0, 2, 5 from 0, 100, 200), then epoch 7 with no batch.
	dir = t.TempDir()
	leader, want := leaderWithEpochs(t, dir)
	if err := leader.SetLeaderEpoch(7); err != nil {
		t.Fatal(err)
	}
	want = append(want, EpochEntry{7, leader.EndOffset()})
	leader.Close()
	path = filepath.Join(dir, epochCheckpointFile)
	l, rec := open(dir)
	if got := l.EpochEntries(); !slices.Equal(got, want) || rec.has(rebuiltMsg) || rec.has(scanMsg) {
		t.Fatalf("consistent checkpoint: epochs %v (want %v), logged %v", got, want, rec.msgs)
	}
	l.Close()
	for _, c := range []struct{ name, file string }{
		{"an epoch that starts too early", "0\n3\n0 0\n2 95\n5 200\n"},
		{"an epoch between two real ones", "0\n4\n0 0\n2 100\n3 150\n5 200\n"},
		{"the newest batch under another epoch", "0\n3\n0 0\n2 100\n6 295\n"},
	} {
		os.WriteFile(path, []byte(c.file), 0o644)
		l, rec := open(dir)
		got := l.EpochEntries()
		l.Close()
		// Epoch 7 (no batches) is gone with the file; the log's epoch
		// is the newest its batches carry.
		if !slices.Equal(got, want[:3]) || !rec.has(rebuiltMsg) {
			t.Fatalf("%s: epochs %v, want %v; logged %v", c.name, got, want[:3], rec.msgs)
		}
	}
}
