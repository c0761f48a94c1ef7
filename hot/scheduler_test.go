package hot

import (
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestSchedulerSharedByManyLogs is issue 6 item 7 (last paragraph): every
// log ran a goroutine of its own, so 10,000 idle partitions held 10,013
// goroutines. Logs on one scheduler must not add goroutines, and their
// background work (interval flush, age roll, sealing) must still run.
func TestSchedulerSharedByManyLogs(t *testing.T) {
	const logs, workers = 200, 2
	sched := NewScheduler(SchedulerOptions{Workers: workers})
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var syncs countingSyncs
	cfg := testConfig(FlushInterval)
	cfg.FlushInterval = 20 * time.Millisecond
	cfg.SegmentAge = time.Minute
	root := t.TempDir()
	base := runtime.NumGoroutine()
	grown := 0
	goroutines := func() {
		grown = max(grown, runtime.NumGoroutine()-base)
	}
	var open []*Log
	for i := range logs {
		l := openLog(t, filepath.Join(root, strconv.Itoa(i)), cfg, Options{Scheduler: sched, OpenFile: syncs.open, Now: clock, BackgroundInterval: 20 * time.Millisecond})
		open = append(open, l)
		goroutines()
	}
	opened := syncs.n.Load()
	for _, l := range open {
		appendRecords(t, l, 1, 1, 10) // in the page cache: the interval flush fsyncs it
	}
	testutil.Eventually(t, 10*time.Second, func() bool { goroutines(); return syncs.n.Load()-opened >= logs }, "every log's interval flush ran")
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	testutil.Eventually(t, 10*time.Second, func() bool {
		goroutines()
		for _, l := range open {
			if len(l.SealedSegments()) != 1 {
				return false
			}
		}
		return true
	}, "every log rolled by age and sealed")
	t.Logf("%d logs on one scheduler: at most %d goroutines more than before", logs, grown)
	// The dispatcher and at most one job per worker.
	if grown > 1+workers {
		t.Errorf("%d logs added %d goroutines; an idle log must cost none of its own", logs, grown)
	}
	for _, l := range open {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := sched.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSchedulerCloseWithOpenLogs: the owner must close its logs first.
func TestSchedulerCloseWithOpenLogs(t *testing.T) {
	sched := NewScheduler(SchedulerOptions{})
	l := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{Scheduler: sched})
	if err := sched.Close(); err == nil {
		t.Error("scheduler closed with a log still open")
	}
	if _, err := Open(t.TempDir(), testConfig(FlushAlways), Options{Scheduler: sched}); err == nil {
		t.Error("a log opened on a closed scheduler")
	}
	l.Close()
	if err := sched.Close(); err != nil {
		t.Fatal(err)
	}
}
