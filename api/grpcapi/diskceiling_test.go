package grpcapi

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/internal/testutil/faultproxy"
	"github.com/tierlog/tierlog/tiering"
)

// TestLocalDiskCeilingWhileTheBucketIsDown: with every PUT to a real MinIO
// failing, local segments cannot leave, so producing must stop at the
// local-disk ceiling with a retriable RESOURCE_EXHAUSTED that names it -
// while fetches go on and the log is never failed - and must resume by
// itself, without a restart, once the bucket is back, uploads catch up and
// local retention frees space. Every acknowledged record stays readable.
func TestLocalDiskCeilingWhileTheBucketIsDown(t *testing.T) {
	m := testutil.StartMinIO(t)
	proxy := faultproxy.Start(t, m.URL())
	bucket, err := bucketurl.Open(context.Background(), "minio://"+proxy.Addr+"/"+m.Bucket+"/node?secure=false", cold.Options{
		MaxAttempts: 1, Credentials: &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	const ceiling = 128 << 10
	reg := prometheus.NewRegistry()
	e := newEnvWith(t, broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig(), Bucket: bucket, Registerer: reg,
		Tiering: tiering.DaemonOptions{Interval: 20 * time.Millisecond, LocalDiskMaxBytes: ceiling,
			Backoff: tiering.Backoff{Attempts: 2, Base: 5 * time.Millisecond, Max: 20 * time.Millisecond}}})
	e.createTopic(t, "t", 1, map[string]string{"segment.bytes": "16384", "local.retention.bytes": "0"})

	acked := map[int64][]byte{}
	produce := func(n int) error {
		var recs []*tierlogv1.Record
		for i := range n {
			recs = append(recs, &tierlogv1.Record{Value: fmt.Appendf(nil, "%d-%d-%0180d", len(acked), i, 0)})
		}
		resp, err := e.c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "t", Partition: ptr[int32](0), Records: recs})
		if err != nil {
			return err
		}
		for i, r := range recs {
			acked[resp.GetBaseOffset()+int64(i)] = r.Value
		}
		return nil
	}
	for range 10 { // some history in the bucket before it goes down
		if err := produce(20); err != nil {
			t.Fatal(err)
		}
	}

	proxy.Add(faultproxy.Rule{Method: "PUT", Fault: faultproxy.Error, Status: 503})
	// Produce until refused. Between measurements the running count still
	// holds bytes that local retention freed before the bucket went down,
	// so a first refusal can come a little early and be lifted by the next
	// measurement; keep producing (as a client retries) until the
	// measured bytes have reached the ceiling too.
	var refused error
	var st *tierlogv1.TierStatusResponse
	for i := 0; ; i++ {
		if i > 2000 {
			t.Fatalf("%d produces accepted with the bucket down and a %d-byte ceiling", i, ceiling)
		}
		if refused = produce(20); refused == nil {
			continue
		}
		wantStatus(t, refused, codes.ResourceExhausted, "local_disk_max_bytes", "retry", "not yet uploaded")
		var err error
		if st, err = e.c.TierStatus(context.Background(), &tierlogv1.TierStatusRequest{Topic: "t"}); err != nil {
			t.Fatal(err)
		}
		if st.GetLocalBytes() >= ceiling {
			break
		}
		time.Sleep(10 * time.Millisecond) // a client's retry pause, not a wait for an outcome
	}

	// Reads go on; the log is refused produce, not failed.
	checkAll(t, e, acked)
	if st.GetLocalMaxBytes() != ceiling || st.GetLocalPendingUploadBytes() == 0 || st.GetPartitions()[0].GetProduceRefused() == "" {
		t.Fatalf("tier status does not show the ceiling reached: %+v", st)
	}
	// Appends count against the ceiling as they land: it holds to within
	// one batch, not one check interval of producing.
	if over := st.GetLocalBytes() - ceiling; over > 8<<10 {
		t.Errorf("local segments went %d bytes past the ceiling", over)
	}

	proxy.Clear() // the bucket is back
	// Produce resumes by itself. Uploads may still be catching up, so the
	// ceiling can be reached again for a moment: a producer retries what is
	// retriable, as clients do; any other error fails the test.
	produceRetrying := func(n int) {
		testutil.Eventually(t, 60*time.Second, func() bool {
			err := produce(n)
			if err != nil && status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("produce after the bucket came back: %v", err)
			}
			return err == nil
		}, "produce accepted again after the bucket came back")
	}
	produceRetrying(1)
	for range 5 {
		produceRetrying(20)
	}
	checkAll(t, e, acked)
	if n := counterValue(t, reg, "tierlog_tiering_produce_refused_total"); n < 1 {
		t.Errorf("tierlog_tiering_produce_refused_total = %v after refusals", n)
	}
}

// checkAll fetches the partition from its start and checks every
// acknowledged record is there with its value.
func checkAll(t *testing.T, e *testEnv, acked map[int64][]byte) {
	t.Helper()
	seen := 0
	for off := int64(0); ; {
		resp := e.fetch(t, &tierlogv1.FetchRequest{Topic: "t", Partition: 0, Start: &tierlogv1.FetchRequest_Offset{Offset: off}})
		for _, r := range resp.GetRecords() {
			if want, ok := acked[r.GetOffset()]; ok {
				if !bytes.Equal(r.GetValue(), want) {
					t.Fatalf("offset %d: value %.20q, acknowledged %.20q", r.GetOffset(), r.GetValue(), want)
				}
				seen++
			}
		}
		if resp.GetNextOffset() >= resp.GetLogEndOffset() {
			break
		}
		off = resp.GetNextOffset()
	}
	if seen != len(acked) {
		t.Fatalf("read back %d of %d acknowledged records", seen, len(acked))
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
