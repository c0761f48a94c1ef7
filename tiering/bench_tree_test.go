package tiering_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

var benchTreeBytes = flag.Int64("tree.bytes", 256<<20, "BenchmarkTreeUpload: record bytes (keys + values) of audit events to upload")

// BenchmarkTreeUpload measures what the partition's Merkle tree costs the
// tiering daemon, in one run against a local MinIO server: the same
// segments (JSON audit events, -tree.bytes of keys and values) uploaded
// with the tree off and on, twice each in turn, each time from a fresh
// copy of the segments to a fresh prefix; and the bucket objects and
// requests the tiles and checkpoints add, per GiB of records. It never
// fails on timing.
//
//	go test -run=NONE -bench=BenchmarkTreeUpload -benchtime=1x ./tiering [-tree.bytes=268435456]
func BenchmarkTreeUpload(b *testing.B) {
	ctx := context.Background()
	m := testutil.StartMinIO(b)
	rc := newRequestCounter()
	defer rc.close()

	// Produce once, into a partition no daemon uploads.
	src := filepath.Join(b.TempDir(), "src")
	bk := openBenchBucket(b, m, rc, "produce")
	store, err := tiering.OpenStore(ctx, bk, src, tiering.StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	partDir := filepath.Join(src, benchTopic, "0")
	p, err := tiering.OpenPartition(ctx, tiering.PartitionOptions{Dir: partDir, Topic: benchTopic, Hot: benchHotConfig(-1),
		Store: store, Remote: true, Retention: tiering.Retention{Bytes: -1}})
	if err != nil {
		b.Fatal(err)
	}
	progress("produce", "generating %.0f MiB of audit events", mib(*benchTreeBytes))
	gen := produceAudit(b, p, *benchTreeBytes)
	if err := p.Log().Roll(); err != nil {
		b.Fatal(err)
	}
	testutil.Eventually(b, time.Minute, func() bool { return len(p.Log().SealedSegments()) == len(p.Log().Segments())-1 }, "segments sealed")
	p.Close()
	bk.Close()
	key, err := audit.LoadOrCreateKey(filepath.Join(b.TempDir(), "signing.key"), audit.KeyName(0))
	if err != nil {
		b.Fatal(err)
	}

	type result struct {
		took               time.Duration
		cpu, serverCPU     time.Duration // this process's (the daemon's), MinIO's
		raw                int64
		reqs               requests
		tlogObjs, tlogSize int64
	}
	run := func(i int, tree bool) result {
		name := fmt.Sprintf("tree-%v-%d", tree, i)
		dataDir := filepath.Join(b.TempDir(), name)
		// A copy, not links: the partition opened on it changes its files.
		copyFiles(b, partDir, filepath.Join(dataDir, benchTopic, "0"), false)
		bk := openBenchBucket(b, m, rc, name)
		defer bk.Close()
		store, err := tiering.OpenStore(ctx, bk, dataDir, tiering.StoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		p, err := tiering.OpenPartition(ctx, tiering.PartitionOptions{Dir: filepath.Join(dataDir, benchTopic, "0"), Topic: benchTopic,
			Hot: benchHotConfig(0), Store: store, Remote: true, Retention: tiering.Retention{Bytes: -1}})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		do := tiering.DaemonOptions{TmpDir: filepath.Join(dataDir, "tmp"), Logger: slog.New(slog.DiscardHandler)}
		if tree {
			do.Signer = key
		}
		d := tiering.NewDaemon(store, do)
		d.Add(p)
		progress("upload", "upload with the tree %v (%d)", map[bool]string{true: "on", false: "off"}[tree], i)
		req0, start := rc.snapshot(), time.Now()
		cpu0, server0 := testutil.SelfCPU(), minioCPU(b, m)
		d.Start()
		testutil.Eventually(b, 30*time.Minute, func() bool {
			st := p.Status(time.Now())
			return st.LagSegments == 0 && st.RemoteSegments > 0
		}, "every segment uploaded")
		r := result{took: time.Since(start), cpu: testutil.SelfCPU() - cpu0, serverCPU: minioCPU(b, m) - server0}
		d.Close()
		r.reqs = rc.snapshot().since(req0)
		for _, s := range committed(p) {
			r.raw += s.RawSize
		}
		err = bk.Iter(ctx, tiering.PartitionPrefix(benchTopic, 0)+audit.Dir, func(k string) error {
			a, err := bk.Attributes(ctx, k)
			r.tlogObjs++
			r.tlogSize += a.Size
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	var off, on []result
	for i := range 2 {
		off = append(off, run(i, false))
		on = append(on, run(i, true))
	}
	best := func(rs []result) result {
		r := rs[0]
		for _, x := range rs[1:] {
			if x.took < r.took {
				r = x
			}
		}
		return r
	}
	bOff, bOn := best(off), best(on)
	perGiB := float64(1<<30) / float64(gen.recordBytes)
	var w strings.Builder
	fmt.Fprintf(&w, "\nMerkle tree cost (%d records, %.0f MiB of keys+values, %.0f MiB of segments, MinIO on loopback)\n",
		gen.records, mib(gen.recordBytes), mib(bOff.raw))
	for i := range off {
		fmt.Fprintf(&w, "  round %d: tree off %v (%.0f MB/s), on %v (%.0f MB/s)\n", i+1, off[i].took.Round(time.Millisecond), mbps(off[i].raw, off[i].took),
			on[i].took.Round(time.Millisecond), mbps(on[i].raw, on[i].took))
	}
	fmt.Fprintf(&w, "  upload throughput, best of each: on/off = %.2fx\n", bOff.took.Seconds()/bOn.took.Seconds())
	// Where the time goes: on a 2-core machine MinIO's work per request
	// competes with the daemon's; against a remote store only the
	// daemon's own CPU stays on the node.
	for _, x := range []struct {
		name string
		r    result
	}{{"off", bOff}, {"on", bOn}} {
		fmt.Fprintf(&w, "  CPU, tree %-3s: daemon %v, MinIO %v (wall %v)\n", x.name, x.r.cpu.Round(10*time.Millisecond),
			x.r.serverCPU.Round(10*time.Millisecond), x.r.took.Round(time.Millisecond))
	}
	fmt.Fprintf(&w, "  daemon CPU, on/off = %.2fx; MinIO CPU per tile/checkpoint PUT: %.2f ms\n", bOn.cpu.Seconds()/bOff.cpu.Seconds(),
		1e3*(bOn.serverCPU-bOff.serverCPU).Seconds()/float64(max(1, bOn.reqs["PUT"]-bOff.reqs["PUT"])))
	fmt.Fprintf(&w, "  requests, tree off: %v\n  requests, tree on:  %v\n", bOff.reqs, bOn.reqs)
	fmt.Fprintf(&w, "  tree objects (tiles, checkpoints): %d objects, %.2f MiB; per GiB of records: %.0f objects, %.2f MiB, %.0f more PUTs\n",
		bOn.tlogObjs, mib(bOn.tlogSize), float64(bOn.tlogObjs)*perGiB, mib(bOn.tlogSize)*perGiB, float64(bOn.reqs["PUT"]-bOff.reqs["PUT"])*perGiB)
	fmt.Fprint(os.Stderr, w.String())
	b.ReportMetric(bOff.took.Seconds()/bOn.took.Seconds(), "on/off")
}

// minioCPU is the processor time MinIO has used so far.
func minioCPU(b *testing.B, m *testutil.MinIO) time.Duration {
	d, err := m.CPU()
	if err != nil {
		b.Fatal(err)
	}
	return d
}
