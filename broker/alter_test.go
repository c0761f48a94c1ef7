package broker

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/testutil"
)

// AlterTopicConfig applies to the open partitions at once, survives a
// restart (topic.json) and a restore from the bucket (its topic record);
// a bad change changes nothing.
func TestAlterTopicConfig(t *testing.T) {
	dir, bucketDir := t.TempDir(), filepath.Join(t.TempDir(), "bucket")
	b, _ := tieredNode(t, dir, bucketDir)
	if _, err := b.CreateTopic("a", 2, map[string]string{"segment.bytes": "65536", "flush.policy": "interval"}); err != nil {
		t.Fatal(err)
	}
	big := testutil.Batch(t, 0, 1, 4000, 1) // one ~4 KB record
	if _, err := b.Append("a", 1, big); err != nil {
		t.Fatalf("append before alter: %v", err)
	}
	info, err := b.AlterTopicConfig("a", map[string]string{"max.message.bytes": "2048", "retention.ms": "3600000"}, []string{"flush.policy"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"max.message.bytes": "2048", "retention.ms": "3600000", "segment.bytes": "65536", "flush.policy": "always"}
	for k, v := range want {
		if info.Config[k] != v {
			t.Errorf("after alter %s=%s, want %s", k, info.Config[k], v)
		}
	}
	if _, ok := info.Overrides["flush.policy"]; ok {
		t.Errorf("flush.policy still overridden after delete: %v", info.Overrides)
	}
	// Applied to the open partitions: the 4 KB batch is now too large.
	if _, err := b.Append("a", 1, big); !errors.Is(err, hot.ErrTooLarge) {
		t.Errorf("append of 4 KB after max.message.bytes=2048: %v, want ErrTooLarge", err)
	}

	// Bad changes change nothing.
	for _, bad := range []struct {
		set map[string]string
		del []string
	}{
		{map[string]string{"retention.ms": "soon"}, nil},
		{map[string]string{"no.such.key": "1"}, nil},
		{nil, []string{"no.such.key"}},
		{map[string]string{"retention.ms": "1"}, []string{"retention.ms"}},
		{map[string]string{"local.disk.max.bytes": "1000"}, nil}, // below 2 x segment.bytes
	} {
		if _, err := b.AlterTopicConfig("a", bad.set, bad.del); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("alter %v delete %v: %v, want ErrInvalidConfig", bad.set, bad.del, err)
		}
	}
	if _, err := b.AlterTopicConfig("nope", map[string]string{"retention.ms": "1"}, nil); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("alter of an unknown topic: %v, want ErrUnknownTopic", err)
	}
	check := func(b *Broker, when string) {
		t.Helper()
		info, err := b.Topic("a")
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		for k, v := range want {
			if info.Config[k] != v {
				t.Errorf("%s: %s=%s, want %s", when, k, info.Config[k], v)
			}
		}
		if len(info.Overrides) != 3 {
			t.Errorf("%s: overrides %v, want the 3 set keys", when, info.Overrides)
		}
	}
	check(b, "after the refused changes")
	b.Close()
	b, _ = tieredNode(t, dir, bucketDir)
	check(b, "after a restart")
	b.Close()
	r, _ := tieredNode(t, t.TempDir(), bucketDir)
	check(r, "after a restore from the bucket")
	r.Close()
}

// An alter racing a delete never writes a live topic.json (or bucket
// record) over the deletion's tombstone: after both, a reopen does not
// bring the topic back.
func TestAlterDoesNotResurrectDeletedTopic(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	for i := range 30 {
		if _, err := b.CreateTopic("x", 1, nil); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			_, err := b.AlterTopicConfig("x", map[string]string{"retention.ms": "60000"}, nil)
			if err != nil && !errors.Is(err, ErrUnknownTopic) {
				t.Errorf("round %d: alter: %v", i, err)
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
