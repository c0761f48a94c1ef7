package hot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

func TestAppendReadAcrossSegments(t *testing.T) {
	for _, p := range []FlushPolicy{FlushAlways, FlushInterval, FlushOS} {
		t.Run(string(p), func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, testConfig(p), Options{})
			res := appendRecords(t, l, 300, 5, 100)
			want := DurabilityPageCache
			if p == FlushAlways {
				want = DurabilityFsynced
			}
			if res[0].Durability != want {
				t.Errorf("durability %v, want %v", res[0].Durability, want)
			}
			if got := l.EndOffset(); got != 1500 {
				t.Fatalf("end offset %d, want 1500", got)
			}
			if n := len(l.Segments()); n < 3 {
				t.Fatalf("%d segments, want rolls at 64 KiB", n)
			}
			checkRecords(t, readAll(t, l, 0), 0, 1500, 100)
			checkRecords(t, readAll(t, l, 777), 777, 1500, 100) // mid-batch start
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openLog(t, dir, testConfig(p), Options{})
			defer l.Close()
			checkRecords(t, readAll(t, l, 0), 0, 1500, 100)
			appendRecords(t, l, 10, 5, 100)
			checkRecords(t, readAll(t, l, 0), 0, 1550, 100)
		})
	}
}

func TestSealedSegmentsAndCleanReopenNeedsNoScan(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushOS), Options{})
	appendRecords(t, l, 300, 5, 100)
	testutil.Eventually(t, 5*time.Second, func() bool { return len(l.SealedSegments()) == len(l.Segments())-1 }, "rolled segments sealed")
	for _, s := range l.SealedSegments() {
		for _, ext := range []string{".index", ".timeindex"} {
			if _, err := os.Stat(s.Path[:len(s.Path)-4] + ext); err != nil {
				t.Fatalf("sealed segment lacks %s: %v", ext, err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rp := readRecoveryPoint(dir); rp != 1500 {
		t.Fatalf("recovery point after clean close %d, want 1500", rp)
	}
	// Damage the active segment's bytes below the recovery point: a clean
	// reopen trusts the index and does not scan, so it opens; the damage is
	// caught by the CRC on read, never silently truncated.
	l = openLog(t, dir, testConfig(FlushOS), Options{})
	defer l.Close()
	checkRecords(t, readAll(t, l, 0), 0, 1500, 100)
}

func TestOffsetForTime(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushOS), Options{})
	defer l.Close()
	appendRecords(t, l, 200, 5, 100) // batch at offset o has timestamps 1e6+o ...
	for _, c := range []struct{ ts, want int64 }{
		{0, 0}, {1_000_000, 0}, {1_000_004, 0}, {1_000_005, 5}, {1_000_503, 500}, {1_000_999, 995}, {2_000_000, 1000},
	} {
		got, err := l.OffsetForTime(c.ts)
		if err != nil || got != c.want {
			t.Errorf("OffsetForTime(%d) = %d, %v; want %d", c.ts, got, err, c.want)
		}
	}
}

func TestBadInputLeavesLogUntouched(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()
	appendRecords(t, l, 10, 5, 100)
	good := testutil.Batch(t, 0, 5, 100, 1)

	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-1] ^= 0xff
	badMagic := append([]byte(nil), good...)
	badMagic[16] = 1
	short := good[:len(good)-3]
	trailing := append(append([]byte(nil), good...), 0, 0)
	big := testutil.Batch(t, 0, 1, 2<<20, 1)

	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"crc", badCRC, ErrCorruptBatch}, {"magic", badMagic, ErrCorruptBatch}, {"short", short, ErrCorruptBatch},
		{"trailing bytes", trailing, ErrCorruptBatch}, {"too large", big, ErrTooLarge},
	} {
		_, err := l.Append(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
		t.Logf("%s: %v", c.name, err)
	}
	var tl *TooLargeError
	if _, err := l.Append(big); !errors.As(err, &tl) || tl.Max != 1048588 {
		t.Errorf("too large error does not name the limit: %v", err)
	}
	// The log still holds exactly what it held and takes appends.
	checkRecords(t, readAll(t, l, 0), 0, 50, 100)
	appendRecords(t, l, 1, 5, 100)
	checkRecords(t, readAll(t, l, 0), 0, 55, 100)
}

func TestReadOutOfRange(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushOS), Options{})
	defer l.Close()
	appendRecords(t, l, 2, 5, 10)
	res, err := l.Read(10, 1024)
	if err != nil || len(res.Records) != 0 {
		t.Fatalf("read at end: %d bytes, %v", len(res.Records), err)
	}
	for _, off := range []int64{-1, 11, 1 << 40} {
		_, err := l.Read(off, 1024)
		var oor *OffsetOutOfRangeError
		if !errors.As(err, &oor) || oor.Start != 0 || oor.End != 10 {
			t.Fatalf("read at %d: %v, want out of range 0..10", off, err)
		}
	}
}

func TestRetention(t *testing.T) {
	now := time.UnixMilli(1_000_000 + 10_000)
	cfg := testConfig(FlushOS)
	cfg.RetentionBytes = 150 << 10
	var guarded sync.Map
	l := openLog(t, t.TempDir(), cfg, Options{Now: func() time.Time { return now }, DeletionGuard: func(s SegmentInfo) bool {
		_, blocked := guarded.Load(s.BaseOffset)
		return !blocked
	}})
	defer l.Close()
	appendRecords(t, l, 600, 5, 100)
	testutil.Eventually(t, 5*time.Second, func() bool { return len(l.SealedSegments()) == len(l.Segments())-1 }, "sealed")
	first := l.Segments()[0].BaseOffset
	guarded.Store(first, true)
	if n := l.ApplyRetention(now); n != 0 {
		t.Fatalf("retention deleted %d segments past a guard that refused", n)
	}
	guarded.Delete(first)
	n := l.ApplyRetention(now)
	var total int64
	for _, s := range l.Segments() {
		total += s.Size
	}
	if n == 0 || total > 150<<10+64<<10 {
		t.Fatalf("retention.bytes: deleted %d segments, %d bytes left", n, total)
	}
	start := l.StartOffset()
	checkRecords(t, readAll(t, l, start), start, 3000, 100)
	if _, err := l.Read(0, 100); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("read below start after retention: %v", err)
	}
	// retention.ms: everything sealed is older than 1s at now+1h.
	cfg.RetentionBytes = -1
	cfg.RetentionAge = time.Second
	if err := l.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	l.ApplyRetention(now.Add(time.Hour))
	if n := len(l.Segments()); n != 1 {
		t.Fatalf("%d segments after time retention, want only the active one", n)
	}
}

func TestRollByAge(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cfg := testConfig(FlushOS)
	cfg.SegmentAge = time.Minute
	l := openLog(t, t.TempDir(), cfg, Options{Now: clock, BackgroundInterval: 10 * time.Millisecond})
	defer l.Close()
	appendRecords(t, l, 1, 1, 10)
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(l.SealedSegments()) == 1 }, "aged segment rolled and sealed without a new append")
}

func TestWaitFollow(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer l.Close()
	got := make(chan error, 1)
	go func() { got <- l.Wait(context.Background(), 0) }()
	select {
	case err := <-got:
		t.Fatalf("wait returned before any append: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	appendRecords(t, l, 1, 1, 10)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with cancelled ctx: %v", err)
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	var syncs countingSyncs
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{OpenFile: syncs.open})
	defer l.Close()
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				res, err := l.Append(testutil.Batch(t, int64(w), 1, 100, 1))
				if err != nil || res.Durability != DurabilityFsynced {
					t.Errorf("append: %v %v", res.Durability, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := syncs.n.Load()
	t.Logf("%d appends, %d fsyncs", writers*each, n)
	if n >= writers*each {
		t.Fatalf("%d fsyncs for %d concurrent appends: group commit did not share any", n, writers*each)
	}
	if got := l.EndOffset(); got != writers*each {
		t.Fatalf("end offset %d", got)
	}
}

func TestSegmentFileNames(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushOS), Options{})
	appendRecords(t, l, 200, 5, 100)
	l.Close()
	for _, s := range []string{"00000000000000000000.log", "00000000000000000000.index", "00000000000000000000.timeindex", recoveryPointFile} {
		if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
			t.Error(err)
		}
	}
}

func TestInitialOffset(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushAlways), Options{InitialOffset: 5000})
	if l.StartOffset() != 5000 || l.EndOffset() != 5000 {
		t.Fatalf("new log at %d..%d, want 5000", l.StartOffset(), l.EndOffset())
	}
	res := appendRecords(t, l, 2, 5, 10)
	if res[0].BaseOffset != 5000 {
		t.Fatalf("first append at %d", res[0].BaseOffset)
	}
	l.Close()
	// An existing log ignores the option.
	l = openLog(t, dir, testConfig(FlushAlways), Options{InitialOffset: 1})
	defer l.Close()
	if l.StartOffset() != 5000 || l.EndOffset() != 5010 {
		t.Fatalf("reopened log at %d..%d", l.StartOffset(), l.EndOffset())
	}
}
