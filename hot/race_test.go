package hot

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// TestReadRacingRetention is issue 6 item 5 (hot side): a read that lost a
// race with local retention (its segment closed and removed between lookup
// and read) reported "short batch" (InvalidArgument to a client) instead of
// what a read at the new start reports: *OffsetOutOfRangeError with the
// valid range. Readers here chase the oldest segment while every append
// rolls and retention deletes each segment as soon as it is sealed.
func TestReadRacingRetention(t *testing.T) {
	cfg := testConfig(FlushOS)
	cfg.SegmentBytes = 1024 // one batch per segment
	cfg.RetentionBytes = 0  // keep only the active segment
	l := openLog(t, t.TempDir(), cfg, Options{})
	defer l.Close()
	const deletions = 100
	var stop atomic.Bool
	var reads, outOfRange atomic.Int64
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for !stop.Load() {
				off := l.StartOffset()
				if r%2 == 1 { // anywhere in the log, not only its start
					off += rng.Int64N(max(l.EndOffset()-off, 1))
				}
				res, err := l.Read(off, 1<<20)
				reads.Add(1)
				var oor *OffsetOutOfRangeError
				switch {
				case errors.As(err, &oor):
					if oor.Offset != off || off >= oor.Start || oor.Start > oor.End || res.StartOffset != oor.Start {
						t.Errorf("read at %d: %v (result range %d..%d): not a read below the new start", off, err, res.StartOffset, res.EndOffset)
						return
					}
					outOfRange.Add(1)
				case err != nil:
					t.Errorf("read at %d racing retention: %v", off, err)
					return
				case len(res.Records) > 0:
					recs, err := batch.DecodeAll(res.Records)
					if err != nil || recs[0].Offset > off || recs[len(recs)-1].Offset < off {
						t.Errorf("read at %d returned offsets %d.., err %v", off, recs[0].Offset, err)
						return
					}
				}
			}
		}()
	}
	// Append while retention keeps up (sealing is in the background), so
	// every append ends in a deletion that readers can race.
	for deleted := 0; deleted < deletions && !t.Failed(); {
		if len(l.Segments()) < 4 {
			appendRecords(t, l, 1, 1, 700)
		}
		if n := l.ApplyRetention(time.Now()); n > 0 {
			deleted += n
		} else {
			time.Sleep(time.Millisecond) // pace the loop while a segment is sealed
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads, %d out of range, log now %d..%d", reads.Load(), outOfRange.Load(), l.StartOffset(), l.EndOffset())
	if outOfRange.Load() == 0 {
		t.Error("no read lost a race with retention: the test did not exercise it")
	}
	testutil.Eventually(t, 5*time.Second, func() bool { l.ApplyRetention(time.Now()); return len(l.Segments()) == 1 }, "retention down to the active segment")
}
