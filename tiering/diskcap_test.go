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

// The ceiling with the default local retention (a day of history kept on
// local disk after upload): once the ceiling is reached and every sealed
// segment is uploaded, the uploaded local copies are the only thing to
// free, and they are safe in the bucket. Producing must resume by itself
// (issue 6 item 11), not wait a day for local retention.
func TestCeilingResumesWithLongLocalRetention(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	const ceiling = 160 << 10
	cfg := hotConfig()
	cfg.RetentionBytes = -1
	cfg.RetentionAge = 24 * time.Hour // local.retention.ms's default
	p, err := OpenPartition(context.Background(), PartitionOptions{
		Dir: filepath.Join(e.dataDir, "t", "0"), Topic: "t", Hot: cfg,
		Store: e.store, Reader: e.reader, Remote: true, Retention: Retention{Bytes: -1}, LocalMaxBytes: ceiling,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	e.daemon.Add(p)
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatalf("%d appends accepted past a %d-byte ceiling", i, ceiling)
		}
		first := p.EndOffset()
		if _, err := p.Append(testutil.Batch(t, first, 5, valueSize, time.Now().UnixMilli())); errors.Is(err, ErrLocalDiskFull) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		e.daemon.pass(context.Background())
		p.Log().ApplyRetention(time.Now())
		e.daemon.checkDisk()
		first := p.EndOffset()
		_, err := p.Append(testutil.Batch(t, first, 5, valueSize, time.Now().UnixMilli()))
		return err == nil
	}, "producing resumes once every sealed segment is uploaded")
	end := p.EndOffset()
	checkRecords(t, readAll(t, p, 0), 0, end)
}
