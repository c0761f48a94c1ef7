package tiering

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

// TestArchive reads, with no node and through a read-only bucket, what a
// node tiered to its own prefix and what a cluster's leader tiered to a
// shared one: the manifest a restore would find, every record in order,
// time lookups answered as the node answers them, and clear errors.
func TestArchive(t *testing.T) {
	for _, layout := range []string{"single", "shared"} {
		t.Run(layout, func(t *testing.T) {
			ctx := context.Background()
			bucket := newFileBucket(t)
			var e *env
			if layout == "shared" {
				e = sharedEnv(t, bucket)
				e.store.SetTopicWriter(true)
			} else {
				e = newEnv(t, bucket, t.TempDir())
			}
			p := e.open("orders", 0, true)
			defer p.Close()
			if layout == "shared" {
				if err := p.Log().SetLeaderEpoch(1); err != nil {
					t.Fatal(err)
				}
				p.SetLeadership(1, true)
			}
			if err := e.store.PutTopic(ctx, TopicMeta{Name: "orders", Partitions: 2}); err != nil {
				t.Fatal(err)
			}
			produce(t, p, 300)
			e.settle(p)
			produce(t, p, 10) // not tiered: not in the archive

			cache, err := cold.NewChunkCache(cold.ChunkCacheOptions{MaxBytes: 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer cache.Close()
			ro := cold.ReadOnly(bucket)
			reader, err := cold.NewReader(ro, cache, cold.ReaderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Close()
			a := NewArchive(ro, reader)

			if tm, err := a.Topic(ctx, "orders"); err != nil || tm.Partitions != 2 {
				t.Fatalf("Topic(orders) = %+v, %v; want 2 partitions", tm, err)
			}
			if _, err := a.Topic(ctx, "payments"); !errors.Is(err, ErrUnknownTopic) || !strings.Contains(err.Error(), `"orders"`) {
				t.Errorf("Topic(payments): %v, want ErrUnknownTopic naming the topics there", err)
			}
			ap, err := a.Partition(ctx, "orders", 0)
			if err != nil {
				t.Fatal(err)
			}
			m := p.Manifest()
			if ap.Start != 0 || ap.End != p.UploadedEnd() || ap.End == 0 || ap.ManifestVersion != m.Version || len(ap.Segments) != len(m.committed()) {
				t.Fatalf("archive [%d, %d) version %d with %d segments; the node's manifest: [0, %d) version %d with %d segments",
					ap.Start, ap.End, ap.ManifestVersion, len(ap.Segments), p.UploadedEnd(), m.Version, len(m.committed()))
			}
			checkRecords(t, readArchive(t, ap, 0), 0, ap.End)
			checkRecords(t, readArchive(t, ap, 777), 777, ap.End)
			if _, err := ap.Read(ctx, ap.End, 1<<20); err != io.EOF {
				t.Errorf("Read at the end: %v, want io.EOF", err)
			}
			// The first and last record's times, one in between, and past the end.
			for _, ts := range []int64{0, 1_000_000, 1_000_000 + 503, 1_000_000 + ap.End - 1, 1_000_000 + ap.End + 100} {
				got, err := ap.OffsetForTime(ctx, ts)
				if err != nil {
					t.Fatal(err)
				}
				want, err := p.OffsetForTime(ctx, ts)
				if err != nil {
					t.Fatal(err)
				}
				if want > ap.End {
					want = ap.End // the node finds it in its hot log
				}
				if got != want {
					t.Errorf("OffsetForTime(%d) = %d, the node says %d", ts, got, want)
				}
			}
			// A partition nothing was tiered of is an empty archive.
			if empty, err := a.Partition(ctx, "orders", 1); err != nil || empty.Start != 0 || empty.End != 0 {
				t.Errorf("Partition(orders, 1) = %+v, %v; want an empty archive", empty, err)
			}
		})
	}
}

// TestArchiveBelowStart: once remote retention raised the log start, a
// read below it says where the archive starts.
func TestArchiveBelowStart(t *testing.T) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	e := newEnv(t, bucket, t.TempDir())
	p := e.open("orders", 0, true)
	defer p.Close()
	produce(t, p, 300)
	e.settle(p)
	segs := p.Manifest().committed()
	start := segs[1].BaseOffset + 3 // retention may leave a start inside a segment
	if err := p.commitDurable(ctx, func(m *Manifest) { m.LogStartOffset = start }); err != nil {
		t.Fatal(err)
	}
	cache, err := cold.NewChunkCache(cold.ChunkCacheOptions{MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	reader, err := cold.NewReader(cold.ReadOnly(bucket), cache, cold.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ap, err := NewArchive(cold.ReadOnly(bucket), reader).Partition(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	if ap.Start != start || len(ap.Segments) != len(segs)-1 {
		t.Fatalf("archive starts at %d with %d segments, want %d with %d", ap.Start, len(ap.Segments), start, len(segs)-1)
	}
	var oor *hot.OffsetOutOfRangeError
	if _, err := ap.Read(ctx, start-1, 1<<20); !errors.As(err, &oor) || oor.Start != start || oor.End != ap.End {
		t.Errorf("Read below the start: %v, want an out-of-range error naming [%d, %d)", err, start, ap.End)
	}
	checkRecords(t, readArchive(t, ap, start), start, ap.End)
}

// readArchive reads ap from offset from to its end as bucket consume does.
func readArchive(t *testing.T, ap *ArchivedPartition, from int64) []batch.Record {
	t.Helper()
	return readRecords(t, from, ap.End, func(off int64) ([]byte, error) { return ap.Read(context.Background(), off, 32<<10) })
}
