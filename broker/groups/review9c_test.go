package groups

import (
	"slices"
	"sync"
	"testing"
)

// TestReview9c_LoadDropsCommitReplicatedMeanwhile: a node that (re)takes
// the controller seat loads the offsets as broker/groupsync.go does - it
// reads the Raft state (loadGroupOffsets: Node.GroupOffsets()) and then
// calls Load with that copy. A commit accepted in the node's earlier time
// in the seat may be in the middle of its replicate call then (the writer
// holds syncMu across it): it reaches the Raft log after the copy was
// read, and its caller is answered "committed". Load waits for syncMu and
// then replaces every offset with the older copy (store.load) - and
// rewrites the offsets file from it: the acknowledged commit is gone from
// the coordinator (OffsetFetch serves the older offset; the group
// re-consumes), although the Raft log holds it.
//
// What should happen: the copy is read after every replication in
// flight has ended - Load takes a function that reads the Raft state and
// calls it under syncMu (or store.load fails the batches it waited for,
// so their callers are not told "committed", or reads again) - so an
// acknowledged commit is in what is loaded.
func TestReview9c_LoadDropsCommitReplicatedMeanwhile(t *testing.T) {
	var (
		mu       sync.Mutex
		raftLog  []OffsetOf // the cluster's copy (the Raft state)
		hold     = true
		entered  = make(chan struct{})
		released = make(chan struct{})
	)
	c, err := Open(Options{Dir: t.TempDir(), Replicate: func(os []OffsetOf) error {
		mu.Lock()
		h := hold
		hold = false
		mu.Unlock()
		if h {
			close(entered)
			<-released // the Raft round trip of this batch
		}
		mu.Lock()
		defer mu.Unlock()
		raftLog = append(raftLog, os...)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	committed := make(chan error, 1)
	go func() {
		committed <- c.Commit(CommitRequest{Group: "g", Generation: -1, Offsets: []PartitionOffset{{Topic: "t", Partition: 0, Offset: Offset{Offset: 20}}}})()
	}()
	<-entered
	// The new term's loadCoordination: Load reads the Raft state
	// (GroupOffsets) while the batch may still be on its way to it.
	read := func() []OffsetOf {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(raftLog)
	}
	loaded := make(chan error, 1)
	go func() { loaded <- c.Load(read) }()
	close(released)
	commitErr := <-committed
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if commitErr != nil {
		return // refused, not acknowledged: nothing acknowledged was lost (a valid fix)
	}
	mu.Lock()
	inRaft := slices.ContainsFunc(raftLog, func(o OffsetOf) bool { return o.Group == "g" && o.Offset.Offset == 20 })
	mu.Unlock()
	if got := offsetOf(c, "g", 0); inRaft && got != 20 {
		t.Fatalf("commit of offset 20 acknowledged and in the Raft log, but the coordinator serves %d after Load", got)
	}
}
