package tiering

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// A leader change on a shared prefix, nothing tampered with: leader A's
// upload is in flight (object uploaded and verified) when B is made leader
// and claims the manifest. A, not told yet, still signs and writes the
// checkpoint of its segment (the checkpoint is written before the manifest
// commit, which then fails) and moves tlog/checkpoint to it. B uploads
// what it has sealed, which ends before A's segment did (a replica rolls
// its own segments). The archive is honest - A's checkpoint signs the
// same records B holds - yet `tierlog verify` (Archive.Verify, with both
// nodes' keys) reports a rollback, and keeps reporting it for as long as
// B's active segment is not uploaded past A's checkpoint (an idle
// partition: for ever).
func TestReview10c_DeposedLeaderCheckpointFailsVerify(t *testing.T) {
	ctx := context.Background()
	bs := sharedBuckets(t, "file", 3)
	a, b := sharedEnv(t, bs[0]), sharedEnv(t, bs[1])
	ka := a.signWith(filepath.Join(t.TempDir(), "a"), 1)
	kb := b.signWith(filepath.Join(t.TempDir(), "b"), 2)
	pa, pb := a.open("orders", 0, true), b.open("orders", 0, true)
	defer pa.Close()
	defer pb.Close()
	if err := pa.Log().SetLeaderEpoch(1); err != nil {
		t.Fatal(err)
	}
	pa.SetLeadership(1, true)
	pb.SetLeadership(1, false)

	produce(t, pa, 10)
	replicate(t, pa, pb)
	a.settle(pa)

	// B's replica rolls halfway through what A uploads next as one segment.
	produce(t, pa, 10)
	replicate(t, pa, pb)
	if err := pb.Log().Roll(); err != nil {
		t.Fatal(err)
	}
	produce(t, pa, 10)
	replicate(t, pa, pb)
	if err := pa.Log().Roll(); err != nil {
		t.Fatal(err)
	}
	moved := false
	pa.testHookUploaded = func() {
		if moved {
			return
		}
		moved = true
		if err := pb.Log().SetLeaderEpoch(2); err != nil {
			t.Error(err)
		}
		pb.SetLeadership(2, true)
		b.daemon.pass(ctx) // B claims (and uploads what it has sealed)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		a.daemon.pass(ctx)
		return moved
	}, "A uploads its rolled segment")
	testutil.Eventually(t, 10*time.Second, func() bool {
		b.daemon.pass(ctx)
		return pb.UploadedEnd() == pb.Log().SealedEnd()
	}, "B uploads its sealed segments")
	b.daemon.cleanupAll(ctx)

	sizes, err := audit.ListCheckpoints(ctx, bs[2], PartitionPrefix("orders", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoints %v; B's manifest ends at %d, its log at %d", sizes, pb.UploadedEnd(), pb.EndOffset())

	va, err := audit.NewVerifier(ka.Public)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := audit.NewVerifier(kb.Public)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := NewArchive(cold.ReadOnly(bs[2]), nil).Verify(ctx, VerifyTarget{ClusterID: b.store.ClusterID, Topic: "orders", Partition: 0},
		VerifyOptions{Keys: note.VerifierList(va, vb)})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Findings {
		t.Errorf("verify of an honest archive after a leader change: offset %d %s: %s", f.Offset, f.Object, f.Problem)
	}
}
