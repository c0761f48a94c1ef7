package hot

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// Item 13: under message.timestamp.type=LogAppendTime the log stamps every
// batch with its clock (attribute bit and max timestamp, CRC rewritten), so
// decoded records carry the append time; a producer may not set the bit.
func TestLogAppendTimeTopicStampsAppendTime(t *testing.T) {
	cfg := testConfig(FlushOS)
	cfg.TimestampType = LogAppendTime
	clock := time.UnixMilli(1_700_000_000_000)
	l := openLog(t, t.TempDir(), cfg, Options{Now: func() time.Time { return clock }})
	defer l.Close()

	for i, c := range []batch.Codec{batch.None, batch.Zstd} {
		clock = clock.Add(time.Second)
		res, err := l.Append(producerBatch(t, "p", 3, c, 1000))
		if err != nil {
			t.Fatal(err)
		}
		if res.LogAppendTime != clock.UnixMilli() {
			t.Errorf("batch %d: acknowledged append time %d, want %d", i, res.LogAppendTime, clock.UnixMilli())
		}
	}
	got, err := l.Read(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := batch.DecodeAll(got.Records) // also checks the rewritten CRCs
	if err != nil {
		t.Fatal(err)
	}
	base := time.UnixMilli(1_700_000_000_000)
	for i, r := range recs {
		want := base.Add(time.Duration(1+i/3) * time.Second).UnixMilli()
		if r.Timestamp != want {
			t.Errorf("record %d timestamp %d, want the append time %d", i, r.Timestamp, want)
		}
	}
	h, err := batch.Validate(got.Records)
	if err != nil || !h.LogAppendTime() {
		t.Fatalf("stored batch: LogAppendTime %v, %v", h.LogAppendTime(), err)
	}

	b := producerBatch(t, "p", 1, batch.None, 1000)
	batch.SetMaxTimestamp(b, true, 5)
	if _, err := l.Append(b); !errors.Is(err, ErrCorruptBatch) {
		t.Fatalf("producer batch with the LogAppendTime bit: %v, want ErrCorruptBatch", err)
	}
}

func TestTimestampTypeValidated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TimestampType = "Whenever"
	if err := cfg.Validate(); err == nil {
		t.Fatal("message.timestamp.type Whenever accepted")
	}
	for _, s := range []string{"CreateTime", "LogAppendTime"} {
		if _, err := ParseTimestampType(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

// Item 4: the epoch comes from the log's options and moves only forward.
func TestLeaderEpochFromOptionsAndSetter(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushOS), Options{LeaderEpoch: 4})
	defer l.Close()
	epochOf := func(off int64) int32 {
		res, err := l.Read(off, 1)
		if err != nil {
			t.Fatal(err)
		}
		h, err := batch.Validate(res.Records)
		if err != nil {
			t.Fatal(err)
		}
		return h.PartitionLeaderEpoch
	}
	b := producerBatch(t, "e", 1, batch.None, 1)
	batch.SetLeaderEpoch(b, 77)
	if _, err := l.Append(b); err != nil {
		t.Fatal(err)
	}
	if err := l.SetLeaderEpoch(3); err == nil {
		t.Fatal("epoch moved back from 4 to 3")
	}
	if err := l.SetLeaderEpoch(5); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(producerBatch(t, "e", 1, batch.None, 1)); err != nil {
		t.Fatal(err)
	}
	if e0, e1 := epochOf(0), epochOf(1); e0 != 4 || e1 != 5 {
		t.Fatalf("stored epochs %d, %d; want 4, 5", e0, e1)
	}
}

// A segment's offsets stay within the 32-bit relative range its index
// holds: the log rolls before a batch that would cross it. The range is
// lowered for the test; with the real one a segment would need 2^32
// records.
func TestRollBeforeRelativeOffsetsOverflow(t *testing.T) {
	l := openLog(t, t.TempDir(), testConfig(FlushOS), Options{})
	defer l.Close()
	l.mu.Lock()
	l.maxRelOffset = 25
	l.mu.Unlock()
	for range 10 {
		if _, err := l.Append(producerBatch(t, "r", 10, batch.Zstd, 1)); err != nil {
			t.Fatal(err)
		}
	}
	l.mu.RLock()
	var bases []int64
	for _, s := range l.segments {
		bases = append(bases, s.base)
		if s.next-s.base > l.maxRelOffset {
			t.Errorf("segment %d holds offsets up to %d, past the relative range %d", s.base, s.next-1, l.maxRelOffset)
		}
	}
	l.mu.RUnlock()
	if len(bases) != 5 {
		t.Errorf("segment bases %v, want a roll every 2 batches of 10 (range 25)", bases)
	}
	if recs := readAll(t, l, 0); len(recs) != 100 {
		t.Fatalf("read %d records, want 100", len(recs))
	}
	if maxRelativeOffset != math.MaxUint32 {
		t.Fatalf("the real range is %d, want the uint32 index's %d", int64(maxRelativeOffset), int64(math.MaxUint32))
	}
}
