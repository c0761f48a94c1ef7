package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/partitioner"
	"github.com/tierlog/tierlog/internal/testutil"
)

func TestMain(m *testing.M) {
	if runRestoreChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

func open(t *testing.T, dir string) *Broker {
	t.Helper()
	b, err := Open(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTopicLifecyclePersists(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	if _, err := b.CreateTopic("audit", 3, map[string]string{"segment.bytes": "1048576", "flush.policy": "interval"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("audit", 1, nil); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	if _, err := b.CreateTopic("other", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append("audit", 2, testutil.Batch(t, 0, 10, 50, 1)); err != nil {
		t.Fatal(err)
	}
	b.Close()

	b = open(t, dir)
	defer b.Close()
	ts := b.Topics()
	if len(ts) != 2 || ts[0].Name != "audit" || ts[1].Name != "other" {
		t.Fatalf("topics after restart: %+v", ts)
	}
	a := ts[0]
	if len(a.Partitions) != 3 || a.Config["segment.bytes"] != "1048576" || a.Config["flush.policy"] != "interval" || a.Config["retention.ms"] != "-1" {
		t.Fatalf("audit after restart: %+v", a)
	}
	if a.Partitions[2].EndOffset != 10 {
		t.Fatalf("partition 2 end %d", a.Partitions[2].EndOffset)
	}
	if err := b.DeleteTopic("audit"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Topic("audit"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("describe deleted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "topics", "audit")); !os.IsNotExist(err) {
		t.Fatalf("deleted topic's directory remains: %v", err)
	}
	if err := b.DeleteTopic("audit"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	b.CreateTopic("t", 2, nil)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"bad name", second(b.CreateTopic("a/b", 1, nil)), ErrInvalidTopicName},
		{"dot name", second(b.CreateTopic("..", 1, nil)), ErrInvalidTopicName},
		{"zero partitions", second(b.CreateTopic("z", 0, nil)), ErrInvalidPartition},
		{"unknown key", second(b.CreateTopic("z", 1, map[string]string{"segment.byte": "1"})), ErrInvalidConfig},
		{"bad value", second(b.CreateTopic("z", 1, map[string]string{"flush.policy": "sometimes"})), ErrInvalidConfig},
		{"small segment", second(b.CreateTopic("z", 1, map[string]string{"segment.bytes": "10"})), ErrInvalidConfig},
		{"unknown topic", second(b.Append("nope", 0, testutil.Batch(t, 0, 1, 1, 1))), ErrUnknownTopic},
		{"partition too high", second(b.Append("t", 2, testutil.Batch(t, 0, 1, 1, 1))), ErrInvalidPartition},
		{"negative partition", second(b.Fetch(context.Background(), "t", -1, 0, 100)), ErrInvalidPartition},
		{"offset out of range", second(b.Fetch(context.Background(), "t", 0, 5, 100)), hot.ErrOffsetOutOfRange},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		} else {
			t.Logf("%s: %v", c.name, c.err)
		}
	}
	if len(b.Topics()) != 1 {
		t.Fatalf("rejected creates left topics behind: %+v", b.Topics())
	}
}

func second[T any](_ T, err error) error { return err }

func TestPickPartition(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	b.CreateTopic("t", 6, nil)
	for _, k := range []string{"a", "user-42", "κλειδί"} {
		p, _ := b.PickPartition("t", []byte(k))
		if p != partitioner.ForKey([]byte(k), 6) {
			t.Errorf("key %q to %d", k, p)
		}
	}
	seen := map[int32]int{}
	for range 60 {
		p, _ := b.PickPartition("t", nil)
		seen[p]++
	}
	for p := range int32(6) {
		if seen[p] != 10 {
			t.Fatalf("round-robin uneven: %v", seen)
		}
	}
}

func TestFetchWaitOffsets(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	b.CreateTopic("t", 1, nil)
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background(), "t", 0, 0) }()
	b.Append("t", 0, testutil.Batch(t, 0, 3, 10, 500))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not wake on append")
	}
	res, err := b.Fetch(context.Background(), "t", 0, 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := batch.DecodeAll(res.Records)
	if len(recs) != 3 || res.EndOffset != 3 {
		t.Fatalf("fetch: %d records, end %d", len(recs), res.EndOffset)
	}
	if off, _ := b.OffsetForTime(context.Background(), "t", 0, 501); off != 0 {
		t.Fatalf("offset for time: %d", off)
	}
	if off, _ := b.OffsetForTime(context.Background(), "t", 0, 503); off != 3 {
		t.Fatalf("offset for a time past the end: %d", off)
	}
	if s, e, _ := b.Offsets("t", 0); s != 0 || e != 3 {
		t.Fatalf("offsets %d %d", s, e)
	}
}

func TestIncompleteTopicDirectoryIsRemoved(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "topics", "half", "0"), 0o755)
	b := open(t, dir)
	defer b.Close()
	if len(b.Topics()) != 0 {
		t.Fatal("a directory without topic.json became a topic")
	}
	if _, err := os.Stat(filepath.Join(dir, "topics", "half")); !os.IsNotExist(err) {
		t.Fatal("incomplete topic directory not removed")
	}
}
