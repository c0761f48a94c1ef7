package tiering

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const valueSize = 200

// env is a node's view of one bucket: its store, reader and daemon.
type env struct {
	t       *testing.T
	dataDir string
	bucket  cold.Bucket
	store   *Store
	reader  *cold.Reader
	daemon  *Daemon
}

func newFileBucket(t *testing.T) cold.Bucket {
	b, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newEnv opens a store on bucket for a node whose data lives in dataDir.
func newEnv(t *testing.T, bucket cold.Bucket, dataDir string) *env {
	t.Helper()
	return newEnvOpts(t, bucket, dataDir, StoreOptions{})
}

// restoreEnv is newEnv for a node restoring another's prefix: it takes the
// prefix over.
func restoreEnv(t *testing.T, bucket cold.Bucket, dataDir string) *env {
	t.Helper()
	return newEnvOpts(t, bucket, dataDir, StoreOptions{Takeover: true})
}

func newEnvOpts(t *testing.T, bucket cold.Bucket, dataDir string, opts StoreOptions) *env {
	t.Helper()
	opts.Logger = testLogger(t)
	store, err := OpenStore(context.Background(), bucket, dataDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := cold.NewChunkCache(cold.ChunkCacheOptions{MaxBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := cold.NewReader(bucket, cache, cold.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close(); cache.Close() })
	e := &env{t: t, dataDir: dataDir, bucket: bucket, store: store, reader: reader}
	e.daemon = NewDaemon(store, DaemonOptions{TmpDir: filepath.Join(dataDir, "tmp"), ChunkBytes: 16 << 10, Logger: testLogger(t), Interval: 10 * time.Millisecond,
		Backoff: Backoff{Attempts: 4, Base: 5 * time.Millisecond, Max: 50 * time.Millisecond}})
	return e
}

func hotConfig() hot.Config {
	c := hot.DefaultConfig()
	c.SegmentBytes = 64 << 10
	c.FlushPolicy = hot.FlushOS
	c.RetentionBytes = 0 // local retention: keep nothing that is safely remote
	c.IndexIntervalBytes = 1024
	return c
}

func (e *env) open(topic string, part int32, remote bool) *Partition {
	e.t.Helper()
	p, err := OpenPartition(context.Background(), PartitionOptions{
		Dir: filepath.Join(e.dataDir, topic, "0"), Topic: topic, Partition: part, Hot: hotConfig(),
		Store: e.store, Reader: e.reader, Remote: remote, Retention: Retention{Bytes: -1},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.daemon.Add(p)
	return p
}

// produce appends n batches of 5 records numbered from the end offset.
func produce(t *testing.T, p *Partition, n int) {
	t.Helper()
	for range n {
		first := p.EndOffset()
		if _, err := p.Append(testutil.Batch(t, first, 5, valueSize, 1_000_000+first)); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads from offset from to the end through the tiered read path.
func readAll(t *testing.T, p *Partition, from int64) []batch.Record {
	t.Helper()
	return readRecords(t, from, p.EndOffset(), func(off int64) ([]byte, error) {
		res, err := p.Read(context.Background(), off, 32<<10)
		return res.Records, err
	})
}

// readRecords reads offsets [from, to) with read, which returns whole
// batches from the one holding its offset.
func readRecords(t *testing.T, from, to int64, read func(off int64) ([]byte, error)) []batch.Record {
	t.Helper()
	var out []batch.Record
	for off := from; off < to; {
		data, err := read(off)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		recs, err := batch.DecodeAll(data)
		if err != nil || len(recs) == 0 {
			t.Fatalf("decode at %d: %d records, %v", off, len(recs), err)
		}
		for _, r := range recs {
			if r.Offset >= off {
				out = append(out, r)
			}
		}
		off = recs[len(recs)-1].Offset + 1
	}
	return out
}

func checkRecords(t *testing.T, recs []batch.Record, from, to int64) {
	t.Helper()
	if int64(len(recs)) != to-from {
		t.Fatalf("got %d records, want %d (%d..%d)", len(recs), to-from, from, to-1)
	}
	for i, r := range recs {
		want := from + int64(i)
		if r.Offset != want || string(r.Value) != string(testutil.Value(want, valueSize)) {
			t.Fatalf("record %d: offset %d value %.30q, want offset %d value %.30q", i, r.Offset, r.Value, want, testutil.Value(want, valueSize))
		}
	}
}

// settle rolls the active segment, waits until every sealed segment is
// committed remotely and local retention has run.
func (e *env) settle(p *Partition) {
	e.t.Helper()
	p.Log().Roll()
	testutil.Eventually(e.t, 10*time.Second, func() bool {
		e.daemon.pass(context.Background())
		p.Log().ApplyRetention(time.Now())
		st := p.Status(time.Now())
		return st.LagSegments == 0 && st.LocalSegments == 1
	}, "segments uploaded and local copies freed")
}

// testLogger writes the daemon's logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
