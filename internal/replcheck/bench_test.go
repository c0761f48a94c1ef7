package replcheck

import (
	"fmt"
	"testing"
)

// BenchmarkCheck checks three replicas of one partition of 30000 records
// (100-byte values, 100 records a batch, 1 MiB segments): copy, open,
// read, compare.
func BenchmarkCheck(b *testing.B) {
	recs := make([]rec, 30000)
	for i := range recs {
		recs[i] = rec{key: fmt.Sprintf("k%d", i), value: fmt.Sprintf("%0100d", i)}
	}
	log := leaderBatches(b, 0, 0, 100, recs)
	dirs := map[int32]string{1: b.TempDir(), 2: b.TempDir(), 3: b.TempDir()}
	for _, dir := range dirs {
		writeReplicaSegments(b, dir, 0, 0, 1<<20, log)
	}
	acks := acksOf(b, 0, log)
	b.ResetTimer()
	for b.Loop() {
		r, err := Check(acks, Options{Topic: topic, Partitions: 1, Dirs: dirs})
		if err != nil || !r.OK() {
			b.Fatalf("%v\n%s", err, r)
		}
	}
	b.ReportMetric(float64(3*len(recs)*b.N)/b.Elapsed().Seconds(), "records/s")
}
