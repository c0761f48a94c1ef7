package tiering

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/testutil"
)

// openReplicated opens a partition whose hot log is a replica
// (hot.Options.Replicated): consumers and the daemon see it only up to its
// high watermark.
func (e *env) openReplicated(topic string) *Partition {
	e.t.Helper()
	p, err := OpenPartition(context.Background(), PartitionOptions{
		Dir: filepath.Join(e.dataDir, topic, "0"), Topic: topic, Hot: hotConfig(), HotOptions: hot.Options{Replicated: true},
		Store: e.store, Reader: e.reader, Remote: true, Retention: Retention{Bytes: -1},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.daemon.Add(p)
	return p
}

// produceAtLogEnd is produce for a replicated log, whose EndOffset is its
// high watermark.
func produceAtLogEnd(t *testing.T, p *Partition, n int) {
	t.Helper()
	for range n {
		first := p.Log().LogEndOffset()
		if _, err := p.Append(testutil.Batch(t, first, 5, valueSize, 1_000_000+first)); err != nil {
			t.Fatal(err)
		}
	}
}

// A replicated leader uploads nothing above its high watermark (a new
// leader could still truncate it), and uploads it once the high watermark
// passes, and a new leader continues the partition's Merkle tree. A new leader whose high watermark lags the bucket (its
// followers have not fetched yet) still claims the manifest: the lineage
// check compares the bucket with its log end, not its high watermark.
func TestReplicatedLeaderTiersBelowTheHighWatermark(t *testing.T) {
	ctx := context.Background()
	bs := sharedBuckets(t, "file", 2)
	a, b := sharedEnv(t, bs[0]), sharedEnv(t, bs[1])
	a.signWith(filepath.Join(t.TempDir(), "a.key"), 1)
	b.signWith(filepath.Join(t.TempDir(), "b.key"), 2)
	pa, pb := a.openReplicated("r"), b.openReplicated("r")
	defer pa.Close()
	defer pb.Close()
	if err := pa.Log().SetLeaderEpoch(1); err != nil {
		t.Fatal(err)
	}
	pa.SetLeadership(1, true)
	pb.SetLeadership(1, false)

	produceAtLogEnd(t, pa, 300)
	end := pa.Log().LogEndOffset()
	pa.Log().Roll()
	testutil.Eventually(t, 10*time.Second, func() bool { return len(pa.Log().Segments()) > 1 && pa.Log().Segments()[0].Sealed },
		"the rolled segments seal")
	a.daemon.pass(ctx)
	if got := pa.UploadedEnd(); got != 0 || len(pa.Log().SealedSegments()) != 0 {
		t.Fatalf("with the high watermark at 0 the leader uploaded to %d (%d sealed listed)", got, len(pa.Log().SealedSegments()))
	}

	// B replicates everything (it is in sync), then A's high watermark
	// moves: now it uploads.
	for off := int64(0); off < end; {
		res, err := pa.Log().ReadReplica(off, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		for data := res.Records; len(data) > 0; {
			n := 12 + int(binary.BigEndian.Uint32(data[8:12]))
			if _, err := pb.Log().AppendReplica(data[:n]); err != nil {
				t.Fatal(err)
			}
			data = data[n:]
		}
		off = pb.Log().LogEndOffset()
	}
	pa.Log().SetHighWatermark(end)
	a.settle(pa)
	if got := pa.UploadedEnd(); got != end {
		t.Fatalf("with the high watermark at %d the leader uploaded to %d", end, got)
	}

	// A dies; B leads at epoch 2 with its high watermark still at 0.
	if err := pb.Log().SetLeaderEpoch(2); err != nil {
		t.Fatal(err)
	}
	pb.SetLeadership(2, true)
	b.daemon.pass(ctx)
	if _, leader, stopped := pb.Leadership(); !leader || stopped != nil {
		t.Fatalf("new leader with its high watermark behind the bucket: leader=%v stopped=%v, want it to claim", leader, stopped)
	}
	produceAtLogEnd(t, pb, 50)
	pb.Log().SetHighWatermark(pb.Log().LogEndOffset())
	b.settle(pb)
	if got, want := pb.UploadedEnd(), pb.Log().LogEndOffset(); got != want {
		t.Fatalf("new leader uploaded to %d, want %d", got, want)
	}
	m, _, _, err := pb.readShared(ctx)
	if err != nil || errors.Is(err, ErrNotLeader) {
		t.Fatal(err)
	}
	checkContinuous(t, bs[1], m, 0, m.uploadedUpTo())
	// The new leader went on with the tree A built (loaded from the
	// bucket's tiles at the manifest's tree size), signing with its key.
	checkTree(t, b, pb, 1, 2)
}
