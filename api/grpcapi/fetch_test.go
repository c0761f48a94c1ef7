package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
)

// produceN appends batches of per records each, values "v<offset>", and
// timestamps 1000*(batch index+1) for every record of a batch.
func produceN(t *testing.T, e *testEnv, topic string, batches, per int) {
	t.Helper()
	off := 0
	for b := range batches {
		var recs []*tierlogv1.Record
		for range per {
			recs = append(recs, &tierlogv1.Record{Value: fmt.Appendf(nil, "v%d", off), TimestampMs: int64(1000 * (b + 1))})
			off++
		}
		e.produce(t, &tierlogv1.ProduceRequest{Topic: topic, Partition: ptr[int32](0), Records: recs})
	}
}

func offsets(recs []*tierlogv1.Record) []int64 {
	var o []int64
	for _, r := range recs {
		o = append(o, r.Offset)
	}
	return o
}

func checkOffsets(t *testing.T, got []*tierlogv1.Record, from, to int64) {
	t.Helper()
	if len(got) != int(to-from) {
		t.Fatalf("got offsets %v, want %d..%d", offsets(got), from, to-1)
	}
	for i, r := range got {
		want := from + int64(i)
		if r.Offset != want || string(r.Value) != fmt.Sprintf("v%d", want) {
			t.Fatalf("record %d: offset %d value %q, want offset %d value v%d", i, r.Offset, r.Value, want, want)
		}
	}
}

func TestFetchSkipsBelowOffsetAndStopsAtMaxRecords(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	produceN(t, e, "t", 3, 10) // batches 0..9, 10..19, 20..29

	// Offset 4 is inside the first batch: records 0..3 are dropped.
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(4), MaxRecords: 3})
	checkOffsets(t, f.Records, 4, 7)
	if f.NextOffset != 7 {
		t.Errorf("next_offset %d, want 7", f.NextOffset)
	}
	// max_records across a batch boundary.
	f = e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(7), MaxRecords: 5})
	checkOffsets(t, f.Records, 7, 12)
	// No limit: everything from 12 to the end.
	f = e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(12)})
	checkOffsets(t, f.Records, 12, 30)
	if f.NextOffset != 30 {
		t.Errorf("next_offset %d, want 30", f.NextOffset)
	}
	// At the log end: no records, not an error.
	f = e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: &tierlogv1.FetchRequest_Latest{Latest: true}})
	if len(f.Records) != 0 || f.NextOffset != 30 || f.LogEndOffset != 30 {
		t.Errorf("fetch at latest: %d records, next %d, end %d; want 0, 30, 30", len(f.Records), f.NextOffset, f.LogEndOffset)
	}

	// Raw mode returns whole batches; the first starts before the offset.
	raw := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(4), MaxRecords: 3, Raw: true})
	if len(raw.Batches) != 1 || raw.NextOffset != 10 {
		t.Fatalf("raw fetch: %d batches next %d, want 1 batch and next 10", len(raw.Batches), raw.NextOffset)
	}
	if h, _ := batch.Peek(raw.Batches[0]); h.BaseOffset != 0 || h.NumRecords != 10 {
		t.Errorf("raw batch base %d records %d, want 0 and 10", h.BaseOffset, h.NumRecords)
	}
	raw = e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(4), Raw: true})
	if len(raw.Batches) != 3 || raw.NextOffset != 30 {
		t.Errorf("raw fetch without limit: %d batches next %d, want 3 and 30", len(raw.Batches), raw.NextOffset)
	}
}

func TestFetchMaxBytesStillReturnsOneBatch(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	produceN(t, e, "t", 3, 10)
	// A limit smaller than any batch still makes progress.
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", MaxBytes: 1})
	if len(f.Records) == 0 || f.NextOffset <= 0 || f.Records[0].Offset != 0 {
		t.Fatalf("fetch with max_bytes 1: %d records next %d, want progress from offset 0", len(f.Records), f.NextOffset)
	}
	checkOffsets(t, f.Records, 0, f.NextOffset)
}

func TestFetchByTimestamp(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	produceN(t, e, "t", 3, 2) // ts 1000: 0,1; 2000: 2,3; 3000: 4,5
	for _, c := range []struct {
		ts        int64
		wantFirst int64
	}{{0, 0}, {1000, 0}, {1001, 2}, {2000, 2}, {2500, 4}, {3000, 4}} {
		f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: &tierlogv1.FetchRequest_TimestampMs{TimestampMs: c.ts}})
		if len(f.Records) == 0 || f.Records[0].Offset != c.wantFirst {
			t.Errorf("fetch at timestamp %d: offsets %v, want first %d", c.ts, offsets(f.Records), c.wantFirst)
		}
	}
	// After every timestamp: the log end, no records.
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Start: &tierlogv1.FetchRequest_TimestampMs{TimestampMs: 9999}})
	if len(f.Records) != 0 || f.NextOffset != 6 {
		t.Errorf("fetch after the last timestamp: %d records next %d, want 0 and 6", len(f.Records), f.NextOffset)
	}
}

// recvAll reads a stream to its end and returns the records and the error
// that ended it (nil for a clean end).
func recvAll(s interface {
	Recv() (*tierlogv1.FetchResponse, error)
}) ([]*tierlogv1.Record, int, error) {
	var recs []*tierlogv1.Record
	msgs := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return recs, msgs, nil
		}
		if err != nil {
			return recs, msgs, err
		}
		msgs++
		recs = append(recs, m.Records...)
	}
}

func TestFetchStreamEndsAtLogEnd(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	produceN(t, e, "t", 5, 5)
	s, err := e.c.FetchStream(context.Background(), &tierlogv1.FetchStreamRequest{
		Fetch: &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(3), MaxRecords: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, msgs, err := recvAll(s)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	checkOffsets(t, recs, 3, 25)
	if msgs != 6 { // 22 records, 4 per message
		t.Errorf("%d messages, want 6 of at most 4 records", msgs)
	}

	// With a limit the stream ends early.
	s, err = e.c.FetchStream(context.Background(), &tierlogv1.FetchStreamRequest{
		Fetch: &tierlogv1.FetchRequest{Topic: "t"}, Limit: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err = recvAll(s)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	checkOffsets(t, recs, 0, 7)

	// An empty partition ends at once.
	e.createTopic(t, "empty", 1, nil)
	s, err = e.c.FetchStream(context.Background(), &tierlogv1.FetchStreamRequest{Fetch: &tierlogv1.FetchRequest{Topic: "empty"}})
	if err != nil {
		t.Fatal(err)
	}
	if recs, msgs, err = recvAll(s); err != nil || len(recs) != 0 || msgs != 0 {
		t.Errorf("stream of an empty partition: %d records, %d messages, err %v; want none", len(recs), msgs, err)
	}
}

func TestFetchStreamFollow(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	produceN(t, e, "t", 1, 3)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Start at an explicit offset (the current end), so records produced
	// after the call are the ones expected however the server and this
	// goroutine interleave.
	s, err := e.c.FetchStream(ctx, &tierlogv1.FetchStreamRequest{
		Fetch:  &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(3)},
		Follow: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []*tierlogv1.Record
	for round := range 3 {
		e.produce(t, &tierlogv1.ProduceRequest{Topic: "t", Records: []*tierlogv1.Record{
			{Value: fmt.Appendf(nil, "v%d", 3+2*round)}, {Value: fmt.Appendf(nil, "v%d", 4+2*round)},
		}})
		for len(got) < 2*(round+1) {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("recv after produce %d: %v", round, err)
			}
			got = append(got, m.Records...)
		}
	}
	checkOffsets(t, got, 3, 9)

	cancel()
	_, err = s.Recv()
	if status.Code(err) != codes.Canceled {
		t.Errorf("after cancel: %v, want Canceled", err)
	}
}

func TestFetchStreamFollowWithLimitEnds(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	s, err := e.c.FetchStream(context.Background(), &tierlogv1.FetchStreamRequest{
		Fetch:  &tierlogv1.FetchRequest{Topic: "t", Start: offsetStart(0)},
		Follow: true,
		Limit:  4,
	})
	if err != nil {
		t.Fatal(err)
	}
	produceN(t, e, "t", 3, 3) // 9 records; the stream wants 4
	recs, _, err := recvAll(s)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	checkOffsets(t, recs, 0, 4)
}

// followAt opens a follow stream at offset and waits until the server is
// waiting in it: a produced record arrives, so the stream is past setup.
func followAt(t *testing.T, e *testEnv, topic string, offset int64) tierlogv1.TierLog_FetchStreamClient {
	t.Helper()
	s, err := e.c.FetchStream(context.Background(), &tierlogv1.FetchStreamRequest{
		Fetch:  &tierlogv1.FetchRequest{Topic: topic, Start: offsetStart(offset)},
		Follow: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.produce(t, &tierlogv1.ProduceRequest{Topic: topic, Records: []*tierlogv1.Record{{Value: fmt.Appendf(nil, "v%d", offset)}}})
	m, err := s.Recv()
	if err != nil || len(m.Records) != 1 || m.Records[0].Offset != offset {
		t.Fatalf("follow stream first message: %v, %v; want offset %d", m, err, offset)
	}
	return s
}

func TestFollowStreamEndsOnServerClose(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	s := followAt(t, e, "t", 0)
	// Close ends the waiting stream, so GracefulStop (in cleanup) can finish.
	e.srv.Close()
	_, err := s.Recv()
	wantStatus(t, err, codes.Unavailable, "shutting down", "resume from offset 1")
}

func TestFollowStreamEndsWhenTopicDeleted(t *testing.T) {
	e := newEnv(t)
	e.createTopic(t, "t", 1, nil)
	s := followAt(t, e, "t", 0)
	if _, err := e.c.DeleteTopic(context.Background(), &tierlogv1.DeleteTopicRequest{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Recv()
	wantStatus(t, err, codes.NotFound, "t")
}
