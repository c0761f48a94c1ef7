package cold_test

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil/auditgen"
)

// auditLog returns a segment's worth of audit events in uncompressed
// producer batches of 200 records (what tierlog's gRPC produce path
// builds), from offset base; logs are cached by (seed, size).
func auditLog(b testing.TB, seed uint64, base int64, size int) ([]byte, int64) {
	b.Helper()
	k := [2]uint64{seed, uint64(size)}
	auditMu.Lock()
	defer auditMu.Unlock()
	if l, ok := auditLogs[k]; ok && l.base == base {
		return l.log, l.next
	}
	log, next, err := auditgen.New(auditgen.Options{Seed: seed}).Log(base, size, 200, batch.None)
	if err != nil {
		b.Fatal(err)
	}
	auditLogs[k] = struct {
		log        []byte
		base, next int64
	}{log, base, next}
	return log, next
}

var (
	auditMu   sync.Mutex
	auditLogs = map[[2]uint64]struct {
		log        []byte
		base, next int64
	}{}
)

var levels = []struct {
	name  string
	level zstd.EncoderLevel
}{{"fastest", zstd.SpeedFastest}, {"default", zstd.SpeedDefault}, {"better", zstd.SpeedBetterCompression}}

// BenchmarkWriteSegment measures WriteSegment on 16 MiB of JSON audit
// events (MB/s of segment bytes) and reports the compression ratio per zstd
// level: the figures behind DefaultLevel.
func BenchmarkWriteSegment(b *testing.B) {
	log, _ := auditLog(b, 1, 0, 16<<20)
	for _, l := range levels {
		b.Run(l.name, func(b *testing.B) {
			var obj bytes.Buffer
			obj.Grow(len(log))
			var f *cold.Footer
			b.SetBytes(int64(len(log)))
			for b.Loop() {
				obj.Reset()
				var err error
				if f, err = cold.WriteSegment(&obj, bytes.NewReader(log), cold.SegmentOptions{Level: l.level}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(log))/float64(f.ObjectSize), "ratio")
		})
	}
}

// BenchmarkDecodeChunk measures verifying and decompressing one 4 MiB
// chunk of audit events (MB/s of decompressed bytes), per level it was
// written with.
func BenchmarkDecodeChunk(b *testing.B) {
	log, _ := auditLog(b, 1, 0, 16<<20)
	for _, l := range levels {
		b.Run(l.name, func(b *testing.B) {
			var obj bytes.Buffer
			f, err := cold.WriteSegment(&obj, bytes.NewReader(log), cold.SegmentOptions{Level: l.level})
			if err != nil {
				b.Fatal(err)
			}
			c := f.Chunks[1]
			stored := obj.Bytes()[c.StoredPos : c.StoredPos+c.StoredSize]
			b.SetBytes(c.RawSize)
			for b.Loop() {
				if _, err := cold.DecodeChunk(stored, c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(c.RawSize)/float64(c.StoredSize), "ratio")
		})
	}
}

// BenchmarkCompressProducerBatches shows what happens to batches the
// producer already compressed: the chunk does not shrink and is stored raw.
func BenchmarkCompressProducerBatches(b *testing.B) {
	log, _, err := auditgen.New(auditgen.Options{Seed: 2}).Log(0, 8<<20, 200, batch.LZ4)
	if err != nil {
		b.Fatal(err)
	}
	var f *cold.Footer
	b.SetBytes(int64(len(log)))
	for b.Loop() {
		if f, err = cold.WriteSegment(io.Discard, bytes.NewReader(log), cold.SegmentOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	raw := 0
	for _, c := range f.Chunks {
		if c.Codec == cold.ChunkRaw {
			raw++
		}
	}
	b.ReportMetric(float64(raw)/float64(len(f.Chunks)), "raw-chunks")
	b.ReportMetric(float64(len(log))/float64(f.ObjectSize), "ratio")
}
