package hot

import (
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
