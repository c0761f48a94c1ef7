package hot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// leaderLog is a replicated leader log holding n batches of 5 records.
func leaderLog(t testing.TB, n int) *Log {
	t.Helper()
	l := replicated(t, t.TempDir(), testConfig(FlushAlways), Options{})
	appendTo(t, l, n, 5, 1000)
	return l
}

// The high watermark is the smallest log end over the ISR, waits for
// in-sync followers that have not fetched yet, and never moves back.
func TestReplicaSetHighWatermarkOverISR(t *testing.T) {
	l := leaderLog(t, 10) // log end 50
	defer l.Close()
	rs := NewReplicaSet(l, 1, []int32{1, 2, 3}, []int32{1, 2, 3}, 0, at(0))
	if hw := rs.FollowerFetched(2, 30, at(1)); hw != 0 {
		t.Fatalf("follower 3 has not fetched: high watermark %d, want 0", hw)
	}
	if hw := rs.FollowerFetched(3, 20, at(1)); hw != 20 || l.HighWatermark() != 20 {
		t.Fatalf("followers at 30 and 20: high watermark %d (log says %d), want 20", hw, l.HighWatermark())
	}
	if hw := rs.FollowerFetched(3, 50, at(2)); hw != 30 {
		t.Fatalf("followers at 30 and 50: high watermark %d, want 30", hw)
	}
	if hw := rs.FollowerFetched(2, 50, at(2)); hw != 50 {
		t.Fatalf("every replica at 50: high watermark %d, want 50", hw)
	}
	// A follower that lost its disk fetches from lower down: no move back.
	if hw := rs.FollowerFetched(2, 0, at(3)); hw != 50 {
		t.Fatalf("a follower fetching at 0 moved the high watermark back to %d", hw)
	}
	// A node that is not a replica changes nothing.
	rs.FollowerFetched(9, 0, at(3))
	appendTo(t, l, 2, 5, 1000) // log end 60
	rs.FollowerFetched(3, 60, at(4))
	if hw := rs.Advance(); hw != 50 {
		t.Fatalf("follower 2 at 0: Advance gave %d, want 50 (it never moves back)", hw)
	}
	rs.FollowerFetched(2, 60, at(4))
	if hw := l.HighWatermark(); hw != 60 {
		t.Fatalf("every replica at 60: high watermark %d", hw)
	}
	// With the leader alone in sync the high watermark follows its log end.
	rs.SetISR([]int32{1})
	appendTo(t, l, 1, 5, 1000)
	if hw := rs.Advance(); hw != 65 {
		t.Fatalf("leader alone in the ISR at log end 65: Advance gave %d", hw)
	}
}

// The shrink rules: a follower that fetches to the leader's log end is
// caught up then; one that reaches the leader's end as of its previous
// fetch was caught up at that fetch (so steady load does not drop it);
// one that stops fetching, or falls behind, leaves after maxLag.
func TestReplicaSetOutOfSync(t *testing.T) {
	l := leaderLog(t, 4) // 20
	defer l.Close()
	rs := NewReplicaSet(l, 1, []int32{1, 2, 3, 4}, []int32{1, 2, 3, 4}, 0, at(0))
	const lag = 10 * time.Second
	if out := rs.OutOfSync(at(10), lag); len(out) != 0 {
		t.Fatalf("at 10 s every follower started caught up at 0 s: %v out of sync", out)
	}
	if out := rs.OutOfSync(at(10.5), lag); !slices.Equal(out, []int32{2, 3, 4}) {
		t.Fatalf("no fetch for 10.5 s: out of sync %v, want 2, 3, 4", out)
	}
	// 2 fetches at the leader's end each time while the leader appends
	// between its fetches (steady load): its fetch offset is always the
	// leader's end as of its previous fetch.
	// 3 fetches once at the end, then stops.
	// 4 keeps fetching but stays one batch behind its previous view.
	rs.FollowerFetched(3, 20, at(1))
	seen2, seen4 := l.LogEndOffset(), l.LogEndOffset()
	for i := 1; i <= 20; i++ {
		appendTo(t, l, 2, 5, 1000)
		rs.FollowerFetched(2, seen2, at(float64(i)))
		rs.FollowerFetched(4, seen4-5, at(float64(i)))
		seen2, seen4 = l.LogEndOffset(), l.LogEndOffset()
	}
	if out := rs.OutOfSync(at(20.5), lag); !slices.Equal(out, []int32{3, 4}) {
		t.Fatalf("at 20.5 s: out of sync %v, want 3 (stopped at 1 s) and 4 (never reaches the leader's end)", out)
	}
	pos := rs.Positions()
	if len(pos) != 4 || pos[1].ID != 2 || !pos[1].LastCaughtUp.Equal(at(19)) || pos[2].LastCaughtUp != at(1) || !pos[0].InSync {
		t.Fatalf("positions %+v: want 2 caught up at 19 s (its previous fetch), 3 at 1 s", pos)
	}
	if pos[0].ID != 1 || pos[0].LogEnd != l.LogEndOffset() || pos[1].LogEnd != l.LogEndOffset()-10 {
		t.Fatalf("positions %+v: want the leader at its log end %d, follower 2 two batches behind", pos, l.LogEndOffset())
	}
	// The committed shrink lets the high watermark move to 2's log end.
	before := l.HighWatermark()
	rs.SetISR([]int32{1, 2})
	if hw := l.HighWatermark(); hw <= before || hw != pos[1].LogEnd {
		t.Fatalf("after the shrink the high watermark is %d (was %d), want follower 2's log end %d", hw, before, pos[1].LogEnd)
	}
	if isr := rs.ISR(); !slices.Equal(isr, []int32{1, 2}) {
		t.Fatalf("ISR %v", isr)
	}
}

// The expand rules: a replica outside the ISR may rejoin once it has
// fetched since it left, holds everything below the high watermark and
// this epoch's first offset; until SetISR the high watermark counts it.
func TestReplicaSetCaughtUp(t *testing.T) {
	l := leaderLog(t, 8) // 40
	defer l.Close()
	rs := NewReplicaSet(l, 1, []int32{1, 2, 3}, []int32{1, 2}, 30, at(0))
	rs.FollowerFetched(2, 40, at(1)) // high watermark 40
	if got := rs.CaughtUp(); len(got) != 0 {
		t.Fatalf("3 never fetched: CaughtUp %v", got)
	}
	rs.FollowerFetched(3, 25, at(1))
	if got := rs.CaughtUp(); len(got) != 0 {
		t.Fatalf("3 at 25 (below the high watermark 40): CaughtUp %v", got)
	}
	rs.FollowerFetched(3, 40, at(2))
	if got := rs.CaughtUp(); !slices.Equal(got, []int32{3}) {
		t.Fatalf("3 at 40: CaughtUp %v, want 3", got)
	}
	// While its joining is committed, 3 holds the high watermark back.
	appendTo(t, l, 2, 5, 1000) // 50
	if hw := rs.FollowerFetched(2, 50, at(3)); hw != 40 {
		t.Fatalf("2 at 50, joining 3 at 40: high watermark %d, want 40", hw)
	}
	rs.SetISR([]int32{1, 2, 3})
	if hw := rs.FollowerFetched(3, 50, at(3)); hw != 50 {
		t.Fatalf("everyone at 50: high watermark %d", hw)
	}
	if out := rs.OutOfSync(at(12), 10*time.Second); len(out) != 0 {
		t.Fatalf("a new ISR member caught up at 3 s is out of sync at 12 s: %v", out)
	}

	// 3 stops (it dies with everything): it leaves and, without another
	// fetch, never rejoins an idle partition although its log end is the
	// high watermark.
	rs.FollowerFetched(2, 50, at(20))
	rs.SetISR([]int32{1, 2})
	if got := rs.CaughtUp(); len(got) != 0 {
		t.Fatalf("3 has not fetched since it left: CaughtUp %v", got)
	}
	rs.FollowerFetched(3, 50, at(21))
	if got := rs.CaughtUp(); !slices.Equal(got, []int32{3}) {
		t.Fatalf("3 fetched again at 50: CaughtUp %v", got)
	}

	// A replica whose log ends below this epoch's start holds a former
	// leader's records, not this one's.
	l2 := leaderLog(t, 8) // 40
	defer l2.Close()
	// (3 in the ISR, never fetching, holds the high watermark where it is set.)
	rs2 := NewReplicaSet(l2, 1, []int32{1, 2, 3}, []int32{1, 3}, 35, at(0))
	l2.SetHighWatermark(30)
	rs2.FollowerFetched(2, 32, at(1))
	if got := rs2.CaughtUp(); len(got) != 0 {
		t.Fatalf("2 at 32, epoch started at 35: CaughtUp %v", got)
	}
	rs2.FollowerFetched(2, 35, at(2))
	if got := rs2.CaughtUp(); !slices.Equal(got, []int32{2}) {
		t.Fatalf("2 at 35: CaughtUp %v", got)
	}
}

// WaitReplicated returns when the high watermark reaches the end, fails
// when the ISR is below minISR, and ends with the set, the log or ctx.
func TestReplicaSetWaitReplicated(t *testing.T) {
	l := leaderLog(t, 4) // 20
	defer l.Close()
	rs := NewReplicaSet(l, 1, []int32{1, 2, 3}, []int32{1, 2, 3}, 0, at(0))
	wait := func(end int64, minISR int) chan error {
		ch := make(chan error, 1)
		go func() { ch <- rs.WaitReplicated(context.Background(), end, minISR) }()
		return ch
	}
	pending := func(ch chan error) bool {
		select {
		case err := <-ch:
			t.Fatalf("WaitReplicated returned early: %v", err)
		default:
		}
		return true
	}
	w := wait(20, 2)
	rs.FollowerFetched(2, 20, at(1))
	// The waiter must still wait (3 has not fetched); give it a moment to
	// have run its check, then make sure it did not return.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := rs.WaitReplicated(ctx, 20, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with 3 not fetched WaitReplicated returned %v", err)
	}
	cancel()
	pending(w)
	rs.FollowerFetched(3, 20, at(1))
	if err := <-w; err != nil {
		t.Fatalf("the high watermark reached 20: %v", err)
	}

	// The ISR shrinks below minISR while a waiter waits.
	appendTo(t, l, 1, 5, 1000) // 25
	w = wait(25, 2)
	rs.SetISR([]int32{1, 2})
	rs.FollowerFetched(3, 25, at(2)) // 3 is out: no help
	pending(w)
	rs.SetISR([]int32{1})
	if err := <-w; !errors.Is(err, ErrNotEnoughReplicasAfterAppend) {
		t.Fatalf("ISR {1} with min.insync.replicas 2: %v, want ErrNotEnoughReplicasAfterAppend", err)
	}

	// The leader alone, minISR 1: the leader's own log end decides, and
	// an append wakes the waiter without anyone calling Advance.
	w = wait(30, 1)
	appendTo(t, l, 1, 5, 1000) // 30
	if err := <-w; err != nil {
		t.Fatalf("leader alone at 30: %v", err)
	}

	// The set closes (leadership moved) and the log closes.
	w = wait(1000, 1)
	rs.Close()
	if err := <-w; !errors.Is(err, ErrReplicaSetClosed) {
		t.Fatalf("after Close: %v", err)
	}
	rs2 := NewReplicaSet(l, 1, []int32{1, 2}, []int32{1, 2}, 0, at(0))
	w2 := make(chan error, 1)
	go func() { w2 <- rs2.WaitReplicated(context.Background(), 1000, 1) }()
	l.Close()
	if err := <-w2; !errors.Is(err, ErrClosed) {
		t.Fatalf("after the log closed: %v", err)
	}
}

// A leader and two followers replicate for real - followers read with
// ReadReplica and append with AppendReplica, report their fetches, and take
// the leader's high watermark - while producers wait for acks=all and
// consumers read the leader: a consumer never gets a record that both
// followers do not hold, every acknowledged record is on both, and the
// logs converge byte for byte. Run under -race.
func TestReplicaSetReplicatesConcurrently(t *testing.T) {
	const producers, perProducer = 4, 40
	leader := replicated(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer leader.Close()
	var fs []*Log
	for range 2 {
		f := replicated(t, t.TempDir(), testConfig(FlushAlways), Options{})
		defer f.Close()
		fs = append(fs, f)
	}
	rs := NewReplicaSet(leader, 1, []int32{1, 2, 3}, []int32{1, 2, 3}, 0, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 16)
	var wg, followers sync.WaitGroup
	for i, f := range fs {
		followers.Add(1)
		go func() {
			defer followers.Done()
			id := int32(i + 2)
			buf := make([]byte, 0, 64<<10)
			for ctx.Err() == nil {
				moved, _ := leader.ChangedEnd()
				hw := rs.FollowerFetched(id, f.LogEndOffset(), time.Now())
				f.SetHighWatermark(hw)
				res, err := leader.ReadReplica(f.LogEndOffset(), 8<<10, buf)
				if err != nil {
					errs <- fmt.Errorf("follower %d: read: %w", id, err)
					return
				}
				if len(res.Records) == 0 {
					select {
					case <-moved:
					case <-ctx.Done():
					}
					continue
				}
				var pend []*PendingAppend
				for b := res.Records; len(b) > 0; {
					h, _ := batch.Peek(b)
					p, err := f.AppendReplicaDeferred(b[:h.Size()])
					if err != nil {
						errs <- fmt.Errorf("follower %d: append at %d: %w", id, h.BaseOffset, err)
						return
					}
					pend = append(pend, p)
					b = b[h.Size():]
				}
				for _, p := range pend { // one fsync for the fetch
					if _, err := p.Wait(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perProducer {
				recs := []batch.Record{{Timestamp: 1000, Value: fmt.Appendf(nil, "p%d-%d", p, k)}}
				b, _ := batch.Build(recs, batch.BuildOptions{})
				res, err := leader.Append(b)
				if err == nil {
					err = rs.WaitReplicated(ctx, res.LastOffset+1, 2)
				}
				if err != nil {
					errs <- fmt.Errorf("producer %d: %w", p, err)
					return
				}
				for _, f := range fs {
					if f.LogEndOffset() <= res.LastOffset {
						errs <- fmt.Errorf("offset %d acknowledged at acks=all, a follower ends at %d", res.LastOffset, f.LogEndOffset())
						return
					}
				}
			}
		}()
	}
	total := int64(producers * perProducer)
	wg.Add(1)
	go func() { // a consumer of the leader
		defer wg.Done()
		for off := int64(0); off < total; {
			if err := leader.Wait(ctx, off); err != nil {
				errs <- err
				return
			}
			res, err := leader.Read(off, 4<<10)
			if err != nil {
				errs <- err
				return
			}
			recs, _ := batch.DecodeAll(res.Records)
			for _, r := range recs {
				for _, f := range fs {
					if r.Offset >= f.LogEndOffset() {
						errs <- fmt.Errorf("a consumer read offset %d; a follower ends at %d", r.Offset, f.LogEndOffset())
						return
					}
				}
				off = r.Offset + 1
			}
		}
	}()
	wg.Wait()
	cancel()
	followers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if hw := leader.HighWatermark(); hw != total {
		t.Fatalf("leader high watermark %d, want %d", hw, total)
	}
	want, _ := logBatchesReplica(t, leader)
	for i, f := range fs {
		got, _ := logBatchesReplica(t, f)
		if !slices.Equal(got, want) {
			t.Fatalf("follower %d differs from the leader (%d and %d bytes)", i+2, len(got), len(want))
		}
	}
}

// logBatchesReplica reads l's whole log with ReadReplica.
func logBatchesReplica(t testing.TB, l *Log) ([]byte, int64) {
	t.Helper()
	var out []byte
	off := l.StartOffset()
	for off < l.LogEndOffset() {
		res, err := l.ReadReplica(off, 64<<10, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res.Records...)
		recs, _ := batch.DecodeAll(res.Records)
		off = recs[len(recs)-1].Offset + 1
	}
	return out, off
}
