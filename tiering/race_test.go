package tiering

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// minioBucket opens a bucket on a real MinIO server.
func minioBucket(t *testing.T) cold.Bucket {
	b, _ := proxiedBucket(t, "minio")
	return b
}

// TestReadsRacingRetention reads at the edges retention moves - the hot
// log's start (local retention deletes that segment next) and the
// partition's start (remote retention deletes that object next) - while a
// producer appends and both retentions run. Every read must answer as a
// read issued after the retention that raced it: the right records (from
// the bucket if the local copy went), or out of range naming a start past
// the offset. Nothing else: no "short batch", no failed remote read.
func TestReadsRacingRetention(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bucket  func(*testing.T) cold.Bucket
		batches int
	}{
		{"file", newFileBucket, 600},
		{"minio", minioBucket, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.bucket(t), t.TempDir())
			cfg := hotConfig()
			cfg.SegmentBytes = 16 << 10
			p, err := OpenPartition(context.Background(), PartitionOptions{
				Dir: filepath.Join(e.dataDir, "race", "0"), Topic: "race", Hot: cfg,
				Store: e.store, Reader: e.reader, Remote: true, Retention: Retention{Bytes: 96 << 10},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			e.daemon.Add(p)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			// Both retentions, as often as they can run.
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					e.daemon.pass(ctx) // uploads, then remote retention
					p.Log().ApplyRetention(time.Now())
				}
			}()
			var reads atomic.Int64
			var answers [3]atomic.Int64 // hot, remote, out of range
			errs := make(chan error, 8)
			for r := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ctx.Err() == nil; i++ {
						off := p.Log().StartOffset()
						if (i+r)%2 == 1 {
							off = p.StartOffset()
						}
						if off >= p.EndOffset() {
							continue
						}
						reads.Add(1)
						if err := checkRead(p, off, &answers); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			for i := range tc.batches {
				if i%20 == 0 {
					// Keep the uploads (and so both retentions) close
					// behind the producer.
					testutil.Eventually(t, 30*time.Second, func() bool { return p.Status(time.Now()).LocalSegments <= 3 }, "uploads keep up")
				}
				first := p.EndOffset()
				if _, err := p.Append(testutil.Batch(t, first, 5, valueSize, 1_000_000+first)); err != nil {
					t.Fatal(err)
				}
				if len(errs) > 0 {
					break
				}
			}
			cancel()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			st := p.Status(time.Now())
			t.Logf("%d reads: %d served locally, %d remotely, %d out of range; remote log start %d, local start %d, end %d; %d remote segments", reads.Load(), answers[0].Load(), answers[1].Load(), answers[2].Load(), p.StartOffset(), st.LocalStart, st.EndOffset, st.RemoteSegments)
			if p.StartOffset() == 0 {
				t.Fatal("remote retention never ran: the test raced nothing")
			}
		})
	}
}

// checkRead reads at off and checks the answer: the records from off on,
// each the one produced at its offset, or out of range with a start past
// off.
func checkRead(p *Partition, off int64, answers *[3]atomic.Int64) error {
	local := p.Log().StartOffset()
	res, err := p.Read(context.Background(), off, 4<<10)
	var oor *hot.OffsetOutOfRangeError
	if errors.As(err, &oor) {
		if oor.Start <= off || res.StartOffset != oor.Start {
			return fmt.Errorf("read at %d: out of range, but the valid range includes it: %w", off, err)
		}
		answers[2].Add(1)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read at %d: %w", off, err)
	}
	recs, err := batch.DecodeAll(res.Records)
	if err != nil || len(recs) == 0 {
		return fmt.Errorf("read at %d: %d records, %v", off, len(recs), err)
	}
	if recs[0].Offset > off {
		return fmt.Errorf("read at %d: first record is %d", off, recs[0].Offset)
	}
	for _, r := range recs {
		if string(r.Value) != string(testutil.Value(r.Offset, valueSize)) {
			return fmt.Errorf("read at %d: wrong record at offset %d", off, r.Offset)
		}
	}
	if off < local {
		answers[1].Add(1) // below the hot log's start before the read began
	} else {
		answers[0].Add(1)
	}
	return nil
}

// TestReadRacingRemoteRetention stops a remote read at the exact point
// between finding its segment and reading the object, lets remote retention
// delete that segment there, and checks the read answers out of range with
// the new start, as a read issued after the retention would.
func TestReadRacingRemoteRetention(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bucket func(*testing.T) cold.Bucket
	}{
		{"file", newFileBucket},
		{"minio", minioBucket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.bucket(t), t.TempDir())
			p := e.open("race", 0, true)
			defer p.Close()
			produce(t, p, 200)
			e.settle(p)
			first := p.Manifest().Segments[0]
			p.testHookRemoteRead = func() {
				p.testHookRemoteRead = nil
				p.SetConfig(hotConfig(), true, Retention{Bytes: 1})
				e.daemon.tier(context.Background(), p)
				if _, err := e.bucket.Attributes(context.Background(), first.Key); !errors.Is(err, cold.ErrNotFound) {
					t.Errorf("retention left %s: %v", first.Key, err)
				}
			}
			res, err := p.Read(context.Background(), first.BaseOffset+3, 1<<20)
			var oor *hot.OffsetOutOfRangeError
			if !errors.As(err, &oor) || oor.Start <= first.BaseOffset+3 || oor.Start != p.StartOffset() || res.StartOffset != oor.Start {
				t.Fatalf("read of a segment remote retention deleted under it: start %d, err %v; want out of range from %d", res.StartOffset, err, p.StartOffset())
			}
			t.Log(err)
		})
	}
}

// TestOffsetForTimeRacingLocalRetention moves the hot log's start past the
// answer between OffsetForTime's remote lookup (which searches only below
// the local start it read) and its local lookup. The answer must still be
// the first batch at or after the time, now served remotely.
func TestOffsetForTimeRacingLocalRetention(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	p := e.open("race", 0, true)
	defer p.Close()
	keep := hotConfig()
	keep.RetentionBytes = -1
	p.SetConfig(keep, true, Retention{Bytes: -1})
	produce(t, p, 300)
	p.Log().Roll()
	testutil.Eventually(t, 10*time.Second, func() bool {
		e.daemon.pass(context.Background())
		st := p.Status(time.Now())
		return len(p.Log().SealedSegments()) == st.LocalSegments-1 && st.LagSegments == 0
	}, "segments sealed and uploaded")
	if p.Log().StartOffset() != 0 {
		t.Fatalf("local start %d: local retention ran early", p.Log().StartOffset())
	}
	p.testHookOffsetForTime = func() {
		p.testHookOffsetForTime = nil
		p.SetConfig(hotConfig(), true, Retention{Bytes: -1}) // keep nothing locally that is remote
		if p.Log().ApplyRetention(time.Now()) == 0 || p.Log().StartOffset() <= 500 {
			t.Errorf("local retention did not move the start past 500: %d", p.Log().StartOffset())
		}
	}
	off, err := p.OffsetForTime(context.Background(), 1_000_503)
	if err != nil || off != 500 {
		t.Fatalf("offset for time with the local start moving: %d, %v; want 500", off, err)
	}
}
