package hot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// replicated opens a replicated log (Options.Replicated) in dir.
func replicated(t testing.TB, dir string, cfg Config, opts Options) *Log {
	t.Helper()
	opts.Replicated = true
	return openLog(t, dir, cfg, opts)
}

// appendTo appends count batches of perBatch records at the log end
// (LogEndOffset: a replicated log's EndOffset is its high watermark),
// batch k's timestamps starting at ts0+1000*k.
func appendTo(t testing.TB, l *Log, count, perBatch int, ts0 int64) {
	t.Helper()
	for range count {
		first := l.LogEndOffset()
		res, err := l.Append(testutil.Batch(t, first, perBatch, 100, ts0+1000*first))
		if err != nil {
			t.Fatalf("append at %d: %v", first, err)
		}
		if res.BaseOffset != first {
			t.Fatalf("append assigned base %d, want %d", res.BaseOffset, first)
		}
	}
}

// readOffsets reads l as a consumer from offset from until a read returns
// nothing, checks every record's value, and returns the offsets read and
// the last read's EndOffset.
func readOffsets(t testing.TB, l *Log, from int64, maxBytes int) ([]int64, int64) {
	t.Helper()
	var out []int64
	for off := from; ; {
		res, err := l.Read(off, maxBytes)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if len(res.Records) == 0 {
			return out, res.EndOffset
		}
		recs, err := batch.DecodeAll(res.Records)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if string(r.Value) != string(testutil.Value(r.Offset, 100)) {
				t.Fatalf("offset %d: wrong value %q", r.Offset, r.Value)
			}
			if r.Offset >= off {
				out = append(out, r.Offset)
			}
		}
		off = recs[len(recs)-1].Offset + 1
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A single-node log (Replicated false) has no separate high watermark:
// it is the log end, SetHighWatermark does nothing, the replica API is the
// consumer API and no checkpoint is written.
func TestHighWatermarkSingleNodeIsTheLogEnd(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	appendTo(t, l, 4, 5, 1000)
	l.SetHighWatermark(3)
	if hw, end, le := l.HighWatermark(), l.EndOffset(), l.LogEndOffset(); hw != 20 || end != 20 || le != 20 {
		t.Fatalf("high watermark %d, end %d, log end %d; want 20 each", hw, end, le)
	}
	c, _ := l.Read(0, 1<<20)
	r, _ := l.ReadReplica(0, 1<<20, nil)
	if len(c.Records) == 0 || string(c.Records) != string(r.Records) || c.EndOffset != 20 || r.EndOffset != 20 {
		t.Fatalf("consumer read %d bytes to %d, replica read %d bytes to %d: want the same 4 batches to 20",
			len(c.Records), c.EndOffset, len(r.Records), r.EndOffset)
	}
	moved, _ := l.Changed()
	movedEnd, _ := l.ChangedEnd()
	appendTo(t, l, 1, 5, 1000)
	if !closed(moved) || !closed(movedEnd) {
		t.Fatal("an append did not fire Changed and ChangedEnd")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, highWatermarkFile)); !os.IsNotExist(err) {
		t.Fatalf("a single-node log wrote a high watermark checkpoint (stat: %v)", err)
	}
}

// Consumers read only whole batches below the high watermark; replicas
// read to the log end; the high watermark moves only forward and within
// the log.
func TestHighWatermarkBoundsConsumerReads(t *testing.T) {
	l := replicated(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()
	appendTo(t, l, 10, 5, 1000) // batches [0,5) .. [45,50)

	if hw, end := l.HighWatermark(), l.EndOffset(); hw != 0 || end != 0 {
		t.Fatalf("a new replicated log: high watermark %d, end %d; want 0 (the log start)", hw, end)
	}
	if got, end := readOffsets(t, l, 0, 1<<20); len(got) != 0 || end != 0 {
		t.Fatalf("consumers read %d records (end %d) with the high watermark at 0", len(got), end)
	}
	r, err := l.ReadReplica(0, 1<<20, nil)
	if err != nil || r.EndOffset != 50 || r.StartOffset != 0 {
		t.Fatalf("replica read: end %d start %d err %v; want end 50 (the log end)", r.EndOffset, r.StartOffset, err)
	}
	if recs, _ := batch.DecodeAll(r.Records); len(recs) != 50 {
		t.Fatalf("replica read %d records, want all 50 below the log end", len(recs))
	}

	l.SetHighWatermark(20)
	for _, maxBytes := range []int{1, 700, 1 << 20} {
		got, end := readOffsets(t, l, 0, maxBytes)
		if len(got) != 20 || got[19] != 19 || end != 20 {
			t.Fatalf("maxBytes %d: consumers read %d records (last %v), end %d; want offsets 0..19, end 20", maxBytes, len(got), got, end)
		}
	}
	if l.EndOffset() != 20 || l.LogEndOffset() != 50 {
		t.Fatalf("EndOffset %d, LogEndOffset %d; want 20, 50", l.EndOffset(), l.LogEndOffset())
	}
	// Between the high watermark and the log end: nothing, no error (as
	// Kafka answers a consumer whose offset came from a former leader).
	for _, off := range []int64{20, 35, 50} {
		res, err := l.Read(off, 1<<20)
		if err != nil || len(res.Records) != 0 || res.EndOffset != 20 {
			t.Fatalf("read at %d: %d bytes, end %d, err %v; want none, end 20, no error", off, len(res.Records), res.EndOffset, err)
		}
	}
	var oor *OffsetOutOfRangeError
	if _, err := l.Read(51, 1<<20); !errors.As(err, &oor) {
		t.Fatalf("read past the log end: %v, want out of range", err)
	}

	l.SetHighWatermark(10) // backwards: ignored
	if hw := l.HighWatermark(); hw != 20 {
		t.Fatalf("SetHighWatermark(10) moved it back to %d", hw)
	}
	l.SetHighWatermark(1000) // past the log end: clamped
	if hw := l.HighWatermark(); hw != 50 {
		t.Fatalf("SetHighWatermark(1000) gave %d, want 50 (the log end)", hw)
	}
}

// A batch that crosses the high watermark is never served, whole or in
// part, to a consumer.
func TestHighWatermarkInsideABatchIsNotServed(t *testing.T) {
	l := replicated(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()
	appendTo(t, l, 6, 5, 1000)
	l.SetHighWatermark(22) // inside the batch [20, 25)
	got, end := readOffsets(t, l, 0, 1<<20)
	if len(got) != 20 || end != 22 {
		t.Fatalf("consumers read %d records, end %d; want offsets 0..19 (the batch [20,25) crosses 22), end 22", len(got), end)
	}
	for _, off := range []int64{20, 21} {
		if res, err := l.Read(off, 1); err != nil || len(res.Records) != 0 {
			t.Fatalf("read at %d (inside the crossing batch): %d bytes, err %v; want none", off, len(res.Records), err)
		}
	}
	// A large first batch (bigger than maxBytes) is still not served whole.
	if res, _ := l.Read(20, 1); len(res.Records) != 0 {
		t.Fatal("a read of maxBytes 1 served the crossing batch")
	}
	l.SetHighWatermark(25)
	if got, _ := readOffsets(t, l, 20, 1); len(got) != 5 {
		t.Fatalf("with the high watermark at 25 consumers read %d records from 20, want 5", len(got))
	}
}

// Wait and Changed follow the high watermark, not the log end;
// ChangedEnd follows the log end.
func TestHighWatermarkWaitAndChanged(t *testing.T) {
	l := replicated(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()
	appendTo(t, l, 2, 5, 1000)
	l.SetHighWatermark(10)

	moved, _ := l.Changed()
	movedEnd, _ := l.ChangedEnd()
	appendTo(t, l, 4, 5, 1000) // log end 30
	if closed(moved) {
		t.Fatal("Changed fired when only the log end moved")
	}
	if !closed(movedEnd) {
		t.Fatal("ChangedEnd did not fire when the log end moved")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := l.Wait(ctx, 10)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait(10) with the high watermark at 10 and the log end at 30 returned %v, want it to wait", err)
	}

	done := make(chan error, 1)
	go func() { done <- l.Wait(context.Background(), 20) }()
	l.SetHighWatermark(15) // not past 20 yet
	if !closed(moved) {
		t.Fatal("Changed did not fire when the high watermark moved")
	}
	moved, _ = l.Changed()
	l.SetHighWatermark(25)
	if err := <-done; err != nil {
		t.Fatalf("Wait(20): %v", err)
	}
	if !closed(moved) {
		t.Fatal("Changed did not fire when the high watermark moved to 25")
	}
	// A move to the same value is no move.
	moved, _ = l.Changed()
	l.SetHighWatermark(25)
	if closed(moved) {
		t.Fatal("Changed fired for SetHighWatermark of its current value")
	}
}

// OffsetForTime never answers above the high watermark.
func TestHighWatermarkBoundsOffsetForTime(t *testing.T) {
	l := replicated(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()
	appendTo(t, l, 10, 5, 1_000_000) // batch at base b has timestamps 1e6+1000b ...
	l.SetHighWatermark(25)
	for _, c := range []struct{ ts, want int64 }{
		{0, 0},
		{1_000_000 + 1000*10, 10},
		{1_000_000 + 1000*20, 20},
		{1_000_000 + 1000*30, 25}, // the batch at 30 is above the high watermark
		{1_000_000 + 1000*45, 25},
		{9_000_000_000, 25}, // after everything
	} {
		got, err := l.OffsetForTime(c.ts)
		if err != nil || got != c.want {
			t.Fatalf("OffsetForTime(%d) = %d, %v; want %d", c.ts, got, err, c.want)
		}
	}
}

// The high watermark survives Close and Open; a checkpoint ahead of the
// log (its tail lost) is cut to the log end; a damaged or missing one
// means the log start.
func TestHighWatermarkCheckpoint(t *testing.T) {
	dir := t.TempDir()
	l := replicated(t, dir, testConfig(FlushAlways), Options{})
	appendTo(t, l, 10, 5, 1000)
	l.SetHighWatermark(20)
	// The background job writes it while the log is open (no Close).
	testutil.Eventually(t, 5*time.Second, func() bool { off, err := readHighWatermark(dir); return err == nil && off == 20 },
		"the high watermark checkpoint never said 20")
	l.SetHighWatermark(35)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = replicated(t, dir, testConfig(FlushAlways), Options{})
	if hw := l.HighWatermark(); hw != 35 {
		t.Fatalf("after Close and Open the high watermark is %d, want 35", hw)
	}
	if got, _ := readOffsets(t, l, 0, 1<<20); len(got) != 35 {
		t.Fatalf("after reopening consumers read %d records, want 35", len(got))
	}
	start := l.StartOffset()
	l.Close()

	// Ahead of the log: the log end.
	l = replicated(t, dir, testConfig(FlushAlways), Options{})
	l.SetHighWatermark(50)
	l.Close()
	writeHWFile(t, dir, 10_000)
	l = replicated(t, dir, testConfig(FlushAlways), Options{})
	if hw := l.HighWatermark(); hw != 50 {
		t.Fatalf("a checkpoint of 10000 over a log ending at 50 gave %d, want 50", hw)
	}
	l.Close()

	// Damaged: a digit changed, so the CRC fails.
	b, _ := os.ReadFile(filepath.Join(dir, highWatermarkFile))
	b[2] = '9'
	if err := os.WriteFile(filepath.Join(dir, highWatermarkFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	l = replicated(t, dir, testConfig(FlushAlways), Options{})
	if hw := l.HighWatermark(); hw != start {
		t.Fatalf("a damaged checkpoint gave %d, want the log start %d", hw, start)
	}
	l.Close()

	os.Remove(filepath.Join(dir, highWatermarkFile))
	l = replicated(t, dir, testConfig(FlushAlways), Options{})
	defer l.Close()
	if hw := l.HighWatermark(); hw != start {
		t.Fatalf("no checkpoint gave %d, want the log start %d", hw, start)
	}
}

// writeHWFile writes a well-formed checkpoint saying off.
func writeHWFile(t testing.TB, dir string, off int64) {
	t.Helper()
	l := &Log{dir: dir}
	if err := l.writeHighWatermark(off); err != nil {
		t.Fatal(err)
	}
}

const hwChildEnv = "TIERLOG_HOT_HW_CHILD"

// runHWChild is the child side of TestHighWatermarkSurvivesKill9: it
// appends 100 records, moves the high watermark to 50 and waits for its
// checkpoint, says so, moves it to 75, says so, and waits for SIGKILL.
func runHWChild() bool {
	dir := os.Getenv(hwChildEnv)
	if dir == "" {
		return false
	}
	l, err := Open(dir, testConfig(FlushAlways), Options{Replicated: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	for i := int64(0); i < 20; i++ {
		recs := make([]batch.Record, 5)
		for k := range recs {
			recs[k] = batch.Record{Timestamp: 1000, Value: testutil.Value(i*5+int64(k), 100)}
		}
		b, _ := batch.Build(recs, batch.BuildOptions{})
		if _, err := l.Append(b); err != nil {
			fmt.Fprintln(os.Stderr, "child append:", err)
			os.Exit(4)
		}
	}
	l.SetHighWatermark(50)
	for {
		if off, err := readHighWatermark(dir); err == nil && off == 50 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("checkpointed 50")
	l.SetHighWatermark(75)
	fmt.Println("moved 75")
	select {}
}

// TestHighWatermarkSurvivesKill9 kills a real process holding a
// replicated log with SIGKILL (no Close): the reopened log's high
// watermark is what its checkpoint said - 50, or 75 if the background job
// wrote it before the kill - never above, never lost.
func TestHighWatermarkSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hwChildEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var said []string
	for sc.Scan() {
		said = append(said, sc.Text())
		if sc.Text() == "moved 75" {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	cmd.Wait()
	if len(said) != 2 {
		t.Fatalf("child said %q: %s", said, stderr.String())
	}
	want, err := readHighWatermark(dir)
	if err != nil || (want != 50 && want != 75) {
		t.Fatalf("checkpoint after the kill: %d, %v; want 50 or 75", want, err)
	}
	l := replicated(t, dir, testConfig(FlushAlways), Options{})
	defer l.Close()
	if hw := l.HighWatermark(); hw != want || l.LogEndOffset() != 100 {
		t.Fatalf("after the kill: high watermark %d, log end %d; want %d, 100", hw, l.LogEndOffset(), want)
	}
	if got, _ := readOffsets(t, l, 0, 1<<20); int64(len(got)) != want {
		t.Fatalf("after the kill consumers read %d records, want %d", len(got), want)
	}
	t.Logf("high watermark after SIGKILL: %d", want)
}

// TruncateTo lowers the high watermark to the cut (its checkpoint before
// anything is cut), and wakes consumers; a cut above it leaves it.
// TruncateFullyAndStartAt sets it to the new start.
func TestHighWatermarkFollowsTruncation(t *testing.T) {
	dir := t.TempDir()
	l := replicated(t, dir, testConfig(FlushAlways), Options{})
	appendTo(t, l, 10, 5, 1000)
	l.SetHighWatermark(40)
	if err := l.TruncateTo(45); err != nil {
		t.Fatal(err)
	}
	if hw := l.HighWatermark(); hw != 40 {
		t.Fatalf("a cut at 45 above the high watermark 40 changed it to %d", hw)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { off, err := readHighWatermark(dir); return err == nil && off == 40 },
		"the checkpoint never said 40")

	moved, _ := l.Changed()
	truncateHook = func(step string) {
		if step == "cut" {
			if off, err := readHighWatermark(dir); err != nil || off != 25 {
				t.Errorf("at the cut the checkpoint says %d (%v), want 25 written before it", off, err)
			}
		}
	}
	err := l.TruncateTo(25)
	truncateHook = nil
	if err != nil {
		t.Fatal(err)
	}
	if hw, end := l.HighWatermark(), l.LogEndOffset(); hw != 25 || end != 25 {
		t.Fatalf("after TruncateTo(25): high watermark %d, log end %d; want 25, 25", hw, end)
	}
	if !closed(moved) {
		t.Fatal("lowering the high watermark did not fire Changed")
	}
	// New appends (a new leader's) are not committed by the old value.
	appendTo(t, l, 4, 5, 1000)
	if got, end := readOffsets(t, l, 0, 1<<20); len(got) != 25 || end != 25 {
		t.Fatalf("after the cut and new appends consumers read %d records, end %d; want 25", len(got), end)
	}
	l.Close()
	l = replicated(t, dir, testConfig(FlushAlways), Options{})
	if hw := l.HighWatermark(); hw != 25 {
		t.Fatalf("reopened after the cut: high watermark %d, want 25", hw)
	}

	if err := l.TruncateFullyAndStartAt(500); err != nil {
		t.Fatal(err)
	}
	if hw := l.HighWatermark(); hw != 500 {
		t.Fatalf("after TruncateFullyAndStartAt(500) the high watermark is %d, want 500", hw)
	}
	l.Close()
	l = replicated(t, dir, testConfig(FlushAlways), Options{})
	defer l.Close()
	if hw := l.HighWatermark(); hw != 500 {
		t.Fatalf("reopened after the full truncation: high watermark %d, want 500", hw)
	}
}

// The tiering daemon sees as sealed only segments that end at or below the
// high watermark, and is woken (OnSealed) when the high watermark passes
// one; retention deletes nothing above it.
func TestHighWatermarkCapsSealedSegmentsAndRetention(t *testing.T) {
	cfg := testConfig(FlushAlways)
	cfg.SegmentBytes = 2048 // a batch of 5 records of 100 bytes is ~700 bytes: 2 batches a segment
	cfg.RetentionBytes = 0
	var wakes atomic.Int32
	l := replicated(t, t.TempDir(), cfg, Options{OnSealed: func() { wakes.Add(1) }})
	defer l.Close()
	appendTo(t, l, 10, 5, 1000)
	if err := l.Roll(); err != nil {
		t.Fatal(err)
	}
	rawSealed := func() (n int, end int64) {
		for _, s := range l.Segments() {
			if s.Sealed {
				n, end = n+1, s.NextOffset
			}
		}
		return
	}
	testutil.Eventually(t, 5*time.Second, func() bool { _, end := rawSealed(); return end == 50 }, "segments never sealed")
	if s, end := l.SealedSegments(), l.SealedEnd(); len(s) != 0 || end != 0 {
		t.Fatalf("with the high watermark at 0: %d sealed segments listed, sealed end %d; want none", len(s), end)
	}
	if n := l.ApplyRetention(time.Now()); n != 0 {
		t.Fatalf("retention deleted %d segments above the high watermark", n)
	}

	l.SetHighWatermark(22) // inside the third segment [20, 30)
	s := l.SealedSegments()
	if len(s) == 0 || s[len(s)-1].NextOffset > 22 || l.SealedEnd() != s[len(s)-1].NextOffset {
		t.Fatalf("with the high watermark at 22: sealed %+v, sealed end %d; want those ending at or below 22", s, l.SealedEnd())
	}
	before := wakes.Load()
	l.SetHighWatermark(50)
	if wakes.Load() == before {
		t.Fatal("the high watermark passed the newest sealed segment's end and OnSealed was not called")
	}
	n, _ := rawSealed()
	if got := l.SealedSegments(); len(got) != n || l.SealedEnd() != 50 {
		t.Fatalf("with the high watermark at the log end: %d sealed listed (of %d), sealed end %d; want all, 50", len(got), n, l.SealedEnd())
	}
	l.ApplyRetention(time.Now()) // (or the background job did)
	if start := l.StartOffset(); start != 50 {
		t.Fatalf("retention.bytes 0 with everything committed left the log starting at %d, want 50", start)
	}
}
