package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
)

var verifyBenchBytes = flag.Int64("verify.bytes", 32<<20, "BenchmarkVerify: bytes of audit events to produce, verify and replay")

// BenchmarkVerify measures `tierlog verify` on a stopped node's history in
// a local MinIO next to `tierlog bucket consume` replaying the same data
// in the same run: both the real binary, three rounds each, alternating;
// medians. Throughput is in MB of records (the values, newline included)
// per second; the ratio is verify over the replay. Beside each it reports
// the processor time the binary and MinIO used (both share the machine's
// cores): verify GETs every tile of the tree besides the segments, one
// request per 256 records. It never fails on timing; it fails if verify
// finds anything or the replay prints anything but what was produced.
//
//	go test -run=NONE -bench=BenchmarkVerify -benchtime=1x ./cmd/tierlog [-verify.bytes=33554432]
func BenchmarkVerify(b *testing.B) {
	m := testutil.StartMinIO(b)
	url := m.MinIOURL(m.Bucket, "tierlog")
	dir := b.TempDir()
	keyPath := filepath.Join(dir, "signing.key")
	input, records := benchAuditHistory(b, filepath.Join(dir, "data"), m.Env(), url, *verifyBenchBytes, "--signing-key", keyPath)
	k, err := audit.LoadOrCreateKey(keyPath, audit.KeyName(0))
	if err != nil {
		b.Fatal(err)
	}
	// run runs the binary and adds its wall clock, its CPU and MinIO's to
	// s; it returns what it printed.
	type series struct{ took, cpu, server []time.Duration }
	serverCPU := func() time.Duration {
		d, err := m.CPU()
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	run := func(s *series, args ...string) []byte {
		server0 := serverCPU()
		r := timedRun(b, m.Env(), args...)
		s.took, s.cpu, s.server = append(s.took, r.took), append(s.cpu, r.cpu), append(s.server, serverCPU()-server0)
		return r.out
	}
	var ver, cons series
	var report string
	b.ResetTimer()
	for range 3 {
		report = string(run(&ver, "verify", "--bucket", url, "--public-key", k.Public, "audit"))
		if out := run(&cons, "bucket", "consume", "--bucket", url, "audit"); !bytes.Equal(out, input) {
			b.Fatalf("bucket consume printed %d bytes, want the %d produced", len(out), len(input))
		}
	}
	b.StopTimer()
	median := func(d []time.Duration) time.Duration {
		d = slices.Sorted(slices.Values(d))
		return d[len(d)/2]
	}
	mb := float64(len(input)) / 1e6
	verMBs, consMBs := mb/median(ver.took).Seconds(), mb/median(cons.took).Seconds()
	b.ReportMetric(verMBs, "verify_MB/s")
	b.ReportMetric(consMBs, "consume_MB/s")
	b.ReportMetric(verMBs/consMBs, "ratio")
	cpu := func(s series) string {
		return fmt.Sprintf("CPU: tierlog %v, MinIO %v", median(s.cpu).Round(time.Millisecond), median(s.server).Round(time.Millisecond))
	}
	fmt.Fprintf(os.Stderr, "verify bench: %d records, %.1f MB of records\n  %s"+
		"  tierlog verify          %8v  %7.1f MB/s of records, %.0f records/s; %s\n"+
		"  tierlog bucket consume  %8v  %7.1f MB/s of records; %s\n"+
		"  ratio verify / consume  %.2fx\n",
		records, mb, report, median(ver.took).Round(time.Millisecond), verMBs, float64(records)/median(ver.took).Seconds(), cpu(ver),
		median(cons.took).Round(time.Millisecond), consMBs, cpu(cons), verMBs/consMBs)
}

// BenchmarkProofs builds a real tree of 10^6 leaves in a file bucket
// (audit.Tree, tiles on disk) and measures inclusion and consistency
// proofs from its tiles: size, time to build from the tiles, time to
// verify. For 10^9 leaves, where a real tree does not fit a test, the
// sizes are those of the proofs' node lists (merkle/proof), which is
// ceil(log2 n) hashes x 32 bytes for an inclusion proof at most, and a
// consistency proof at most ceil(log2 n)+1 hashes (checked against the
// real tree at 10^6).
//
//	go test -run=NONE -bench=BenchmarkProofs -benchtime=1x ./cmd/tierlog
func BenchmarkProofs(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	bucket, err := filebucket.New(filepath.Join(b.TempDir(), "bucket"))
	if err != nil {
		b.Fatal(err)
	}
	prefix := "p/"
	tree, err := audit.OpenTree(ctx, bucket, prefix, 0)
	if err != nil {
		b.Fatal(err)
	}
	leafHash := func(i uint64) []byte { return audit.LeafHash(fmt.Appendf(nil, "leaf %d", i)) }
	start := time.Now()
	for from := uint64(0); from < n; from += 1 << 16 {
		l := audit.NewLeaves(int64(from))
		for i := from; i < min(from+1<<16, n); i++ {
			if err := l.Add(int64(i), leafHash(i)); err != nil {
				b.Fatal(err)
			}
		}
		if err := tree.Append(ctx, l); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("tree of %d leaves built in %v", n, time.Since(start).Round(time.Millisecond))
	root := tree.Root()
	oldSize := uint64(n / 3)
	// The root of the older tree, from a second tree over the same leaves.
	t2, _ := audit.OpenTree(ctx, mustBucket(b), prefix, 0)
	l := audit.NewLeaves(0)
	for i := uint64(0); i < oldSize; i++ {
		_ = l.Add(int64(i), leafHash(i))
	}
	if err := t2.Append(ctx, l); err != nil {
		b.Fatal(err)
	}
	oldRoot := t2.Root()

	const rounds = 200
	var incSize, conSize int
	var incBuild, incVerify, conBuild, conVerify time.Duration
	b.ResetTimer()
	for r := range uint64(rounds) {
		i := (r*7919 + 13) % n
		s := time.Now()
		p, err := audit.InclusionProof(ctx, bucket, prefix, i, n)
		incBuild += time.Since(s)
		if err != nil {
			b.Fatal(err)
		}
		s = time.Now()
		if err := audit.VerifyInclusion(leafHash(i), i, n, p, root); err != nil {
			b.Fatal(err)
		}
		incVerify += time.Since(s)
		incSize = max(incSize, len(p))
		s = time.Now()
		c, err := audit.ConsistencyProof(ctx, bucket, prefix, oldSize, n)
		conBuild += time.Since(s)
		if err != nil {
			b.Fatal(err)
		}
		s = time.Now()
		if err := audit.VerifyConsistency(oldSize, n, c, oldRoot, root); err != nil {
			b.Fatal(err)
		}
		conVerify += time.Since(s)
		conSize = max(conSize, len(c))
	}
	b.StopTimer()
	logN := func(n uint64) int { return bits.Len64(n - 1) } // ceil(log2 n)
	if incSize > logN(n) || conSize > logN(n)+1 {
		b.Fatalf("proofs of %d and %d hashes exceed the bounds %d and %d", incSize, conSize, logN(n), logN(n)+1)
	}
	const big = uint64(1_000_000_000)
	bigInc, bigCon := 0, 0
	for _, i := range []uint64{0, big / 3, big - 1} {
		nodes, err := proof.Inclusion(i, big)
		if err != nil {
			b.Fatal(err)
		}
		bigInc = max(bigInc, proofLen(b, nodes))
		cn, err := proof.Consistency(i+1, big)
		if err != nil {
			b.Fatal(err)
		}
		bigCon = max(bigCon, proofLen(b, cn))
	}
	per := func(d time.Duration) time.Duration { return (d / rounds).Round(100 * time.Nanosecond) }
	b.ReportMetric(float64(incSize*audit.HashSize), "inclusion_bytes")
	b.ReportMetric(float64(per(incVerify).Microseconds()), "inclusion_verify_us")
	fmt.Fprintf(os.Stderr, "proof bench (real tree of %d leaves in a file bucket, %d proofs each):\n"+
		"  inclusion    %2d hashes = %4d bytes, built from tiles in %v, verified in %v\n"+
		"  consistency  %2d hashes = %4d bytes (%d -> %d), built from tiles in %v, verified in %v\n"+
		"10^9 leaves (node lists of merkle/proof; formula ceil(log2 n) = %d hashes x 32 bytes = %d bytes):\n"+
		"  inclusion    at most %d hashes = %d bytes; consistency at most %d hashes = %d bytes; verification hashes as many nodes: about %v\n",
		n, rounds, incSize, incSize*audit.HashSize, per(incBuild), per(incVerify), conSize, conSize*audit.HashSize, oldSize, n, per(conBuild), per(conVerify),
		logN(big), logN(big)*audit.HashSize, bigInc, bigInc*audit.HashSize, bigCon, bigCon*audit.HashSize,
		time.Duration(float64(per(incVerify))*float64(logN(big))/float64(max(incSize, 1))).Round(100*time.Nanosecond))
}

func mustBucket(b *testing.B) *filebucket.Bucket {
	fb, err := filebucket.New(filepath.Join(b.TempDir(), "bucket2"))
	if err != nil {
		b.Fatal(err)
	}
	return fb
}

// proofLen is the number of hashes of a proof of nodes (the ephemeral
// node's subtree counts as one).
func proofLen(b *testing.B, nodes proof.Nodes) int {
	hashes := make([][]byte, len(nodes.IDs))
	for i := range hashes {
		hashes[i] = make([]byte, audit.HashSize)
	}
	p, err := nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
	if err != nil {
		b.Fatal(err)
	}
	return len(p)
}
