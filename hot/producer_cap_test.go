package hot

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tierlog/tierlog/internal/batch"
)

// Past Options.MaxProducers the least recently seen producer is dropped:
// its next batch is taken whatever its sequence, as an unknown producer's
// (KIP-360), while the producers kept are still checked. A reopen with a
// lower cap drops the least recently seen of the snapshot's.
func TestProducerCapDropsLeastRecentlySeen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(FlushAlways)
	m := NewMetrics(prometheus.NewRegistry())
	l := openLog(t, dir, cfg, Options{MaxProducers: 3, Metrics: m})
	mustAppend(t, l, pb(t, 1, 0, 0, 1))
	mustAppend(t, l, pb(t, 2, 0, 0, 1))
	mustAppend(t, l, pb(t, 3, 0, 0, 1))
	mustAppend(t, l, pb(t, 1, 0, 1, 1)) // producer 2 is now the least recently seen
	mustAppend(t, l, pb(t, 4, 0, 0, 1))
	if got := promtest.ToFloat64(m.producersDropped); got != 1 {
		t.Fatalf("tierlog_hot_producers_dropped_total %v, want 1", got)
	}
	// Producer 2 is unknown: a gap is accepted.
	mustAppend(t, l, pb(t, 2, 0, 7, 1)) // and producer 3 is dropped for it
	// Producers 1 and 4 are known: a gap is refused.
	wantRefused(t, l, pb(t, 1, 0, 5, 1), ErrOutOfOrderSequence)
	wantRefused(t, l, pb(t, 4, 0, 5, 1), ErrOutOfOrderSequence)
	mustAppend(t, l, pb(t, 3, 0, 9, 1)) // dropped: accepted; producer 1 goes
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Kept now, least recently seen first: 4, 2, 3. A cap of 2 keeps 2 and 3.
	l = openLog(t, dir, cfg, Options{MaxProducers: 2})
	defer l.Close()
	wantRefused(t, l, pb(t, 2, 0, 20, 1), ErrOutOfOrderSequence)
	wantRefused(t, l, pb(t, 3, 0, 20, 1), ErrOutOfOrderSequence)
	mustAppend(t, l, pb(t, 4, 0, 9, 1))
}

// A snapshot is what the table held when it was taken, whatever changes
// after it (the changes go to copies of the states and maps it holds).
func TestProducerSnapshotUnchangedByLaterAppends(t *testing.T) {
	tab := newProducerTable(DefaultMaxProducers)
	hdr := func(id int64, seq int32, off int64) batch.Header {
		return batch.Header{ProducerID: id, BaseSequence: seq, BaseOffset: off, ProducerEpoch: 0}
	}
	tab.update(hdr(1, 0, 0), 1)
	tab.update(hdr(2, 0, 1), 1)
	snap := tab.snapshot()
	tab.update(hdr(1, 1, 2), 2)
	tab.update(hdr(3, 0, 3), 2)
	tab.expire(2) // drops producer 2
	got := snap.merge()
	if len(got) != 2 || got[1] == nil || got[2] == nil {
		t.Fatalf("snapshot holds %v, want producers 1 and 2", got)
	}
	if b := got[1].Batches; len(b) != 1 || b[0].FirstSeq != 0 || got[1].LastSeen != 1 {
		t.Fatalf("snapshot's producer 1: %+v, want its one batch before the snapshot", got[1])
	}
	now := tab.snapshot().merge()
	if len(now) != 2 || now[1] == nil || len(now[1].Batches) != 2 || now[3] == nil {
		t.Fatalf("table holds %v, want producers 1 (two batches) and 3", now)
	}
}

// Appends of many producers race rolls, whose snapshots are written by
// the background sealing while the appends go on (run with -race); the
// reopened log knows every producer's last batch.
func TestProducerSnapshotsRacingAppends(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(FlushOS)
	l := openLog(t, dir, cfg, Options{})
	const producers, batches = 8, 300
	var wg sync.WaitGroup
	last := make([]AppendResult, producers)
	done := make(chan struct{})
	for p := range producers {
		wg.Go(func() {
			for i := range batches {
				last[p] = mustAppend(t, l, pb(t, int64(p*1000+1), 0, int32(i), 1))
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	rolls := 0
	for running := true; running; rolls++ {
		select {
		case <-done:
			running = false
		default:
			if err := l.Roll(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // pace the rolls; correctness is checked after
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, cfg, Options{})
	defer l.Close()
	for p := range producers {
		wantDup(t, l, pb(t, int64(p*1000+1), 0, batches-1, 1), last[p].BaseOffset, last[p].LastOffset)
	}
	t.Logf("%d rolls", rolls)
}
