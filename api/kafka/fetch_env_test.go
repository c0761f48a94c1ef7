package kafka

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/fetchbudget"
	"github.com/tierlog/tierlog/internal/testutil"
)

// fetchEnv is a broker (tiered when given a bucket) behind a real Kafka
// listener on a free loopback port.
type fetchEnv struct {
	b      *broker.Broker
	srv    *Server
	addr   string
	budget *fetchbudget.Budget
}

// setup runs on the server before it serves (to set test hooks).
func startFetchEnv(t *testing.T, bk cold.Bucket, budget *fetchbudget.Budget, setup ...func(*Server)) *fetchEnv {
	t.Helper()
	b, err := broker.Open(context.Background(), broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig(), Bucket: bk})
	if err != nil {
		t.Fatal(err)
	}
	if budget == nil {
		budget = fetchbudget.New(0, 0, nil)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port := AdvertisedFor(ln.Addr().String(), ln.Addr())
	srv := New(b, Options{AdvertisedHost: host, AdvertisedPort: port, FetchBudget: budget})
	for _, f := range setup {
		f(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		b.Close()
	})
	return &fetchEnv{b: b, srv: srv, addr: ln.Addr().String(), budget: budget}
}

// client is a franz-go client of the env, closed with the test.
func (e *fetchEnv) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// appendBatches appends n batches of per records of size bytes to
// topic/part (record values testutil.Value(offset, size), timestamps
// ts0+offset) and returns the offset after them.
func (e *fetchEnv) appendBatches(t *testing.T, topic string, part int32, n, per, size int, ts0 int64) int64 {
	t.Helper()
	_, end, err := e.b.Offsets(topic, part)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		res, err := e.b.Append(topic, part, testutil.Batch(t, end, per, size, ts0+end))
		if err != nil {
			t.Fatal(err)
		}
		end = res.LastOffset + 1
	}
	return end
}

// tier uploads everything of topic/part to the bucket; the topic's
// local.retention.bytes=0 then deletes the local copies. It returns the
// local log start afterwards.
func (e *fetchEnv) tier(t *testing.T, topic string, part int32) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ups, err := e.b.UploadNow(ctx, topic, part)
	if err != nil || ups[0].Err != nil {
		t.Fatalf("upload %s/%d: %v %+v", topic, part, err, ups)
	}
	p, err := e.b.Partition(topic, part)
	if err != nil {
		t.Fatal(err)
	}
	_, end, _ := e.b.Offsets(topic, part)
	testutil.Eventually(t, 30*time.Second, func() bool { return p.Log().StartOffset() == end },
		"local copies of %s/%d not deleted: local start %d, end %d", topic, part, p.Log().StartOffset(), end)
	return p.Log().StartOffset()
}

// request sends req over c and returns its response.
func request[R kmsg.Response](t *testing.T, c *kgo.Client, req kmsg.Request) R {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := c.Request(ctx, req)
	if err != nil {
		t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
	}
	return resp.(R)
}

// fetchReq is a fetch of the given partitions of topic at the offsets.
func fetchReq(topic string, maxBytes, partMax int32, offsets map[int32]int64, order ...int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.MaxBytes = maxBytes
	req.MinBytes = 1
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	for _, p := range order {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = p
		rp.FetchOffset = offsets[p]
		rp.PartitionMaxBytes = partMax
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// batchSizes splits whole batches and returns their sizes and base offsets.
func batchSizes(t *testing.T, b []byte) (sizes []int, bases []int64) {
	t.Helper()
	for len(b) > 0 {
		h, err := batch.Peek(b)
		if err != nil {
			t.Fatalf("response holds a partial or bad batch: %v", err)
		}
		if _, err := batch.Validate(b[:h.Size()]); err != nil {
			t.Fatalf("batch at %d: %v", h.BaseOffset, err)
		}
		sizes = append(sizes, h.Size())
		bases = append(bases, h.BaseOffset)
		b = b[h.Size():]
	}
	return sizes, bases
}
