package hot

import (
	"runtime"
	"time"

	"bytes"
	"github.com/tierlog/tierlog/internal/testutil"
	"os"
	"testing"
)

// A .producers snapshot is JSON with no checksum, so a corrupted one that
// still parses is taken as the truth: here one flipped byte turns
// producer 7 into producer 8, and the retry of producer 7's last batch,
// which is in the log, is written a second time. Kafka's snapshots carry
// a CRC; a snapshot that fails it should be skipped (an older one, or the
// segments' batch headers, rebuild the state).
func TestReview_CorruptProducerSnapshotAcceptsDuplicate(t *testing.T) {
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

// The producer state has no bound but the expiration (24 h, applied only
// when a segment rolls): a client calling InitProducerId in a loop and
// producing one batch with each id grows it for a day. Each roll then
// clones and expires the whole table under the log lock (appends wait)
// and each seal writes all of it as JSON. This reports, for 300k
// producers of one batch each: the lock hold of a roll, the snapshot's
// size and the heap the state takes.
//
//	go test ./hot -run '^$' -bench BenchmarkReview_RollWithManyProducers -benchtime 3x
func BenchmarkReview_RollWithManyProducers(b *testing.B) {
	const producers = 300_000
	dir := b.TempDir()
	cfg := testConfig(FlushOS)
	cfg.SegmentBytes = 1 << 30
	l := openLog(b, dir, cfg, Options{})
	defer l.Close()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for i := range producers {
		mustAppendTB(b, l, testutil.IdempotentBatch(b, int64(i+1), 0, 0, 1, 1))
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	heap := float64(m1.HeapAlloc) - float64(m0.HeapAlloc)
	b.ResetTimer()
	var held time.Duration
	for i := range b.N {
		mustAppendTB(b, l, testutil.IdempotentBatch(b, producers+1, 0, int32(i), 1, 1))
		start := time.Now()
		l.mu.Lock() // what Roll holds, measured from outside: the next append waits this long
		if err := l.rollLocked(); err != nil {
			b.Fatal(err)
		}
		l.mu.Unlock()
		held += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(heap/producers, "heap-B/producer")
	b.ReportMetric(float64(held.Milliseconds())/float64(b.N), "lock-ms/roll")
	testutil.Eventually(b, time.Minute, func() bool { return len(l.SealedSegments()) >= b.N }, "rolled segments sealed")
	offs, err := producerSnapshotOffsets(dir)
	if err != nil || len(offs) == 0 {
		b.Fatalf("no snapshot: %v", err)
	}
	st, err := os.Stat(producerSnapshotPath(dir, offs[len(offs)-1]))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size())/1e6, "snapshot-MB")
}

func mustAppendTB(tb testing.TB, l *Log, b []byte) {
	tb.Helper()
	if _, err := l.Append(b); err != nil {
		tb.Fatal(err)
	}
}
