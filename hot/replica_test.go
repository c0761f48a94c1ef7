package hot

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// logBatches returns every batch of l from offset from, base offset ->
// stored bytes, and the base offsets in order.
func logBatches(t testing.TB, l *Log, from int64) (map[int64][]byte, []int64) {
	t.Helper()
	out := map[int64][]byte{}
	var order []int64
	for off := from; off < l.EndOffset(); {
		res, err := l.Read(off, 64<<10)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		for b := res.Records; len(b) > 0; {
			h, err := batch.Peek(b)
			if err != nil {
				t.Fatalf("batch at %d: %v", off, err)
			}
			out[h.BaseOffset] = bytes.Clone(b[:h.Size()])
			order = append(order, h.BaseOffset)
			off = h.NextOffset()
			b = b[h.Size():]
		}
	}
	return out, order
}

// replicate appends to f, with AppendReplica, the leader's batches from
// f's end to the leader's end.
func replicate(t testing.TB, leader, f *Log) {
	t.Helper()
	all, order := logBatches(t, leader, f.EndOffset())
	for _, base := range order {
		res, err := f.AppendReplica(all[base])
		if err != nil {
			t.Fatalf("append replica at %d: %v", base, err)
		}
		if res.BaseOffset != base {
			t.Fatalf("replica batch kept base %d, want %d", res.BaseOffset, base)
		}
	}
}

// leaderWithEpochs builds a leader log of three epochs (0, 2, 5), each of
// 20 batches of 5 records, the later two from idempotent producer 7, over
// several segments. It returns the epochs' start offsets.
func leaderWithEpochs(t testing.TB, dir string) (*Log, []EpochEntry) {
	t.Helper()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	var want []EpochEntry
	seq := int32(0)
	for _, epoch := range []int32{0, 2, 5} {
		if err := l.SetLeaderEpoch(epoch); err != nil {
			t.Fatal(err)
		}
		want = append(want, EpochEntry{Epoch: epoch, StartOffset: l.EndOffset()})
		for i := range 20 {
			b := testutil.Batch(t, l.EndOffset(), 5, 1000, 1_000_000+l.EndOffset())
			if epoch > 0 && i%2 == 0 {
				b = testutil.IdempotentBatch(t, 7, 0, seq, 5, 1000)
				seq += 5
			}
			if _, err := l.Append(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(l.Segments()); n < 4 {
		t.Fatalf("leader has %d segments; the test wants several", n)
	}
	return l, want
}

func TestAppendReplicaKeepsTheLeadersBatches(t *testing.T) {
	leader, want := leaderWithEpochs(t, t.TempDir())
	defer leader.Close()
	dir := t.TempDir()
	f := openLog(t, dir, testConfig(FlushAlways), Options{})
	// In two rounds, as a follower fetches.
	all, order := logBatches(t, leader, 0)
	for _, base := range order[:len(order)/2] {
		res, err := f.AppendReplica(all[base])
		if err != nil {
			t.Fatal(err)
		}
		if res.Durability != DurabilityFsynced || res.Duplicate {
			t.Fatalf("replica append answered %+v under flush.policy=always", res)
		}
	}
	replicate(t, leader, f)

	check := func(f *Log) {
		t.Helper()
		got, gotOrder := logBatches(t, f, 0)
		if !slices.Equal(gotOrder, order) {
			t.Fatalf("follower batches at %v, leader's at %v", gotOrder, order)
		}
		for base, b := range all {
			if !bytes.Equal(got[base], b) {
				t.Fatalf("batch at %d differs between leader and follower", base)
			}
		}
		if got := f.EpochEntries(); !slices.Equal(got, want) {
			t.Fatalf("follower epochs %v, want %v", got, want)
		}
		for _, e := range []int32{0, 2, 4, 5} {
			le, lo := leader.EndOffsetForEpoch(e)
			fe, fo := f.EndOffsetForEpoch(e)
			if le != fe || lo != fo {
				t.Fatalf("epoch %d ends at (%d, %d) on the leader, (%d, %d) on the follower", e, le, lo, fe, fo)
			}
		}
	}
	check(f)
	f.Close()
	f = openLog(t, dir, testConfig(FlushAlways), Options{})
	defer f.Close()
	check(f)

	// The follower becomes leader in epoch 6: producer 7's last batch
	// (sequences 95-99 at epoch 5's end) is a retry with its offsets.
	if err := f.SetLeaderEpoch(6); err != nil {
		t.Fatal(err)
	}
	last := order[len(order)-2] // producer 7's last batch: i == 18 of epoch 5
	h, _ := batch.Peek(all[last])
	if h.ProducerID != 7 {
		t.Fatalf("batch at %d is not producer 7's (%d)", last, h.ProducerID)
	}
	wantDup(t, f, testutil.IdempotentBatch(t, 7, 0, h.BaseSequence, 5, 1000), last, last+4)
	wantRefused(t, f, testutil.IdempotentBatch(t, 7, 0, h.BaseSequence+10, 5, 1000), ErrOutOfOrderSequence)
	res := mustAppend(t, f, testutil.IdempotentBatch(t, 7, 0, h.BaseSequence+5, 5, 1000))
	if res.Duplicate || res.BaseOffset != leader.EndOffset() {
		t.Fatalf("next sequence answered %+v", res)
	}
	if e, off := f.EndOffsetForEpoch(5); e != 5 || off != leader.EndOffset() {
		t.Fatalf("epoch 5 ends at (%d, %d) on the new leader, want (5, %d)", e, off, leader.EndOffset())
	}
}

func TestAppendReplicaRefusals(t *testing.T) {
	leader, _ := leaderWithEpochs(t, t.TempDir())
	defer leader.Close()
	f := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer f.Close()
	all, order := logBatches(t, leader, 0)
	for _, base := range order[:30] {
		if _, err := f.AppendReplica(all[base]); err != nil {
			t.Fatal(err)
		}
	}
	end := f.EndOffset()
	refuse := func(name string, b []byte, want error) {
		t.Helper()
		if _, err := f.AppendReplica(b); !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", name, err, want)
		}
		if f.EndOffset() != end {
			t.Fatalf("%s: the log end moved from %d to %d", name, end, f.EndOffset())
		}
	}
	refuse("a batch past the end", all[order[31]], ErrReplicaOffset)
	refuse("a batch before the end", all[order[29]], ErrReplicaOffset)
	bad := bytes.Clone(all[order[30]])
	bad[len(bad)-1] ^= 1
	refuse("a CRC mismatch", bad, ErrCorruptBatch)
	refuse("two batches", append(bytes.Clone(all[order[30]]), all[order[31]]...), ErrCorruptBatch)
	refuse("a cut batch", all[order[30]][:40], ErrCorruptBatch)
	old := bytes.Clone(all[order[30]]) // epoch 2 (batch 30 is in epoch 2)
	batch.SetLeaderEpoch(old, 1)
	refuse("an older epoch", old, ErrReplicaEpoch)
	if _, err := f.AppendReplica(all[order[30]]); err != nil {
		t.Fatalf("the right batch after the refusals: %v", err)
	}
}
