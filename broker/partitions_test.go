package broker

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// AddPartitions grows a topic: the new partitions take appends and are
// tiered, the old ones keep their records, the count survives a restart
// and a restore from the bucket, and a smaller or equal count changes
// nothing.
func TestAddPartitions(t *testing.T) {
	dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
	b, _ := tieredNode(t, dir, bucketDir)
	if _, err := b.CreateTopic("a", 1, nil); err != nil {
		t.Fatal(err)
	}
	tierSome(t, b, "a", 3)
	for _, bad := range []int32{1, 0, -1} {
		if _, err := b.AddPartitions("a", bad); !errors.Is(err, ErrInvalidPartition) {
			t.Errorf("AddPartitions(a, %d): %v, want ErrInvalidPartition", bad, err)
		}
	}
	if _, err := b.AddPartitions("nope", 3); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("AddPartitions of an unknown topic: %v, want ErrUnknownTopic", err)
	}
	info, err := b.AddPartitions("a", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Partitions) != 3 {
		t.Fatalf("after AddPartitions(a, 3): %d partitions", len(info.Partitions))
	}
	if n := recordsAt(t, b, "a"); n != 3 {
		t.Errorf("partition 0 has %d records after the add, want 3", n)
	}
	// A new partition takes appends and the daemon tiers it.
	for i := range 2 {
		if _, err := b.Append("a", 2, testutil.Batch(t, int64(i), 1, 100, time.Now().UnixMilli())); err != nil {
			t.Fatalf("append to new partition 2: %v", err)
		}
	}
	p2, err := b.Partition("a", 2)
	if err != nil {
		t.Fatal(err)
	}
	p2.Log().Roll()
	testutil.Eventually(t, 10*time.Second, func() bool {
		b.Tiering().Wake()
		st := p2.Status(time.Now())
		return st.RemoteSegments > 0 && st.LagSegments == 0
	}, "new partition a/2 tiered")

	check := func(b *Broker, when string) {
		t.Helper()
		ti, err := b.Topic("a")
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if len(ti.Partitions) != 3 {
			t.Fatalf("%s: %d partitions, want 3", when, len(ti.Partitions))
		}
		if ti.Partitions[2].EndOffset != 2 || ti.Partitions[0].EndOffset != 3 {
			t.Errorf("%s: end offsets %d and %d, want 3 (partition 0) and 2 (partition 2)", when, ti.Partitions[0].EndOffset, ti.Partitions[2].EndOffset)
		}
	}
	b.Close()
	b, _ = tieredNode(t, dir, bucketDir)
	check(b, "after a restart")
	b.Close()
	r, _ := tieredNode(t, t.TempDir(), bucketDir)
	check(r, "after a restore from the bucket")

	// A delete after the add removes the new partitions' objects too.
	if err := r.DeleteTopic("a"); err != nil {
		t.Fatal(err)
	}
	if keys := bucketKeys(t, bucketDir, "a", 3); len(keys) != 0 {
		t.Errorf("bucket still holds %v after the delete", keys)
	}
	r.Close()
}

// An add the bucket refuses is undone: the topic keeps its partitions,
// here and after a restart.
func TestAddPartitionsBucketFailure(t *testing.T) {
	dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
	b, fb := tieredNode(t, dir, bucketDir)
	if _, err := b.CreateTopic("a", 2, nil); err != nil {
		t.Fatal(err)
	}
	fb.setFailPrefix("topics/a.json")
	if _, err := b.AddPartitions("a", 4); err == nil {
		t.Fatal("AddPartitions with the bucket refusing the record succeeded")
	}
	fb.setFailPrefix("")
	if ti, _ := b.Topic("a"); len(ti.Partitions) != 2 {
		t.Fatalf("after a failed add: %d partitions, want 2", len(ti.Partitions))
	}
	if _, err := b.Append("a", 3, testutil.Batch(t, 0, 1, 10, 1)); !errors.Is(err, ErrInvalidPartition) {
		t.Errorf("append to partition 3 after a failed add: %v, want ErrInvalidPartition", err)
	}
	// A retry succeeds (the leftovers of the failed one are cleared).
	if _, err := b.AddPartitions("a", 4); err != nil {
		t.Fatalf("retried add: %v", err)
	}
	b.Close()
	b, _ = tieredNode(t, dir, bucketDir)
	defer b.Close()
	if ti, _ := b.Topic("a"); len(ti.Partitions) != 4 {
		t.Fatalf("after a restart: %d partitions, want 4", len(ti.Partitions))
	}
}

// Adds racing a delete and appends: never a partition left open in a
// deleted topic, never a data race on the partition list (run with -race),
// and a reopen does not bring the topic back.
func TestAddPartitionsRacesDeleteAndAppends(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	for i := range 20 {
		if _, err := b.CreateTopic("x", 1, nil); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := b.AddPartitions("x", 4); err != nil && !errors.Is(err, ErrUnknownTopic) {
				t.Errorf("round %d: add: %v", i, err)
			}
		})
		wg.Go(func() {
			for p := range int32(4) {
				b.Append("x", p, testutil.Batch(t, 0, 1, 10, 1))
			}
		})
		if err := b.DeleteTopic("x"); err != nil {
			t.Fatalf("round %d: delete: %v", i, err)
		}
		wg.Wait()
	}
	b.Close()
	b = open(t, dir)
	defer b.Close()
	if ts := b.Topics(); len(ts) != 0 {
		t.Fatalf("deleted topic back after reopen: %+v", ts)
	}
}

// The node's partition limit counts added partitions.
func TestAddPartitionsNodeLimit(t *testing.T) {
	b, err := Open(t.Context(), Options{Dir: t.TempDir(), MaxNodePartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic("a", 2, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("b", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddPartitions("a", 4); !errors.Is(err, ErrTooManyPartitions) {
		t.Errorf("add of 2 with 1 free: %v, want ErrTooManyPartitions", err)
	}
	if _, err := b.AddPartitions("a", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("c", 1, nil); !errors.Is(err, ErrTooManyPartitions) {
		t.Errorf("create with the limit used by added partitions: %v, want ErrTooManyPartitions", err)
	}
}

// The Check* calls (Kafka's validate-only requests) report what the real
// call would and change nothing.
func TestChecksChangeNothing(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	if err := b.CheckCreateTopic("a", 2, map[string]string{"retention.ms": "1000"}); err != nil {
		t.Fatal(err)
	}
	if ts := b.Topics(); len(ts) != 0 {
		t.Fatalf("CheckCreateTopic created %+v", ts)
	}
	for _, c := range []struct {
		err  error
		want error
	}{
		{b.CheckCreateTopic("a", 2, map[string]string{"no.such": "1"}), ErrInvalidConfig},
		{b.CheckCreateTopic("a b", 2, nil), ErrInvalidTopicName},
		{b.CheckCreateTopic("a", 0, nil), ErrInvalidPartition},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("got %v, want %v", c.err, c.want)
		}
	}
	if _, err := b.CreateTopic("a", 2, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckCreateTopic("a", 2, nil); !errors.Is(err, ErrTopicExists) {
		t.Errorf("CheckCreateTopic of an existing topic: %v", err)
	}
	if err := b.CheckAlterTopicConfig("a", map[string]string{"retention.ms": "5"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckAlterTopicConfig("a", map[string]string{"retention.ms": "soon"}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("CheckAlterTopicConfig with a bad value: %v", err)
	}
	if err := b.CheckAddPartitions("a", 5); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckAddPartitions("a", 2); !errors.Is(err, ErrInvalidPartition) {
		t.Errorf("CheckAddPartitions to the same count: %v", err)
	}
	b.Close()
	b = open(t, dir)
	defer b.Close()
	ti, err := b.Topic("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(ti.Partitions) != 2 || len(ti.Overrides) != 0 {
		t.Errorf("after checks and a restart: %d partitions, overrides %v; want 2 and none", len(ti.Partitions), ti.Overrides)
	}
}
