package grpcapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tierlog/tierlog/api/tierlogv1"
)

func TestTopicAdmin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	created, err := e.c.CreateTopic(ctx, &tierlogv1.CreateTopicRequest{Name: "orders", Partitions: 3, Config: map[string]string{"retention.ms": "86400000"}})
	if err != nil {
		t.Fatal(err)
	}
	if created.Topic.Name != "orders" || len(created.Topic.Partitions) != 3 || created.Topic.Config["retention.ms"] != "86400000" {
		t.Errorf("created %v, want orders with 3 partitions and retention.ms 86400000", created.Topic)
	}
	e.createTopic(t, "audit", 1, nil)

	_, err = e.c.CreateTopic(ctx, &tierlogv1.CreateTopicRequest{Name: "orders", Partitions: 1})
	wantStatus(t, err, codes.AlreadyExists, "orders")

	list, err := e.c.ListTopics(ctx, &tierlogv1.ListTopicsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Topics) != 2 || list.Topics[0].Name != "audit" || list.Topics[1].Name != "orders" {
		t.Errorf("list %v, want audit and orders, sorted", list.Topics)
	}

	e.produce(t, &tierlogv1.ProduceRequest{Topic: "orders", Partition: ptr[int32](1), Records: sampleRecords()})
	d, err := e.c.DescribeTopic(ctx, &tierlogv1.DescribeTopicRequest{Name: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Topic.Partitions {
		wantEnd := int64(0)
		if p.Partition == 1 {
			wantEnd = int64(len(sampleRecords()))
		}
		if p.StartOffset != 0 || p.EndOffset != wantEnd {
			t.Errorf("partition %d offsets %d..%d, want 0..%d", p.Partition, p.StartOffset, p.EndOffset, wantEnd)
		}
		if p.Partition == 1 && (p.SizeBytes <= 0 || p.Segments < 1) {
			t.Errorf("partition 1: %d segments of %d bytes after a produce, want data", p.Segments, p.SizeBytes)
		}
	}
	for _, k := range []string{"segment.bytes", "retention.ms", "flush.policy", "max.message.bytes"} {
		if _, ok := d.Topic.Config[k]; !ok {
			t.Errorf("describe config lacks %s: %v", k, d.Topic.Config)
		}
	}

	if _, err := e.c.DeleteTopic(ctx, &tierlogv1.DeleteTopicRequest{Name: "orders"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.DescribeTopic(ctx, &tierlogv1.DescribeTopicRequest{Name: "orders"})
	wantStatus(t, err, codes.NotFound, "orders")
	_, err = e.c.DeleteTopic(ctx, &tierlogv1.DeleteTopicRequest{Name: "orders"})
	wantStatus(t, err, codes.NotFound, "orders")
	// The name can be used again, and starts empty.
	e.createTopic(t, "orders", 2, nil)
	f := e.fetch(t, &tierlogv1.FetchRequest{Topic: "orders", Partition: 1})
	if len(f.Records) != 0 || f.LogEndOffset != 0 {
		t.Errorf("recreated topic holds %d records, end %d; want empty", len(f.Records), f.LogEndOffset)
	}
}

func TestCreateTopicRejects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		req   *tierlogv1.CreateTopicRequest
		parts []string
	}{
		{"no name", &tierlogv1.CreateTopicRequest{Partitions: 1}, []string{"name"}},
		{"zero partitions", &tierlogv1.CreateTopicRequest{Name: "t", Partitions: 0}, []string{"at least 1"}},
		{"bad name", &tierlogv1.CreateTopicRequest{Name: "../escape", Partitions: 1}, []string{"../escape"}},
		{"unknown key", &tierlogv1.CreateTopicRequest{Name: "t", Partitions: 1, Config: map[string]string{"retention.forever": "1"}}, []string{"retention.forever"}},
		{"bad value", &tierlogv1.CreateTopicRequest{Name: "t", Partitions: 1, Config: map[string]string{"flush.policy": "sometimes"}}, []string{"flush.policy", "always"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.c.CreateTopic(ctx, c.req)
			wantStatus(t, err, codes.InvalidArgument, c.parts...)
		})
	}
	list, err := e.c.ListTopics(ctx, &tierlogv1.ListTopicsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Topics) != 0 {
		t.Errorf("rejected creates left topics %v", list.Topics)
	}
}

func TestListOffsets(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.createTopic(t, "t", 2, nil)
	produceN(t, e, "t", 3, 2) // partition 0: ts 1000: 0,1; 2000: 2,3; 3000: 4,5

	one := func(spec any) int64 {
		t.Helper()
		req := &tierlogv1.ListOffsetsRequest{Topic: "t", Partition: ptr[int32](0)}
		switch s := spec.(type) {
		case *tierlogv1.ListOffsetsRequest_Earliest:
			req.Spec = s
		case *tierlogv1.ListOffsetsRequest_Latest:
			req.Spec = s
		case *tierlogv1.ListOffsetsRequest_TimestampMs:
			req.Spec = s
		}
		resp, err := e.c.ListOffsets(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Partitions) != 1 || resp.Partitions[0].Partition != 0 || resp.Partitions[0].LogEndOffset != 6 {
			t.Fatalf("list offsets: %v, want partition 0 with end 6", resp.Partitions)
		}
		return resp.Partitions[0].Offset
	}
	if o := one(&tierlogv1.ListOffsetsRequest_Earliest{Earliest: true}); o != 0 {
		t.Errorf("earliest %d, want 0", o)
	}
	if o := one(&tierlogv1.ListOffsetsRequest_Latest{Latest: true}); o != 6 {
		t.Errorf("latest %d, want 6", o)
	}
	if o := one(nil); o != 6 {
		t.Errorf("no spec %d, want latest 6", o)
	}
	for ts, want := range map[int64]int64{0: 0, 1500: 2, 3000: 4, 3001: 6} {
		if o := one(&tierlogv1.ListOffsetsRequest_TimestampMs{TimestampMs: ts}); o != want {
			t.Errorf("timestamp %d: offset %d, want %d", ts, o, want)
		}
	}

	// Without a partition: every partition of the topic.
	all, err := e.c.ListOffsets(ctx, &tierlogv1.ListOffsetsRequest{Topic: "t", Spec: &tierlogv1.ListOffsetsRequest_Latest{Latest: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Partitions) != 2 || all.Partitions[0].Offset != 6 || all.Partitions[1].Partition != 1 || all.Partitions[1].Offset != 0 {
		t.Errorf("all partitions: %v, want p0 at 6 and p1 at 0", all.Partitions)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t)
	hc := healthpb.NewHealthClient(e.conn)
	for _, svc := range []string{"", "tierlog.v1.TierLog"} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health %q: %v", svc, err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v, want SERVING", svc, resp.Status)
		}
	}
}
