package hot

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// Each append benchmark measures the log and, in the same run, a reference:
// the same bytes written with plain os.File writes and the same fsync
// cadence (every write for always, every flush.ms for interval, never for
// os; both end with everything fsynced). Log and reference operations are
// interleaved one by one, so both see the same disk and page-cache
// conditions, and each is timed separately. It reports both rates and their
// ratio (x-ref): the log's cost over the disk. Batches hold 1 KiB records.

func benchBatches(b *testing.B, batchBytes int) [][]byte {
	perBatch := batchBytes / 1024
	out := make([][]byte, 64)
	for i := range out {
		out[i] = testutil.Batch(b, int64(i*perBatch), perBatch, 1024-40, time.Now().UnixMilli())
	}
	return out
}

func BenchmarkAppend(b *testing.B) {
	for _, policy := range []FlushPolicy{FlushOS, FlushInterval, FlushAlways} {
		for _, size := range []int{16 << 10, 256 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("policy=%s/batch=%dKiB", policy, size>>10), func(b *testing.B) {
				batches := benchBatches(b, size)
				cfg := DefaultConfig()
				cfg.FlushPolicy = policy
				cfg.MaxMessageBytes = 2 << 20
				l := openLog(b, b.TempDir(), cfg, Options{})
				defer l.Close()
				ref, err := os.OpenFile(filepath.Join(b.TempDir(), "ref"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
				if err != nil {
					b.Fatal(err)
				}
				defer ref.Close()
				syscall.Sync()

				var logTime, refTime time.Duration
				lastSync := time.Now()
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := range b.N {
					buf := batches[i%len(batches)]
					t0 := time.Now()
					if _, err := l.Append(buf); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					if _, err := ref.Write(buf); err != nil {
						b.Fatal(err)
					}
					if policy == FlushAlways || (policy == FlushInterval && t1.Sub(lastSync) >= cfg.FlushInterval) {
						ref.Sync()
						lastSync = t1
					}
					logTime += t1.Sub(t0)
					refTime += time.Since(t1)
				}
				t0 := time.Now()
				l.Flush()
				t1 := time.Now()
				ref.Sync()
				logTime += t1.Sub(t0)
				refTime += time.Since(t1)
				total := float64(b.N * len(batches[0]))
				report(b, total/logTime.Seconds(), total/refTime.Seconds())
			})
		}
	}
}

// BenchmarkGroupCommit appends 16 KiB batches under always from 1 and from
// 32 concurrent producers; x-1producer is the throughput gain of sharing
// fsyncs.
func BenchmarkGroupCommit(b *testing.B) {
	batches := benchBatches(b, 16<<10)
	run := func(b *testing.B, producers, total int) float64 {
		l := openLog(b, b.TempDir(), DefaultConfig(), Options{})
		defer l.Close()
		var wg sync.WaitGroup
		start := time.Now()
		per := max(total/producers, 1)
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					buf := append([]byte(nil), batches[(p+i)%len(batches)]...)
					if _, err := l.Append(buf); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return float64(per*producers*len(batches[0])) / time.Since(start).Seconds()
	}
	b.Run("producers=32", func(b *testing.B) {
		total := max(b.N, 320)
		one := run(b, 1, total/8) // the single producer is slow: fewer appends measure it
		b.ResetTimer()
		many := run(b, 32, total)
		b.ReportMetric(many/1e6, "MB/s")
		b.ReportMetric(one/1e6, "1producer-MB/s")
		b.ReportMetric(many/one, "x-1producer")
	})
}

// BenchmarkRead fetches 1 MiB at a time from a log in page cache, next to
// plain ReadAt of the same file; replicated=true reads as a consumer of a
// replicated log whose high watermark is its end (the batches are checked
// against it).
func BenchmarkRead(b *testing.B) {
	for _, repl := range []bool{false, true} {
		b.Run(fmt.Sprintf("replicated=%v", repl), func(b *testing.B) { benchRead(b, repl) })
	}
}

func benchRead(b *testing.B, replicated bool) {
	cfg := DefaultConfig()
	cfg.FlushPolicy = FlushOS
	l := openLog(b, b.TempDir(), cfg, Options{Replicated: replicated})
	defer l.Close()
	batches := benchBatches(b, 64<<10)
	for i := 0; i < 512; i++ { // 32 MiB
		if _, err := l.Append(append([]byte(nil), batches[i%len(batches)]...)); err != nil {
			b.Fatal(err)
		}
	}
	l.SetHighWatermark(l.LogEndOffset())
	end := l.EndOffset()
	path := l.Segments()[0].Path
	size := l.Segments()[0].Size

	for _, reuse := range []bool{false, true} {
		b.Run(fmt.Sprintf("reuse-buffer=%v", reuse), func(b *testing.B) {
			var buf []byte
			if reuse {
				buf = make([]byte, 1<<20)
			}
			ref := referenceRead(b, path, size, b.N)
			b.SetBytes(1 << 20)
			start := time.Now()
			var got int64
			off := int64(0)
			for got < int64(b.N)*(1<<20) {
				res, err := l.ReadBuf(off, 1<<20, buf)
				if err != nil {
					b.Fatal(err)
				}
				got += int64(len(res.Records))
				off = lastNext(res.Records)
				if off >= end {
					off = 0
				}
			}
			report(b, float64(got)/time.Since(start).Seconds(), ref)
		})
	}
}

// referenceRead reads n MiB from the file with plain ReadAt into one reused
// buffer and returns bytes per second.
func referenceRead(b *testing.B, path string, size int64, n int) float64 {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	var total int64
	for i := 0; total < int64(n)*(1<<20); i++ {
		pos := (int64(i) << 20) % size
		m, _ := f.ReadAt(buf, pos)
		total += int64(m)
	}
	return float64(total) / time.Since(start).Seconds()
}

// lastNext returns the offset after the last batch in data.
func lastNext(data []byte) int64 {
	var next int64
	for len(data) >= batch.HeaderSize {
		h, err := batch.ParseHeader(data)
		if err != nil {
			break
		}
		next = h.NextOffset()
		data = data[h.Size():]
	}
	return next
}

func report(b *testing.B, got, ref float64) {
	b.ReportMetric(got/1e6, "MB/s")
	b.ReportMetric(ref/1e6, "ref-MB/s")
	b.ReportMetric(got/ref, "x-ref")
}

// Rolls with a producer state of 300k producers of one batch each, kept
// whole (cap=300000) or cut to the default cap: reports the lock hold of a
// roll (the next append waits this long), the snapshot's size and the
// heap a kept producer takes.
//
//	go test ./hot -run '^$' -bench BenchmarkRollWithManyProducers -benchtime 3x
func BenchmarkRollWithManyProducers(b *testing.B) {
	const producers = 300_000
	for _, maxProducers := range []int{DefaultMaxProducers, producers} {
		b.Run(fmt.Sprintf("cap=%d", maxProducers), func(b *testing.B) {
			dir := b.TempDir()
			cfg := testConfig(FlushOS)
			cfg.SegmentBytes = 1 << 30
			l := openLog(b, dir, cfg, Options{MaxProducers: maxProducers})
			defer l.Close()
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			for i := range producers {
				mustAppend(b, l, testutil.IdempotentBatch(b, int64(i+1), 0, 0, 1, 1))
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			heap := float64(m1.HeapAlloc) - float64(m0.HeapAlloc)
			kept := l.producers.len()
			b.ResetTimer()
			var held time.Duration
			for i := range b.N {
				mustAppend(b, l, testutil.IdempotentBatch(b, producers+1, 0, int32(i), 1, 1))
				start := time.Now()
				l.mu.Lock() // what Roll holds, measured from outside: the next append waits this long
				if err := l.rollLocked(); err != nil {
					b.Fatal(err)
				}
				l.mu.Unlock()
				held += time.Since(start)
			}
			b.StopTimer()
			b.ReportMetric(heap/float64(kept), "heap-B/producer")
			b.ReportMetric(float64(held.Microseconds())/1000/float64(b.N), "lock-ms/roll")
			testutil.Eventually(b, time.Minute, func() bool { return len(l.SealedSegments()) >= b.N }, "rolled segments sealed")
			offs, err := producerSnapshotOffsets(dir)
			if err != nil || len(offs) == 0 {
				b.Fatalf("no snapshot: %v", err)
			}
			st, err := os.Stat(producerSnapshotPath(dir, offs[len(offs)-1]))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.Size())/1e6, "snapshot-MB")
		})
	}
}

// BenchmarkFollowerFetched is the leader's cost of one follower fetch
// (record it, recompute the high watermark over the ISR), three replicas,
// the two followers fetching at the leader's log end from parallel
// goroutines.
func BenchmarkFollowerFetched(b *testing.B) {
	l := openLog(b, b.TempDir(), DefaultConfig(), Options{Replicated: true})
	defer l.Close()
	rs := NewReplicaSet(l, 1, []int32{1, 2, 3}, []int32{1, 2, 3}, 0, time.Now())
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		id := int32(2 + n.Add(1)%2)
		for pb.Next() {
			rs.FollowerFetched(id, l.LogEndOffset(), time.Now())
		}
	})
}
