package kafka

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
)

// minioBucket opens a bucket on a fresh MinIO, through a fault proxy.
func minioBucket(t *testing.T) (cold.Bucket, *faultproxy.Proxy) {
	t.Helper()
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	bk, err := bucketurl.Open(context.Background(), "minio://"+proxy.Addr+"/"+m.NewBucket(t)+"/node?secure=false", cold.Options{
		Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	return bk, proxy
}

// readAll fetches topic/part from offset 0 to end with hand-written fetches
// and returns the batches as they came.
func readAll(t *testing.T, c *kgo.Client, topic string, part int32, end int64) []byte {
	t.Helper()
	var out []byte
	for off := int64(0); off < end; {
		resp := request[*kmsg.FetchResponse](t, c, fetchReq(topic, 1<<20, 64<<10, map[int32]int64{part: off}, part))
		rp := resp.Topics[0].Partitions[0]
		if rp.ErrorCode != 0 {
			t.Fatalf("fetch %s/%d at %d: error %d", topic, part, off, rp.ErrorCode)
		}
		_, bases := batchSizes(t, rp.RecordBatches)
		if len(bases) == 0 || bases[0] != off {
			t.Fatalf("fetch %s/%d at %d: batches at %v", topic, part, off, bases)
		}
		out = append(out, rp.RecordBatches...)
		h, _ := kmsgLastOffset(rp.RecordBatches)
		off = h + 1
	}
	return out
}

// kmsgLastOffset is the last offset of the last batch in b.
func kmsgLastOffset(b []byte) (int64, error) {
	var last int64 = -1
	for len(b) > 0 {
		var rb kmsg.RecordBatch
		if err := rb.ReadFrom(b); err != nil {
			return 0, err
		}
		last = rb.FirstOffset + int64(rb.LastOffsetDelta)
		b = b[12+int(rb.Length):]
	}
	return last, nil
}

// Offsets that live only in the bucket (local copies deleted) are consumed
// as they were produced: hand-written fetches get the very batches the
// hot tier served before, byte for byte, and a franz-go consumer reading
// from the start gets every record (bucket, then hot) with its key, value
// and timestamp. Both a file bucket and MinIO.
func TestConsumeFromBucket(t *testing.T) {
	for _, kind := range []string{"file", "minio"} {
		t.Run(kind, func(t *testing.T) {
			var bk cold.Bucket
			if kind == "file" {
				fb, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
				if err != nil {
					t.Fatal(err)
				}
				bk = fb
			} else {
				bk, _ = minioBucket(t)
			}
			e := startFetchEnv(t, bk, nil)
			const topic, parts, size = "replay", 2, 300
			if _, err := e.b.CreateTopic(topic, parts, map[string]string{"segment.bytes": "16384", "local.retention.bytes": "0"}); err != nil {
				t.Fatal(err)
			}
			c := e.client(t)
			hot := map[int32][]byte{}
			ends := map[int32]int64{}
			for p := range int32(parts) {
				ends[p] = e.appendBatches(t, topic, p, 40, 4, size, 1_000_000)
				hot[p] = readAll(t, c, topic, p, ends[p])
				if start := e.tier(t, topic, p); start != ends[p] {
					t.Fatalf("partition %d: local start %d after tiering, want %d", p, start, ends[p])
				}
			}
			for p := range int32(parts) {
				if cold := readAll(t, c, topic, p, ends[p]); !bytes.Equal(cold, hot[p]) {
					t.Fatalf("partition %d: the bucket served %d bytes that differ from the %d the hot tier served", p, len(cold), len(hot[p]))
				}
				ends[p] = e.appendBatches(t, topic, p, 5, 4, size, 1_000_000) // and some hot after them
			}

			consumer := e.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			next := map[int32]int64{}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for next[0] < ends[0] || next[1] < ends[1] {
				fs := consumer.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("consumer stopped at %v of %v", next, ends)
				}
				fs.EachError(func(_ string, p int32, err error) { t.Fatalf("partition %d: %v", p, err) })
				fs.EachRecord(func(r *kgo.Record) {
					o := r.Offset
					if o != next[r.Partition] {
						t.Fatalf("partition %d: offset %d, want %d", r.Partition, o, next[r.Partition])
					}
					if !bytes.Equal(r.Value, testutil.Value(o, size)) || string(r.Key) != fmt.Sprintf("k%d", o) || r.Timestamp.UnixMilli() != 1_000_000+o {
						t.Fatalf("partition %d offset %d: key %q, %d-byte value, timestamp %d differ from what was produced", r.Partition, o, r.Key, len(r.Value), r.Timestamp.UnixMilli())
					}
					next[r.Partition]++
				})
			}
		})
	}
}

// The partitions of one fetch that need the bucket are read in parallel:
// with every segment GET held at a fault proxy in front of MinIO, both
// partitions' GETs are held at once - which they can only be if the
// second partition's read started before the first one's ended.
func TestFetchReadsBucketPartitionsInParallel(t *testing.T) {
	bk, proxy := minioBucket(t)
	e := startFetchEnv(t, bk, nil)
	if _, err := e.b.CreateTopic("par", 2, map[string]string{"local.retention.bytes": "0"}); err != nil {
		t.Fatal(err)
	}
	ends := map[int32]int64{}
	for p := range int32(2) {
		ends[p] = e.appendBatches(t, "par", p, 10, 2, 100, 1000)
		e.tier(t, "par", p)
	}
	hold := proxy.Add(faultproxy.Rule{Method: "GET", PathContains: ".seg", Fault: faultproxy.Hold})
	defer hold.Release()
	c := e.client(t)
	type result struct {
		resp *kmsg.FetchResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp, err := c.Request(ctx, fetchReq("par", 1<<20, 1<<20, nil, 0, 1))
		r, _ := resp.(*kmsg.FetchResponse)
		done <- result{r, err}
	}()
	testutil.Eventually(t, 20*time.Second, func() bool { return hold.Held() >= 2 },
		"the bucket reads of the fetch's two partitions are not in flight together (held GETs: %d): read one after another", hold.Held())
	hold.Release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	for i, rp := range r.resp.Topics[0].Partitions {
		if sizes, _ := batchSizes(t, rp.RecordBatches); rp.ErrorCode != 0 || len(sizes) != 10 {
			t.Fatalf("partition %d: error %d, %d batches; want 10", i, rp.ErrorCode, len(sizes))
		}
	}
}

// A panic (a bug) in a bucket read started ahead, on its own goroutine,
// does not end the server: that partition is answered KAFKA_STORAGE_ERROR
// (clients retry) and the others of the fetch as usual.
func TestFetchReadAheadPanicIsStorageError(t *testing.T) {
	bk, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	e := startFetchEnv(t, bk, nil, func(s *Server) {
		s.testHookRead = func(topic string, part int32) {
			if part == 1 {
				panic("test: read panics")
			}
		}
	})
	if _, err := e.b.CreateTopic("ra", 2, map[string]string{"local.retention.bytes": "0"}); err != nil {
		t.Fatal(err)
	}
	e.appendBatches(t, "ra", 0, 2, 2, 10, 1000)
	e.appendBatches(t, "ra", 1, 2, 2, 10, 1000)
	e.tier(t, "ra", 1)
	resp := request[*kmsg.FetchResponse](t, e.client(t), fetchReq("ra", 1<<20, 64<<10, nil, 0, 1))
	got := resp.Topics[0].Partitions
	if got[0].ErrorCode != 0 || len(got[0].RecordBatches) == 0 {
		t.Fatalf("hot partition 0: error %d, %d bytes; want its records", got[0].ErrorCode, len(got[0].RecordBatches))
	}
	if got[1].ErrorCode != kerr.KafkaStorageError.Code {
		t.Fatalf("partition 1, whose read ahead panicked: error %d; want KAFKA_STORAGE_ERROR", got[1].ErrorCode)
	}
	if n := promtest.ToFloat64(e.srv.m.coldReads); n != 0 {
		t.Fatalf("%v cold reads still counted in flight", n)
	}
}
