package grpcapi

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/tiering"
)

// TestFollowStreamsSurviveRetention runs follow streams that start at the
// oldest local offset - the segment local retention deletes next - while a
// producer appends, the daemon tiers and local retention runs. A stream
// whose segment goes under it must carry on from the bucket: every stream
// delivers its records in order with the values produced, and none ends in
// an error.
func TestFollowStreamsSurviveRetention(t *testing.T) {
	bucket, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig(), Bucket: bucket,
		Tiering: tiering.DaemonOptions{Interval: 5 * time.Millisecond}})
	e.createTopic(t, "t", 1, map[string]string{"segment.bytes": "16384", "local.retention.bytes": "0"})
	p, err := e.b.Partition("t", 0)
	if err != nil {
		t.Fatal(err)
	}
	value := func(off int64) string { return fmt.Sprintf("%08d-%0150d", off, 0) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // local retention, as often as it can run
		defer wg.Done()
		for ctx.Err() == nil {
			e.b.Tiering().Wake()
			p.Log().ApplyRetention(time.Now())
		}
	}()
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				from := p.Log().StartOffset()
				if err := followFrom(ctx, e, from, 100, value); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 1500 && len(errs) == 0; i++ {
		off := p.EndOffset()
		var recs []*tierlogv1.Record
		for j := range 5 {
			recs = append(recs, &tierlogv1.Record{Value: []byte(value(off + int64(j)))})
		}
		e.produce(t, &tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: recs})
	}
	if p.StartOffset() == p.Log().StartOffset() {
		t.Errorf("nothing was served remotely: local start %d", p.Log().StartOffset())
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// followFrom follows the partition from offset from for n records and
// checks each one.
func followFrom(ctx context.Context, e *testEnv, from int64, n int64, value func(int64) string) error {
	s, err := e.c.FetchStream(ctx, &tierlogv1.FetchStreamRequest{Follow: true, Limit: n,
		Fetch: &tierlogv1.FetchRequest{Topic: "t", Partition: 0, MaxBytes: 2048, Start: &tierlogv1.FetchRequest_Offset{Offset: from}}})
	if err != nil {
		return err
	}
	next := from
	for {
		resp, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("follow stream from %d, at %d: %w", from, next, err)
		}
		for _, r := range resp.GetRecords() {
			if r.GetOffset() != next || string(r.GetValue()) != value(next) {
				return fmt.Errorf("follow stream from %d: got offset %d value %.12q, want offset %d", from, r.GetOffset(), r.GetValue(), next)
			}
			next++
		}
	}
}
