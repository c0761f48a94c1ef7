package tiering_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/auditgen"
	"github.com/tierlog/tierlog/tiering"
)

var (
	benchBytes   = flag.Int64("tiering.bytes", 1<<30, "BenchmarkTiering: record bytes (keys + values) of audit events to generate")
	benchCache   = flag.Int64("tiering.cache", cold.DefaultCacheBytes, "BenchmarkTiering: chunk cache budget of the cold replay")
	benchWarm    = flag.Int64("tiering.warm", 256<<20, "BenchmarkTiering: segment bytes the warm replay reads from a cache that holds them")
	benchBackend = flag.String("tiering.backend", "minio", "BenchmarkTiering: bucket backend against the local MinIO: minio or s3")
)

const (
	benchSegmentBytes  = 64 << 20   // hot segment size: the design's default
	benchProducerBatch = 1000 << 10 // record bytes per producer batch: ~1 MiB, under max.message.bytes
	benchFetchBytes    = 1 << 20    // a consumer's fetch size
	benchGetRange      = 4 << 20    // raw GET reference: ranges of one chunk
	recordOverhead     = 48         // framing and content-type header of one record, roughly
	benchTopic         = "audit"
)

// BenchmarkTiering is the tiering benchmark of the README, in one run
// against a local MinIO server: it generates -tiering.bytes of JSON audit
// events into a tiered partition, lets the daemon upload every segment, and
// replays the history cold (empty cache, no local segments) and warm, each
// next to a reference measured in the same run: raw PUTs of the same
// objects, raw ranged GETs of them, hot-tier fetches of the same bytes. It
// counts requests and the peak RSS of the cold replay. It never fails on
// timing; it fails if a replay returns anything but the records produced.
//
//	go test -run=NONE -bench=BenchmarkTiering -benchtime=1x ./tiering [-tiering.bytes=67108864]
//
// Each phase labels its goroutines (pprof label "phase": produce, upload,
// rawput, rawget, cold, hot, warm), so with -cpuprofile=cpu.prof,
// `go tool pprof -tagfocus=phase=cold` shows the cold replay alone.
// GOMEMLIMIT applies as usual; the warm phase's cache (-tiering.warm plus
// 64 MiB) must fit under it.
func BenchmarkTiering(b *testing.B) {
	ctx := context.Background()
	tb := &tierBench{b: b, rc: newRequestCounter()}
	defer tb.rc.close()
	m := testutil.StartMinIO(b)
	tb.bucket = openBenchBucket(b, m, tb.rc, "bench")
	defer tb.bucket.Close()
	dataDir := filepath.Join(b.TempDir(), "node")
	var err error
	if tb.store, err = tiering.OpenStore(ctx, tb.bucket, dataDir, tiering.StoreOptions{}); err != nil {
		b.Fatal(err)
	}
	tb.partDir = filepath.Join(dataDir, benchTopic, "0")
	rep := &report{}

	// 1. Produce, with no daemon running: the upload below is then
	// measured on its own, not paced by the producer.
	p := tb.open(nil)
	progress("produce", "generating %.0f MiB of audit events", mib(*benchBytes))
	rep.gen = produceAudit(b, p, *benchBytes)
	if err := p.Log().Roll(); err != nil {
		b.Fatal(err)
	}
	testutil.Eventually(b, time.Minute, func() bool {
		return len(p.Log().SealedSegments()) == len(p.Log().Segments())-1
	}, "segments sealed")
	// A hot copy of the same segments (hard links: the same page cache)
	// for the hot-tier references, before local retention removes them.
	tb.hotDir = filepath.Join(b.TempDir(), "hotcopy")
	copyFiles(b, tb.partDir, tb.hotDir, true)

	// 2. Upload everything; local retention 0 then frees the local copies.
	progress("upload", "uploading %d segments", len(p.Log().SealedSegments()))
	ulog := &uploadLog{}
	d := tiering.NewDaemon(tb.store, tiering.DaemonOptions{TmpDir: filepath.Join(dataDir, "tmp"), Logger: slog.New(ulog)})
	d.Add(p)
	req0 := tb.rc.snapshot()
	wall := time.Now()
	d.Start()
	testutil.Eventually(b, 30*time.Minute, func() bool {
		st := p.Status(time.Now())
		return st.LagSegments == 0 && st.RemoteSegments > 0
	}, "every segment uploaded")
	rep.uploadWall = time.Since(wall)
	d.Close()
	rep.uploadReqs = tb.rc.snapshot().since(req0)
	rep.uploads, rep.uploadSpan = ulog.span()
	rep.warnings = ulog.warnings
	p.Log().ApplyRetention(time.Now())
	tb.segs = committed(p)
	for _, s := range tb.segs {
		rep.segBytes += s.RawSize
		rep.objBytes += s.Size
		rep.chunks += int64(s.Chunks)
	}
	rep.segments = len(tb.segs)
	if st := p.Status(time.Now()); st.LocalSegments != 1 || st.LocalBytes != 0 || st.RemoteRawBytes != rep.segBytes {
		b.Fatalf("after upload and local retention: %+v", st)
	}
	p.Close()

	// 3. Raw PUTs of the same objects, and of the uncompressed segments.
	progress("rawput", "raw PUT references")
	rep.rawPut, rep.rawPutReqs = tb.rawPut()
	rep.rawPutSeg = tb.rawPutSegments()

	// 4. Raw ranged GETs of the stored objects, no decompression.
	progress("rawget", "raw GET reference")
	req0 = tb.rc.snapshot()
	rep.rawGet = tb.rawGet()
	rep.rawGetReqs = tb.rc.snapshot().since(req0)

	// 5. Cold replay: empty cache, no local segments, the whole history.
	progress("cold", "cold replay (cache budget %.0f MiB)", mib(*benchCache))
	rep.cold = tb.coldReplay(rep.gen, *benchCache)

	// 6. The same history from the hot tier (page cache), for scale.
	hl, err := hot.Open(tb.hotDir, benchHotConfig(-1), hot.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer hl.Close()
	tb.hotRead = func(off int64) ([]byte, error) {
		res, err := hl.Read(off, benchFetchBytes)
		return res.Records, err
	}
	progress("hot", "hot replay reference")
	rep.hot = replay(b, tb.hotRead, 0, rep.gen.next, true)

	// 7. Warm replay of a range the cache holds, next to hot fetches.
	progress("warm", "warm replay")
	rep.warm = tb.warmReplay(*benchWarm)

	rep.print(b)
}

// tierBench holds what the phases of BenchmarkTiering share.
type tierBench struct {
	b       *testing.B
	rc      *requestCounter
	bucket  cold.Bucket
	store   *tiering.Store
	partDir string
	hotDir  string
	segs    []tiering.RemoteSegment // committed, in offset order
	hotRead func(off int64) ([]byte, error)
}

// open opens the benchmark's partition with reader r for remote reads.
func (tb *tierBench) open(r *cold.Reader) *tiering.Partition {
	p, err := tiering.OpenPartition(context.Background(), tiering.PartitionOptions{
		Dir: tb.partDir, Topic: benchTopic, Hot: benchHotConfig(0), Store: tb.store, Reader: r,
		Remote: true, Retention: tiering.Retention{Bytes: -1},
	})
	if err != nil {
		tb.b.Fatal(err)
	}
	return p
}

// progress announces a phase and labels the goroutine (and the goroutines
// it starts from now on: the daemon's, the Reader's) with it, so a CPU
// profile splits by phase: go tool pprof -tagfocus=phase=cold.
func progress(phase, format string, args ...any) {
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("phase", phase)))
	fmt.Fprintf(os.Stderr, "tiering bench: "+format+"\n", args...)
}

// benchHotConfig is the hot log of the benchmark: 64 MiB segments, page
// cache durability (segments are fsynced when they roll), local retention
// localBytes (0: nothing stays once uploaded; -1: keep all).
func benchHotConfig(localBytes int64) hot.Config {
	c := hot.DefaultConfig()
	c.SegmentBytes = benchSegmentBytes
	c.FlushPolicy = hot.FlushOS
	c.RetentionBytes = localBytes
	return c
}

func openBenchBucket(b *testing.B, m *testutil.MinIO, rc *requestCounter, prefix string) cold.Bucket {
	var url string
	switch *benchBackend {
	case "minio":
		url = m.MinIOURL(m.Bucket, prefix)
	case "s3":
		url = m.S3URL(m.Bucket, prefix)
	default:
		b.Fatalf("-tiering.backend=%s: valid values are minio and s3", *benchBackend)
	}
	bk, err := bucketurl.Open(context.Background(), url, cold.Options{
		Transport:   rc,
		Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey},
	})
	if err != nil {
		b.Fatal(err)
	}
	return bk
}

// generated describes the produced history.
type generated struct {
	records, recordBytes, batches int64
	next                          int64 // end offset
	took                          time.Duration
}

// produceAudit appends uncompressed producer batches of ~1 MiB of audit
// events (auditgen, seed 1) until recordBytes of keys and values are in.
func produceAudit(b *testing.B, p *tiering.Partition, recordBytes int64) generated {
	start := time.Now()
	g := auditgen.New(auditgen.Options{Seed: 1})
	var out generated
	var recs []batch.Record
	for out.recordBytes < recordBytes {
		recs, est := recs[:0], 0
		for est < benchProducerBatch && out.recordBytes < recordBytes {
			r := g.Next()
			recs = append(recs, r)
			n := len(r.Key) + len(r.Value)
			est += n + recordOverhead
			out.recordBytes += int64(n)
		}
		bt, err := batch.Build(recs, batch.BuildOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Append(bt); err != nil {
			b.Fatal(err)
		}
		out.records += int64(len(recs))
		out.batches++
	}
	out.next = p.EndOffset()
	out.took = time.Since(start)
	if out.next != out.records {
		b.Fatalf("end offset %d after %d records", out.next, out.records)
	}
	return out
}

// copyFiles hard-links (link) or copies every regular file of src into a
// new directory dst.
func copyFiles(b *testing.B, src, dst string, link bool) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		b.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if link {
			err = os.Link(from, to)
		} else {
			err = copyFile(from, to)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func committed(p *tiering.Partition) []tiering.RemoteSegment {
	var out []tiering.RemoteSegment
	for _, s := range p.Manifest().Segments {
		if s.State == tiering.CopyFinished {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b tiering.RemoteSegment) int { return int(a.BaseOffset - b.BaseOffset) })
	return out
}

// timed is a transfer: bytes moved and how long it took.
type timed struct {
	bytes int64
	d     time.Duration
}

// rawPut uploads the stored objects again, one after another as the
// daemon uploads one partition's segments, under another prefix: the bytes
// are read back first (not timed), so only the PUTs are.
func (tb *tierBench) rawPut() (timed, requests) {
	b, bucket, segs := tb.b, tb.bucket, tb.segs
	ctx := context.Background()
	objs := make([][]byte, len(segs))
	for i, s := range segs {
		r, err := bucket.Get(ctx, s.Key)
		if err != nil {
			b.Fatal(err)
		}
		if objs[i], err = io.ReadAll(r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
	req0 := tb.rc.snapshot()
	var t timed
	start := time.Now()
	for i, obj := range objs {
		if _, err := bucket.Upload(ctx, fmt.Sprintf("rawput/%04d", i), bytes.NewReader(obj), int64(len(obj))); err != nil {
			b.Fatal(err)
		}
		t.bytes += int64(len(obj))
	}
	t.d = time.Since(start)
	reqs := tb.rc.snapshot().since(req0)
	for i := range objs {
		bucket.Delete(ctx, fmt.Sprintf("rawput/%04d", i))
	}
	return t, reqs
}

// rawPutSegments uploads the uncompressed segment files, as a tiering
// without compression would.
func (tb *tierBench) rawPutSegments() timed {
	b, bucket := tb.b, tb.bucket
	ctx := context.Background()
	paths, err := filepath.Glob(filepath.Join(tb.hotDir, "*.log"))
	if err != nil {
		b.Fatal(err)
	}
	var t timed
	var keys []string
	start := time.Now()
	for i, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		fi, _ := f.Stat()
		if fi.Size() == 0 {
			f.Close()
			continue // the empty active segment
		}
		key := fmt.Sprintf("rawput-seg/%04d", i)
		_, err = bucket.Upload(ctx, key, f, fi.Size())
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		t.bytes += fi.Size()
		keys = append(keys, key)
	}
	t.d = time.Since(start)
	for _, k := range keys {
		bucket.Delete(ctx, k)
	}
	return t
}

// rawGet reads every stored object in ranged GETs of one chunk's size,
// one at a time, discarding the bytes: the raw cost of moving them.
func (tb *tierBench) rawGet() timed {
	b, bucket := tb.b, tb.bucket
	ctx := context.Background()
	var t timed
	start := time.Now()
	for _, s := range tb.segs {
		for off := int64(0); off < s.Size; off += benchGetRange {
			r, err := bucket.GetRange(ctx, s.Key, off, min(benchGetRange, s.Size-off))
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, r)
			r.Close()
			if err != nil {
				b.Fatal(err)
			}
			t.bytes += n
		}
	}
	t.d = time.Since(start)
	return t
}
