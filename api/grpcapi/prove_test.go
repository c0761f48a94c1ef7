package grpcapi

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

// proveRecord is the i-th record the prove tests produce: null and empty
// keys, headers with null and set values, now and then.
func proveRecord(i int) *tierlogv1.Record {
	r := &tierlogv1.Record{Value: []byte(fmt.Sprintf("event-%05d-%0100d", i, i))}
	switch i % 4 {
	case 1:
		r.Key = []byte(fmt.Sprintf("user-%d", i%7))
	case 2:
		r.Key = []byte{}
		r.Headers = []*tierlogv1.Header{{Key: "trace", Value: []byte("t-1")}, {Key: "null"}}
	case 3:
		r.Value = nil // a tombstone
	}
	return r
}

// TestProveRPCs proves records of a tiered partition over gRPC against a
// node with a file bucket: the proof of the first, a middle and the last
// tiered offset verifies with the node's public key and carries the record
// as produced; consistency between two checkpoints; the errors a client
// acts on (not tiered yet, outside the log, no such checkpoint, a topic
// that does not tier, a node without a bucket).
func TestProveRPCs(t *testing.T) {
	bucket, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig(), Bucket: bucket,
		Tiering: tiering.DaemonOptions{Interval: 10 * time.Millisecond}})
	e.createTopic(t, "a", 1, map[string]string{"segment.bytes": "8192", "local.retention.bytes": "0"})
	ctx := context.Background()
	const n = 600
	for i := 0; i < n; i += 20 {
		var recs []*tierlogv1.Record
		for j := i; j < i+20; j++ {
			recs = append(recs, proveRecord(j))
		}
		e.produce(t, &tierlogv1.ProduceRequest{Topic: "a", Partition: ptr[int32](0), Records: recs})
	}
	up, err := e.c.TierUpload(ctx, &tierlogv1.TierUploadRequest{Topic: "a"})
	if err != nil || !up.GetPartitions()[0].GetDone() {
		t.Fatalf("tier upload: %v %v", up, err)
	}
	// Records produced after the upload are in the log, not in the tree.
	e.produce(t, &tierlogv1.ProduceRequest{Topic: "a", Partition: ptr[int32](0), Records: []*tierlogv1.Record{proveRecord(n)}})

	pk, err := e.c.PublicKey(ctx, &tierlogv1.PublicKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := audit.LoadPublicKeys(pk.GetPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := e.c.Checkpoint(ctx, &tierlogv1.CheckpointRequest{Topic: "a"})
	if err != nil {
		t.Fatal(err)
	}
	latest, err := audit.OpenWith([]byte(cp.GetCheckpoint()), "", vs)
	if err != nil {
		t.Fatal(err)
	}
	if latest.Size != n {
		t.Fatalf("latest checkpoint of size %d, want %d (every produced record before the upload)", latest.Size, n)
	}
	p, _ := e.b.Partition("a", 0)
	if p.Log().StartOffset() == 0 {
		t.Fatal("every segment is still local: the proofs would not read the bucket")
	}
	for _, off := range []int64{0, n / 2, n - 1} {
		resp, err := e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "a", Offset: off})
		if err != nil {
			t.Fatalf("prove %d: %v", off, err)
		}
		f := InclusionFileFromProto("a", 0, resp)
		if err := f.Verify(vs); err != nil {
			t.Fatalf("proof of offset %d: %v", off, err)
		}
		want := proveRecord(int(off))
		got := resp.GetRecord()
		if got.GetOffset() != off || !bytes.Equal(got.Value, want.Value) || (got.Value == nil) != (want.Value == nil) ||
			!bytes.Equal(got.Key, want.Key) || (got.Key == nil) != (want.Key == nil) || len(got.Headers) != len(want.Headers) {
			t.Fatalf("offset %d: record %v, want %v", off, got, want)
		}
		if resp.GetCheckpoint() != cp.GetCheckpoint() || resp.GetTreeSize() != n {
			t.Fatalf("offset %d: proved against size %d, want the latest checkpoint (%d)", off, resp.GetTreeSize(), n)
		}
	}

	// Consistency from the first checkpoint to the latest, and to itself.
	sizes, err := audit.ListCheckpoints(ctx, bucket, tiering.PartitionPrefix("a", 0))
	if err != nil || len(sizes) < 3 {
		t.Fatalf("checkpoints %v (%v): want several segments' worth", sizes, err)
	}
	for _, c := range [][2]uint64{{sizes[0], 0}, {sizes[1], sizes[len(sizes)-2]}, {sizes[1], sizes[1]}} {
		resp, err := e.c.ProveConsistency(ctx, &tierlogv1.ProveConsistencyRequest{Topic: "a", OldSize: c[0], NewSize: c[1]})
		if err != nil {
			t.Fatalf("consistency %v: %v", c, err)
		}
		f := audit.NewConsistencyFile("a", 0, []byte(resp.GetOldCheckpoint()), []byte(resp.GetNewCheckpoint()), resp.GetConsistencyProof())
		if err := f.Verify(vs); err != nil {
			t.Fatalf("consistency %v: %v", c, err)
		}
	}

	// The errors.
	_, err = e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "a", Offset: n})
	wantStatus(t, err, codes.FailedPrecondition, fmt.Sprintf("offset %d", n), fmt.Sprintf("is not in the tree yet: the tree ends at %d", n))
	_, err = e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "a", Offset: n + 1})
	wantStatus(t, err, codes.OutOfRange, fmt.Sprintf("offset %d", n+1), fmt.Sprintf("offsets 0 to %d", n))
	_, err = e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "a", Offset: -1})
	wantStatus(t, err, codes.InvalidArgument, "offset -1")
	_, err = e.c.ProveConsistency(ctx, &tierlogv1.ProveConsistencyRequest{Topic: "a", OldSize: sizes[0] + 1})
	wantStatus(t, err, codes.NotFound, fmt.Sprintf("no checkpoint at tree size %d", sizes[0]+1), fmt.Sprint(sizes[0]), fmt.Sprint(sizes[1]))
	_, err = e.c.ProveConsistency(ctx, &tierlogv1.ProveConsistencyRequest{Topic: "a", OldSize: sizes[1], NewSize: sizes[0]})
	wantStatus(t, err, codes.InvalidArgument, "want 0 < from <= to")
	_, err = e.c.ProveConsistency(ctx, &tierlogv1.ProveConsistencyRequest{Topic: "a"})
	wantStatus(t, err, codes.InvalidArgument, "want 0 < from <= to")
	// From a size past the tree to the latest: not in the tree yet (was
	// Internal, logged as a server error).
	_, err = e.c.ProveConsistency(ctx, &tierlogv1.ProveConsistencyRequest{Topic: "a", OldSize: n + 5})
	wantStatus(t, err, codes.FailedPrecondition, fmt.Sprintf("tree size %d", n+5), "not in the tree yet")
	_, err = e.c.Checkpoint(ctx, &tierlogv1.CheckpointRequest{Topic: "a", Size: n + 1})
	wantStatus(t, err, codes.NotFound, fmt.Sprintf("no checkpoint at tree size %d", n+1))
	_, err = e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "nosuch"})
	wantStatus(t, err, codes.NotFound, "nosuch")

	e.createTopic(t, "local", 1, map[string]string{"remote.storage.enable": "false"})
	e.produce(t, &tierlogv1.ProduceRequest{Topic: "local", Partition: ptr[int32](0), Records: []*tierlogv1.Record{proveRecord(0)}})
	_, err = e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "local"})
	wantStatus(t, err, codes.FailedPrecondition, "remote.storage.enable=false")

	noBucket := newEnv(t)
	_, err = noBucket.c.PublicKey(ctx, &tierlogv1.PublicKeyRequest{})
	wantStatus(t, err, codes.FailedPrecondition, "no bucket")
}

// TestProveBelowStart: once remote retention deleted the start of a
// partition, an offset below it is OUT_OF_RANGE - its record is gone,
// though the tree keeps its leaf - and the offsets after it still prove.
func TestProveBelowStart(t *testing.T) {
	bucket, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, broker.Options{Dir: t.TempDir(), Defaults: broker.DefaultTopicConfig(), Bucket: bucket,
		Tiering: tiering.DaemonOptions{Interval: 10 * time.Millisecond}})
	e.createTopic(t, "short", 1, map[string]string{"segment.bytes": "8192", "local.retention.bytes": "0", "retention.bytes": "20000"})
	ctx := context.Background()
	for i := 0; i < 600; i += 20 {
		var recs []*tierlogv1.Record
		for j := i; j < i+20; j++ {
			recs = append(recs, proveRecord(j))
		}
		e.produce(t, &tierlogv1.ProduceRequest{Topic: "short", Partition: ptr[int32](0), Records: recs})
	}
	if _, err := e.c.TierUpload(ctx, &tierlogv1.TierUploadRequest{Topic: "short"}); err != nil {
		t.Fatal(err)
	}
	p, _ := e.b.Partition("short", 0)
	testutil.Eventually(t, 30*time.Second, func() bool { e.b.Tiering().Wake(); return p.StartOffset() > 0 },
		"remote retention deletes the first segment")
	// Retention may go on deleting while the test asks: take a start that
	// stayed put across both requests.
	var start int64
	var resp *tierlogv1.ProveResponse
	testutil.Eventually(t, 30*time.Second, func() bool {
		start = p.StartOffset()
		_, err = e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "short", Offset: start - 1})
		if status.Code(err) != codes.OutOfRange || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", start-1)) ||
			!strings.Contains(err.Error(), fmt.Sprintf("offsets %d to", start)) {
			return false
		}
		resp, err = e.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: "short", Offset: start})
		return err == nil && p.StartOffset() == start
	}, "offset below the log start OUT_OF_RANGE and the start itself proved")
	pk, err := e.c.PublicKey(ctx, &tierlogv1.PublicKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.NewVerifier(pk.GetPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := InclusionFileFromProto("short", 0, resp).Verify(note.VerifierList(v)); err != nil {
		t.Fatal(err)
	}
}
