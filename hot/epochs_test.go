package hot

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tierlog/tierlog/internal/batch"
)

func TestEpochCacheEndOffsetForKafkaSemantics(t *testing.T) {
	c := epochCache{}
	if e, o := c.endOffsetFor(0, 50); e != -1 || o != -1 {
		t.Fatalf("empty cache answered (%d, %d), want (-1, -1)", e, o)
	}
	for _, e := range []EpochEntry{{3, 10}, {5, 20}, {8, 40}} {
		c.assign(e.Epoch, e.StartOffset)
	}
	for _, tc := range []struct {
		epoch      int32
		wantEpoch  int32
		wantOffset int64
	}{
		{-1, -1, -1}, // undefined
		{1, 1, 10},   // below the earliest: Kafka answers the first known start
		{3, 3, 20},
		{4, 3, 20}, // no epoch 4: the one below it, ending where 5 starts
		{5, 5, 40},
		{7, 5, 40},
		{8, 8, 50}, // the latest: the log end
		{9, -1, -1},
	} {
		if e, o := c.endOffsetFor(tc.epoch, 50); e != tc.wantEpoch || o != tc.wantOffset {
			t.Errorf("epoch %d: (%d, %d), want (%d, %d)", tc.epoch, e, o, tc.wantEpoch, tc.wantOffset)
		}
	}
	// An epoch whose leader appended nothing is replaced by the next.
	c.assign(9, 50)
	c.assign(10, 50)
	if want := []EpochEntry{{3, 10}, {5, 20}, {8, 40}, {10, 50}}; !slices.Equal(c.entries, want) {
		t.Fatalf("entries %v, want %v", c.entries, want)
	}
	if c.assign(7, 60) || c.assign(10, 70) {
		t.Fatal("an older or the same epoch changed the cache")
	}
}

func TestEpochCheckpointSurvivesRestartAndIsRebuilt(t *testing.T) {
	dir := t.TempDir()
	l, want := leaderWithEpochs(t, dir)
	if got := l.EpochEntries(); !slices.Equal(got, want) {
		t.Fatalf("epochs %v, want %v", got, want)
	}
	end := l.EndOffset()
	if e, o := l.EndOffsetForEpoch(2); e != 2 || o != want[2].StartOffset {
		t.Fatalf("epoch 2 ends at (%d, %d), want (2, %d)", e, o, want[2].StartOffset)
	}
	if e, o := l.EndOffsetForEpoch(5); e != 5 || o != end {
		t.Fatalf("epoch 5 ends at (%d, %d), want (5, %d)", e, o, end)
	}
	l.Close()
	path := filepath.Join(dir, epochCheckpointFile)
	written, err := readEpochCheckpoint(path)
	if err != nil || !slices.Equal(written, want) {
		t.Fatalf("checkpoint holds %v (%v), want %v", written, err, want)
	}

	reopen := func(why string) *Log {
		t.Helper()
		l := openLog(t, dir, testConfig(FlushAlways), Options{})
		if got := l.EpochEntries(); !slices.Equal(got, want) {
			t.Fatalf("%s: epochs %v, want %v", why, got, want)
		}
		if l.LeaderEpoch() != 5 {
			t.Fatalf("%s: the log's epoch is %d after reopening, want 5 (epochs never go back)", why, l.LeaderEpoch())
		}
		l.Close()
		if got, err := readEpochCheckpoint(path); err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: checkpoint holds %v (%v), want %v", why, got, err, want)
		}
		return l
	}
	reopen("clean restart")
	// A data directory from before the cache: rebuilt from the headers.
	os.Remove(path)
	reopen("no checkpoint")
	os.WriteFile(path, []byte("0\n3\n0 0\n2 10\n"), 0o644) // torn
	reopen("torn checkpoint")
	// A crash between a batch of a new epoch and the checkpoint's write:
	// the file knows only the first epoch.
	os.WriteFile(path, []byte("0\n1\n0 0\n"), 0o644)
	reopen("checkpoint behind the batches")
	// A crash after the checkpoint named an epoch whose batches were lost.
	os.WriteFile(path, []byte("0\n4\n0 0\n2 100\n5 200\n9 100000\n"), 0o644)
	reopen("checkpoint past the log end")
}

func TestEpochWithoutBatchesSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	appendRecords(t, l, 10, 2, 100)
	if err := l.SetLeaderEpoch(4); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = openLog(t, dir, testConfig(FlushAlways), Options{})
	defer l.Close()
	want := []EpochEntry{{0, 0}, {4, 20}}
	if got := l.EpochEntries(); !slices.Equal(got, want) || l.LeaderEpoch() != 4 {
		t.Fatalf("epochs %v, log epoch %d; want %v, 4", got, l.LeaderEpoch(), want)
	}
	if err := l.SetLeaderEpoch(3); err == nil {
		t.Fatal("an epoch below the log's was accepted after a restart")
	}
	res := appendRecords(t, l, 1, 2, 100)
	b, _ := l.Read(res[0].BaseOffset, 1)
	if h, _ := batch.Peek(b.Records); h.PartitionLeaderEpoch != 4 {
		t.Fatalf("batch stamped with epoch %d, want 4", h.PartitionLeaderEpoch)
	}
}

// A single node's log (Options.LeaderEpoch 0, never changed) gets one
// entry and the checkpoint is not rewritten by later opens.
func TestEpochCacheOfASingleNode(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testConfig(FlushAlways), Options{})
	appendRecords(t, l, 50, 5, 1000)
	l.Close()
	path := filepath.Join(dir, epochCheckpointFile)
	st1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, testConfig(FlushAlways), Options{})
	defer l.Close()
	if got := l.EpochEntries(); !slices.Equal(got, []EpochEntry{{0, 0}}) {
		t.Fatalf("epochs %v", got)
	}
	if st2, _ := os.Stat(path); !os.SameFile(st1, st2) {
		t.Fatal("a clean reopen rewrote the checkpoint")
	}
}
