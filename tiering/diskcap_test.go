package tiering

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestPartitionDiskCeiling: a partition's own ceiling (local.disk.max.bytes)
// refuses appends with a retriable error naming it once its local segments
// reach it while uploads lag, leaves reads and the log alone, and lets
// appends in again once uploads and local retention free the space.
func TestPartitionDiskCeiling(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	const ceiling = 96 << 10
	p, err := OpenPartition(context.Background(), PartitionOptions{
		Dir: filepath.Join(e.dataDir, "t", "0"), Topic: "t", Hot: hotConfig(),
		Store: e.store, Reader: e.reader, Remote: true, Retention: Retention{Bytes: -1}, LocalMaxBytes: ceiling,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	e.daemon.Add(p) // no pass runs: uploads lag
	var refused error
	for i := 0; refused == nil; i++ {
		if i > 1000 {
			t.Fatalf("%d appends accepted past a %d-byte ceiling", i, ceiling)
		}
		first := p.EndOffset()
		_, refused = p.Append(testutil.Batch(t, first, 5, valueSize, 1_000_000+first))
	}
	var full *LocalDiskFullError
	if !errors.As(refused, &full) || !errors.Is(refused, ErrLocalDiskFull) || full.Setting != PartitionDiskSetting || full.Limit != ceiling || full.Used < ceiling {
		t.Fatalf("append past the ceiling: %v", refused)
	}
	t.Log(refused)
	end := p.EndOffset()
	checkRecords(t, readAll(t, p, 0), 0, end)
	e.daemon.checkDisk() // a measurement keeps it refusing
	if st := p.Status(time.Now()); st.ProduceRefused == "" || st.LocalMaxBytes != ceiling {
		t.Fatalf("status does not report the refusal: %+v", st)
	}
	if _, err := p.Append(testutil.Batch(t, end, 5, valueSize, 1_000_000+end)); !errors.Is(err, ErrLocalDiskFull) {
		t.Fatalf("append after a measurement at the ceiling: %v", err)
	}

	e.settle(p) // uploads catch up, local retention frees space
	e.daemon.checkDisk()
	produce(t, p, 10)
	checkRecords(t, readAll(t, p, 0), 0, p.EndOffset())
	if st := p.Status(time.Now()); st.ProduceRefused != "" {
		t.Fatalf("still refusing after space was freed: %s", st.ProduceRefused)
	}
}
