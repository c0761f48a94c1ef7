package groups

import (
	"errors"
	"sync"
	"testing"
)

// TestReplicateAndLoad: every durable change goes to Options.Replicate in
// order before the commit is answered; a refused replication fails the
// commit; Load replaces the offsets with another node's copy, durably and
// without replicating them back.
func TestReplicateAndLoad(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var got []OffsetOf
	var refuse error
	c, err := Open(Options{Dir: dir, Replicate: func(os []OffsetOf) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse != nil {
			return refuse
		}
		got = append(got, os...)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, c, "g", 0, 5)
	commit(t, c, "g", 0, 6)
	if len(got) != 2 || got[0].Offset.Offset != 5 || got[1].Offset.Offset != 6 || got[1].Group != "g" || got[1].Topic != "t" {
		t.Fatalf("replicated %+v, want offsets 5 then 6 of g/t/0", got)
	}
	mu.Lock()
	refuse = errors.New("no quorum")
	mu.Unlock()
	err = c.Commit(CommitRequest{Group: "g", Generation: -1, Offsets: []PartitionOffset{{Topic: "t", Partition: 0, Offset: Offset{Offset: 7}}}})()
	if err == nil {
		t.Fatal("a commit whose replication failed was answered as committed")
	}
	mu.Lock()
	refuse, got = nil, nil
	mu.Unlock()

	if err := c.Load(func() []OffsetOf {
		return []OffsetOf{{Group: "h", PartitionOffset: PartitionOffset{Topic: "t", Partition: 3, Offset: Offset{Offset: 42}}}}
	}); err != nil {
		t.Fatal(err)
	}
	if offsetOf(c, "g", 0) != -1 || offsetOf(c, "h", 3) != 42 {
		t.Fatalf("after Load: g/0=%d h/3=%d, want -1 and 42", offsetOf(c, "g", 0), offsetOf(c, "h", 3))
	}
	if len(got) != 0 {
		t.Fatalf("Load replicated %+v back", got)
	}
	c.Close()
	c, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if offsetOf(c, "h", 3) != 42 || offsetOf(c, "g", 0) != -1 {
		t.Fatal("Load was not durable")
	}
}
