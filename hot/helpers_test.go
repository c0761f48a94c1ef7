package hot

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) {
	if runCrashChild() || runTruncateChild() || runHWChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

// testConfig is a small-segment configuration so tests roll often.
func testConfig(policy FlushPolicy) Config {
	c := DefaultConfig()
	c.SegmentBytes = 64 << 10
	c.FlushPolicy = policy
	c.IndexIntervalBytes = 1024
	return c
}

func openLog(t testing.TB, dir string, cfg Config, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, cfg, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return l
}

// appendRecords appends count batches of perBatch records each, numbered
// from the log's end offset, and returns the acknowledged results.
func appendRecords(t testing.TB, l *Log, count, perBatch, size int) []AppendResult {
	t.Helper()
	var out []AppendResult
	for range count {
		first := l.EndOffset()
		res, err := l.Append(testutil.Batch(t, first, perBatch, size, 1_000_000+first))
		if err != nil {
			t.Fatalf("append at %d: %v", first, err)
		}
		if res.BaseOffset != first {
			t.Fatalf("append assigned base %d, want %d", res.BaseOffset, first)
		}
		out = append(out, res)
	}
	return out
}

// readAll reads every record from offset from to the end and decodes it.
func readAll(t testing.TB, l *Log, from int64) []batch.Record {
	t.Helper()
	var out []batch.Record
	off := from
	for off < l.EndOffset() {
		res, err := l.Read(off, 16<<10)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if len(res.Records) == 0 {
			t.Fatalf("read at %d (end %d) returned nothing", off, l.EndOffset())
		}
		recs, err := batch.DecodeAll(res.Records)
		if err != nil {
			t.Fatalf("decode at %d: %v", off, err)
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

// checkRecords asserts that recs are exactly records from..to-1 as written
// by appendRecords, byte for byte.
func checkRecords(t testing.TB, recs []batch.Record, from, to int64, size int) {
	t.Helper()
	if int64(len(recs)) != to-from {
		t.Fatalf("got %d records, want %d (offsets %d..%d)", len(recs), to-from, from, to-1)
	}
	for i, r := range recs {
		want := from + int64(i)
		if r.Offset != want {
			t.Fatalf("record %d has offset %d, want %d", i, r.Offset, want)
		}
		if string(r.Value) != string(testutil.Value(want, size)) {
			t.Fatalf("offset %d: value %q, want %q", want, r.Value, testutil.Value(want, size))
		}
	}
}
