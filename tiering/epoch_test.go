package tiering

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

// Issue 6 item 4: a producer alternating leader epochs used to grow a
// remote segment's footer by one epoch entry per batch, because the log
// stored the producer's epoch. The log stamps its own, so a segment written
// in one epoch has a one-entry epoch table.
func TestRemoteSegmentHasTheLogsEpochOnly(t *testing.T) {
	dir := t.TempDir()
	l, err := hot.Open(dir, hot.DefaultConfig(), hot.Options{LeaderEpoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		b, err := batch.Build([]batch.Record{{Timestamp: 1000, Value: fmt.Appendf(nil, "v%d", i)}}, batch.BuildOptions{Codec: batch.Snappy})
		if err != nil {
			t.Fatal(err)
		}
		batch.SetLeaderEpoch(b, int32(i%2*7)) // 0, 7, 0, 7 ...
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) != 1 {
		t.Fatalf("segments %v, %v; want one", logs, err)
	}
	data, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	var obj bytes.Buffer
	f, err := cold.WriteSegment(&obj, bytes.NewReader(data), cold.SegmentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Epochs) != 1 || f.Epochs[0] != (cold.EpochStart{Epoch: 2, StartOffset: 0}) {
		t.Fatalf("footer epoch table has %d entries (first %+v), want one: epoch 2 from offset 0", len(f.Epochs), f.Epochs[:min(1, len(f.Epochs))])
	}
}
