package hot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// checkPrefixOf asserts that f holds exactly the leader's batches below
// end, byte for byte, and that its epochs are the leader's below end.
func checkPrefixOf(t testing.TB, leader, f *Log, end int64) {
	t.Helper()
	if f.EndOffset() != end {
		t.Fatalf("log end %d, want %d", f.EndOffset(), end)
	}
	all, _ := logBatches(t, leader, 0)
	got, order := logBatches(t, f, 0)
	for _, base := range order {
		if !bytes.Equal(got[base], all[base]) {
			t.Fatalf("batch at %d differs from the leader's", base)
		}
	}
	if n := len(order); n > 0 {
		last, _ := batch.Peek(got[order[n-1]])
		if last.NextOffset() != end {
			t.Fatalf("last batch ends at %d, log end %d", last.NextOffset(), end)
		}
	}
	var want []EpochEntry
	for _, e := range leader.EpochEntries() {
		if e.StartOffset < end {
			want = append(want, e)
		}
	}
	if got := f.EpochEntries(); !slices.Equal(got, want) {
		t.Fatalf("epochs %v, want %v", got, want)
	}
}

func TestTruncateTo(t *testing.T) {
	leader, epochs := leaderWithEpochs(t, t.TempDir())
	defer leader.Close()
	all, order := logBatches(t, leader, 0)
	dir := t.TempDir()
	f := openLog(t, dir, testConfig(FlushAlways), Options{})
	replicate(t, leader, f)
	end := f.EndOffset()

	// Into epoch 2, in the middle of a sealed segment, with producer 7's
	// batches above and below the cut.
	cut := order[33]
	segsBefore := len(f.Segments())
	if err := f.TruncateTo(cut + 2); !errors.Is(err, ErrNotBatchBoundary) {
		t.Fatalf("truncate inside a batch: %v", err)
	}
	if err := f.TruncateTo(end + 5); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("truncate past the end: %v", err)
	}
	if err := f.TruncateTo(end); err != nil || f.EndOffset() != end {
		t.Fatalf("truncate to the end: %v, end %d", err, f.EndOffset())
	}
	if err := f.TruncateTo(cut); err != nil {
		t.Fatal(err)
	}
	checkPrefixOf(t, leader, f, cut)
	if n := len(f.Segments()); n >= segsBefore {
		t.Fatalf("%d segments after the cut, %d before", n, segsBefore)
	}
	if _, err := f.Read(cut+5, 1<<20); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("read above the cut: %v", err)
	}
	if e, o := f.EndOffsetForEpoch(2); e != 2 || o != cut {
		t.Fatalf("epoch 2 ends at (%d, %d) after the cut, want (2, %d)", e, o, cut)
	}
	if e, o := f.EndOffsetForEpoch(5); e != -1 || o != -1 {
		t.Fatalf("epoch 5, cut away, ends at (%d, %d)", e, o)
	}

	// The producer state is the state below the cut: producer 7's last
	// batch below it is a retry, its first above it is the next sequence.
	var below, above batch.Header
	for _, base := range order {
		h, _ := batch.Peek(all[base])
		if h.ProducerID == 7 && base < cut {
			below = h
		} else if h.ProducerID == 7 && above.ProducerID != 7 {
			above = h
		}
	}
	dup := testutil.IdempotentBatch(t, 7, 0, below.BaseSequence, 5, 1000)
	wantDup(t, f, dup, below.BaseOffset, below.LastOffset())
	// A retry of a batch that was cut away is not answered with its old
	// offsets: they no longer exist.
	res := mustAppend(t, f, testutil.IdempotentBatch(t, 7, 0, above.BaseSequence, 5, 1000))
	if res.Duplicate || res.BaseOffset != cut {
		t.Fatalf("the first cut-away sequence answered %+v, want a new append at %d", res, cut)
	}
	// The log's epoch (5) is stamped on that append and enters the cache.
	if got := f.EpochEntries(); got[len(got)-1] != (EpochEntry{5, cut}) {
		t.Fatalf("epochs after appending at the cut: %v", got)
	}
	f.Close()

	// Reopened: the same log, the same epochs, the same producer state.
	f = openLog(t, dir, testConfig(FlushAlways), Options{})
	if f.EndOffset() != cut+5 || !slices.Equal(f.EpochEntries(), append(slices.Clone(epochs[:2]), EpochEntry{5, cut})) {
		t.Fatalf("reopened: end %d, epochs %v", f.EndOffset(), f.EpochEntries())
	}
	wantDup(t, f, testutil.IdempotentBatch(t, 7, 0, above.BaseSequence, 5, 1000), cut, cut+4)

	// To a segment base, then to the log start.
	segs := f.Segments()
	if err := f.TruncateTo(segs[1].BaseOffset); err != nil {
		t.Fatal(err)
	}
	checkPrefixOf(t, leader, f, segs[1].BaseOffset)
	if err := f.TruncateTo(0); err != nil {
		t.Fatal(err)
	}
	if f.EndOffset() != 0 || len(f.Segments()) != 1 || len(f.EpochEntries()) != 0 {
		t.Fatalf("after truncating to 0: end %d, %d segments, epochs %v", f.EndOffset(), len(f.Segments()), f.EpochEntries())
	}
	// Producer 7 is unknown now, in a log that never held a record... as
	// far as the log can tell: only sequence 0 starts it (KAFKA-15591).
	wantRefused(t, f, testutil.IdempotentBatch(t, 7, 0, 10, 5, 1000), ErrOutOfOrderSequence)
	replicate(t, leader, f)
	checkPrefixOf(t, leader, f, leader.EndOffset())
	f.Close()
	f = openLog(t, dir, testConfig(FlushAlways), Options{})
	defer f.Close()
	checkPrefixOf(t, leader, f, leader.EndOffset())
}

// Readers racing truncations see the log before a cut or after it, never
// bytes of both: a follower switches between two leaders whose logs
// diverge after offset X, truncating to X each time, while readers check
// that every read is entirely one leader's.
func TestTruncateRacesReaders(t *testing.T) {
	a, _ := leaderWithEpochs(t, t.TempDir())
	defer a.Close()
	aBatches, aOrder := logBatches(t, a, 0)
	x := aOrder[len(aOrder)/3]
	b := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer b.Close()
	for _, base := range aOrder {
		if base >= x {
			break
		}
		if _, err := b.AppendReplica(aBatches[base]); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetLeaderEpoch(9); err != nil {
		t.Fatal(err)
	}
	for range 40 { // other records than a's at the same offsets
		mustAppend(t, b, testutil.Batch(t, b.EndOffset()+1_000_000, 3, 700, 5_000_000))
	}
	bBatches, bOrder := logBatches(t, b, 0)
	offsets := slices.Concat(aOrder, bOrder)

	f := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer f.Close()
	replicate(t, a, f)
	stop := make(chan struct{})
	errc := make(chan error, 3)
	for r := range 3 {
		go func() {
			var err error
			defer func() { errc <- err }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				off := offsets[(i*7+r*13)%len(offsets)]
				res, rerr := f.Read(off, 16<<10)
				if rerr != nil {
					if !errors.Is(rerr, ErrOffsetOutOfRange) {
						err = rerr
						return
					}
					continue
				}
				if len(res.Records) == 0 && off < res.EndOffset {
					err = fmt.Errorf("a read at %d, below the end %d, returned nothing", off, res.EndOffset)
					return
				}
				fromA, fromB := true, true // every batch so far matches
				for p := res.Records; len(p) > 0; {
					h, perr := batch.Peek(p)
					if perr != nil {
						err = perr
						return
					}
					fromA = fromA && bytes.Equal(p[:h.Size()], aBatches[h.BaseOffset])
					fromB = fromB && bytes.Equal(p[:h.Size()], bBatches[h.BaseOffset])
					p = p[h.Size():]
				}
				if !fromA && !fromB {
					err = errors.New("a read returned batches of both leaders, or of neither")
					return
				}
			}
		}()
	}
	leaders := []*Log{b, a}
	for i := range 30 {
		if err := f.TruncateTo(x); err != nil {
			t.Fatal(err)
		}
		replicate(t, leaders[i%2], f)
	}
	close(stop)
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	checkPrefixOf(t, a, f, a.EndOffset()) // the last round followed a
}

// pausingFiles hands out segment files whose next ReadAt, once armed,
// announces itself and waits for release: a read held between taking its
// bounds and reading the bytes.
type pausingFiles struct {
	armed            atomic.Bool
	reading, release chan struct{}
}

func (p *pausingFiles) open(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &pausingFile{File: f, p: p}, nil
}

type pausingFile struct {
	*os.File
	p *pausingFiles
}

func (f *pausingFile) ReadAt(b []byte, off int64) (int, error) {
	if f.p.armed.CompareAndSwap(true, false) {
		f.p.reading <- struct{}{}
		<-f.p.release
	}
	return f.File.ReadAt(b, off)
}

// A read that took its bounds in a segment before TruncateTo cut it, and
// reads its bytes after another leader's batches replaced them, reads
// again: it answers with the new batches only.
func TestReadAcrossTruncateReadsAgain(t *testing.T) {
	a, _ := leaderWithEpochs(t, t.TempDir())
	defer a.Close()
	p := &pausingFiles{reading: make(chan struct{}), release: make(chan struct{})}
	f := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{OpenFile: p.open})
	defer f.Close()
	replicate(t, a, f)
	// x and off: the second and fourth batches of a segment.
	_, order := logBatches(t, a, 0)
	var x, off int64 = -1, -1
	for _, s := range f.Segments() {
		var in []int64
		for _, o := range order {
			if o >= s.BaseOffset && o < s.NextOffset {
				in = append(in, o)
			}
		}
		if len(in) >= 4 {
			x, off = in[1], in[3]
			break
		}
	}
	if x < 0 {
		t.Fatal("no segment of 4 batches")
	}
	// Leader b shares a's log below x and differs from there.
	b := openLog(t, t.TempDir(), testConfig(FlushAlways), Options{})
	defer b.Close()
	all, _ := logBatches(t, a, 0)
	for _, o := range order {
		if o < x {
			if _, err := b.AppendReplica(all[o]); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.SetLeaderEpoch(9)
	for range 40 {
		mustAppend(t, b, testutil.Batch(t, b.EndOffset()+1_000_000, 3, 700, 5_000_000))
	}
	bBatches, _ := logBatches(t, b, 0)

	p.armed.Store(true)
	type result struct {
		res FetchResult
		err error
	}
	done := make(chan result)
	go func() {
		res, err := f.Read(off, 1)
		done <- result{res, err}
	}()
	<-p.reading
	if err := f.TruncateTo(x); err != nil {
		t.Fatal(err)
	}
	replicate(t, b, f)
	close(p.release)
	r := <-done
	if r.err != nil {
		t.Fatalf("read across the truncation: %v", r.err)
	}
	h, err := batch.Peek(r.res.Records)
	if err != nil || h.BaseOffset > off || h.NextOffset() <= off || !bytes.Equal(r.res.Records[:h.Size()], bBatches[h.BaseOffset]) {
		t.Fatalf("read across the truncation returned the batch at %d (%v), not b's batch holding offset %d", h.BaseOffset, err, off)
	}
}
