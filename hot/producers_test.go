package hot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// pb is an idempotent producer's batch of n 100-byte records.
func pb(t *testing.T, id int64, epoch int16, seq int32, n int) []byte {
	return testutil.IdempotentBatch(t, id, epoch, seq, n, 100)
}

func mustAppend(t testing.TB, l *Log, b []byte) AppendResult {
	t.Helper()
	res, err := l.Append(b)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return res
}

// wantDup asserts that b is recognised as a retry of the batch at
// [base, last], and that nothing was written.
func wantDup(t *testing.T, l *Log, b []byte, base, last int64) {
	t.Helper()
	end := l.EndOffset()
	res := mustAppend(t, l, b)
	if !res.Duplicate || res.BaseOffset != base || res.LastOffset != last {
		t.Fatalf("retry answered %+v, want the original offsets %d-%d as a duplicate", res, base, last)
	}
	if l.EndOffset() != end {
		t.Fatalf("a retry moved the log end from %d to %d", end, l.EndOffset())
	}
}

func wantRefused(t *testing.T, l *Log, b []byte, want error) {
	t.Helper()
	end := l.EndOffset()
	_, err := l.Append(b)
	if !errors.Is(err, want) {
		t.Fatalf("append: %v, want %v", err, want)
	}
	if l.EndOffset() != end {
		t.Fatalf("a refused append moved the log end from %d to %d", end, l.EndOffset())
	}
}

func TestProducerSequences(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()

	// A log that never held a record takes only sequence 0 from a
	// producer it does not know (KAFKA-15591).
	wantRefused(t, l, pb(t, 1, 0, 3, 2), ErrOutOfOrderSequence)

	var kept []AppendResult
	for i := range 6 {
		kept = append(kept, mustAppend(t, l, pb(t, 1, 0, int32(i*3), 3)))
		mustAppend(t, l, testutil.Batch(t, 0, 1, 10, 1)) // no producer: never checked
	}
	// A retry of any of the last five batches gets its original offsets,
	// the sixth-newest is out of order (Kafka keeps five).
	for i := 1; i < 6; i++ {
		res := kept[i]
		if res.Durability != DurabilityFsynced {
			t.Fatalf("first append durability %v", res.Durability)
		}
		wantDup(t, l, pb(t, 1, 0, int32(i*3), 3), res.BaseOffset, res.LastOffset)
	}
	wantRefused(t, l, pb(t, 1, 0, 0, 3), ErrOutOfOrderSequence)
	// A retry with a different sequence range is not the same batch.
	wantRefused(t, l, pb(t, 1, 0, 15, 2), ErrOutOfOrderSequence)
	// A gap.
	wantRefused(t, l, pb(t, 1, 0, 19, 1), ErrOutOfOrderSequence)
	mustAppend(t, l, pb(t, 1, 0, 18, 1))

	// A new epoch starts at 0; then the old epoch is fenced.
	wantRefused(t, l, pb(t, 1, 1, 19, 1), ErrOutOfOrderSequence)
	mustAppend(t, l, pb(t, 1, 1, 0, 2))
	wantRefused(t, l, pb(t, 1, 0, 19, 1), ErrInvalidProducerEpoch)
	// Batches of the old epoch are no longer duplicates either.
	wantRefused(t, l, pb(t, 1, 0, 18, 1), ErrInvalidProducerEpoch)

	// An unknown producer in a log that holds records: any sequence
	// (KIP-360: its state may have expired).
	mustAppend(t, l, pb(t, 2, 0, 500, 1))
	mustAppend(t, l, pb(t, 2, 0, 501, 1))

	// Sequences wrap from MaxInt32 to 0.
	mustAppend(t, l, pb(t, 3, 0, 1<<31-2, 2))
	mustAppend(t, l, pb(t, 3, 0, 0, 1))

	// Transactions are refused, with or without a producer.
	b, err := batch.Build([]batch.Record{{Value: []byte("x")}}, batch.BuildOptions{Producer: &batch.Producer{ID: 4}, Transactional: true})
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, l, b, ErrTransactional)
}

// A retry of a batch whose fsync is still running waits for it.
func TestProducerDuplicateWaitsForOriginal(t *testing.T) {
	g := newGatedFS()
	opts := Options{OpenFile: g.open}
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), opts)
	defer l.Close()
	mustAppend(t, l, pb(t, 1, 0, 0, 1))

	var once sync.Once
	release := func() { once.Do(func() { close(g.release) }) }
	defer release() // before Close, which would wait for the held fsync
	g.armed.Store(true)
	p, err := l.AppendDeferred(pb(t, 1, 0, 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := p.Wait(); done <- err }()
	<-g.entered // the original's fsync is under way
	dup, err := l.AppendDeferred(pb(t, 1, 0, 1, 1))
	if err != nil || !dup.Duplicate() {
		t.Fatalf("retry: %v, duplicate %v", err, dup != nil && dup.Duplicate())
	}
	if !dup.MustWait() {
		t.Fatal("a retry of a batch not yet fsynced does not wait for the fsync")
	}
	dupDone := make(chan AppendResult, 1)
	go func() { r, _ := dup.Wait(); dupDone <- r }()
	select {
	case r := <-dupDone:
		t.Fatalf("retry acknowledged (%+v) while the original's fsync is held", r)
	case <-done:
		t.Fatal("original acknowledged while its fsync is held")
	default:
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := <-dupDone; r.BaseOffset != 1 || r.Durability != DurabilityFsynced {
		t.Fatalf("retry answered %+v, want base 1, fsynced", r)
	}
}

// The producer state survives a clean restart, a crash (the files as a
// kill -9 leaves them) and retention deleting the segments that held a
// producer's batches.
func TestProducerStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(FlushAlways)
	cfg.RetentionBytes = 8 << 10
	l := openLog(t, dir, cfg, Options{})
	first := mustAppend(t, l, pb(t, 1, 0, 0, 5))
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	// Enough other batches to roll several segments, so retention can
	// delete the one holding producer 1's batch.
	var last AppendResult
	for i := range 100 {
		last = mustAppend(t, l, pb(t, 2, 0, int32(i*10), 10))
		if i%10 == 9 {
			if err := l.Roll(); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(l.SealedSegments()) == len(l.Segments())-1 }, "segments sealed")
	l.ApplyRetention(time.Now())
	if l.StartOffset() <= first.LastOffset {
		t.Fatalf("retention kept the first segment (start %d)", l.StartOffset())
	}
	tail := mustAppend(t, l, pb(t, 2, 0, 1000, 3)) // after the last snapshot

	// A crash: copy the files as they are while the log is open.
	crashed := filepath.Join(t.TempDir(), "crashed")
	copyDir(t, dir, crashed)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	for name, d := range map[string]string{"clean restart": dir, "crash": crashed} {
		t.Run(name, func(t *testing.T) {
			l := openLog(t, d, cfg, Options{})
			defer l.Close()
			wantDup(t, l, pb(t, 1, 0, 0, 5), first.BaseOffset, first.LastOffset)
			wantDup(t, l, pb(t, 2, 0, 1000, 3), tail.BaseOffset, tail.LastOffset)
			wantDup(t, l, pb(t, 2, 0, 990, 10), last.BaseOffset, last.LastOffset)
			wantRefused(t, l, pb(t, 1, 0, 6, 1), ErrOutOfOrderSequence)
			mustAppend(t, l, pb(t, 1, 0, 5, 1))
		})
	}
}

// A crash that tore the tail drops the torn batch from the producer state
// too, so the producer's retry of it is appended, not answered as a
// duplicate of offsets that no longer exist.
func TestProducerStateAfterTornTail(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(FlushAlways)
	l := openLog(t, dir, cfg, Options{})
	mustAppend(t, l, pb(t, 1, 0, 0, 2))
	lost := mustAppend(t, l, pb(t, 1, 0, 2, 2))
	seg := l.Segments()[0].Path
	l.Close()
	// Tear the last batch and move the recovery point back, as a crash
	// would have left them; Close's snapshot now lies past the log end.
	st, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(seg, st.Size()-10); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, recoveryPointFile), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, cfg, Options{})
	defer l.Close()
	if l.EndOffset() != lost.BaseOffset {
		t.Fatalf("end %d after the torn tail, want %d", l.EndOffset(), lost.BaseOffset)
	}
	res := mustAppend(t, l, pb(t, 1, 0, 2, 2))
	if res.Duplicate || res.BaseOffset != lost.BaseOffset {
		t.Fatalf("retry of the torn batch answered %+v, want a new append at %d", res, lost.BaseOffset)
	}
}

// An idle producer's state expires at a roll after the expiration; an
// active one's does not.
func TestProducerExpiry(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	clock := func() time.Time { return time.UnixMilli(now.Load()) }
	l := openLog(t, t.TempDir(), testConfig(FlushOS), Options{Now: clock, ProducerIDExpiration: time.Hour})
	defer l.Close()
	mustAppend(t, l, pb(t, 1, 0, 0, 1))
	mustAppend(t, l, pb(t, 2, 0, 0, 1))
	now.Add((50 * time.Minute).Milliseconds())
	mustAppend(t, l, pb(t, 2, 0, 1, 1))
	now.Add((20 * time.Minute).Milliseconds())
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	// Producer 1 is forgotten: any sequence is taken.
	mustAppend(t, l, pb(t, 1, 0, 7, 1))
	// Producer 2 is still known.
	wantRefused(t, l, pb(t, 2, 0, 7, 1), ErrOutOfOrderSequence)
}

// A corrupted .producers snapshot that still parses is not trusted: here
// one changed byte turns producer 7 into producer 8, which the snapshot's
// CRC catches, so the segments' batch headers rebuild the state and the
// retry of producer 7's last batch, which is in the log, is answered as a
// duplicate, not written a second time.
func TestCorruptProducerSnapshotIsNotTrusted(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(FlushAlways)
	l := openLog(t, dir, cfg, Options{})
	mustAppend(t, l, pb(t, 7, 0, 0, 2))
	last := mustAppend(t, l, pb(t, 7, 0, 2, 2))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	offs, err := producerSnapshotOffsets(dir)
	if err != nil || len(offs) == 0 {
		t.Fatalf("no snapshot after Close: %v", err)
	}
	path := producerSnapshotPath(dir, offs[len(offs)-1])
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(data, []byte(`"7":`)) != 1 {
		t.Fatalf("test setup: snapshot %s", data)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(`"7":`), []byte(`"8":`), 1), 0o644); err != nil {
		t.Fatal(err)
	}

	l = openLog(t, dir, cfg, Options{})
	defer l.Close()
	res := mustAppend(t, l, pb(t, 7, 0, 2, 2))
	if !res.Duplicate {
		t.Fatalf("retry of producer 7's batch at %d-%d after a corrupted snapshot: written again at %d-%d (log end %d)",
			last.BaseOffset, last.LastOffset, res.BaseOffset, res.LastOffset, l.EndOffset())
	}
}

// A corrupted newest snapshot falls back to the one before it: here the
// segment holding producer 1's batch is gone to retention, so only that
// older snapshot still knows producer 1, and its retry is answered as a
// duplicate.
func TestCorruptProducerSnapshotFallsBackToOlder(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(FlushAlways)
	cfg.RetentionBytes = 8 << 10
	l := openLog(t, dir, cfg, Options{})
	first := mustAppend(t, l, pb(t, 1, 0, 0, 5))
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		mustAppend(t, l, pb(t, 2, 0, int32(i*10), 10))
		if i%10 == 9 {
			if err := l.Roll(); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(l.SealedSegments()) == len(l.Segments())-1 }, "segments sealed")
	l.ApplyRetention(time.Now())
	if l.StartOffset() <= first.LastOffset {
		t.Fatalf("retention kept the first segment (start %d)", l.StartOffset())
	}
	mustAppend(t, l, pb(t, 2, 0, 400, 1)) // so Close writes a snapshot of its own
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	offs, err := producerSnapshotOffsets(dir)
	if err != nil || len(offs) < 2 {
		t.Fatalf("snapshots %v after Close: %v", offs, err)
	}
	path := producerSnapshotPath(dir, offs[len(offs)-1])
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(data, []byte(`"1":`)) != 1 {
		t.Fatalf("test setup: snapshot %s", data)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(`"1":`), []byte(`"3":`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, cfg, Options{})
	defer l.Close()
	wantDup(t, l, pb(t, 1, 0, 0, 5), first.BaseOffset, first.LastOffset)
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
