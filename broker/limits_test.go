package broker

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Issue 6 item 9: a second broker on a data directory in use fails at
// open, naming the directory and the process holding it; once the first
// closes, the directory opens again.
func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	if _, err := b.CreateTopic("t", 1, nil); err != nil {
		t.Fatal(err)
	}
	second, err := Open(context.Background(), Options{Dir: dir})
	if err == nil {
		second.Close()
		b.Close()
		t.Fatal("a second broker opened a data directory in use")
	}
	if !errors.Is(err, ErrDirLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second open: %v; want ErrDirLocked naming %s and process %d", err, dir, os.Getpid())
	}
	t.Logf("second open: %v", err)
	if _, err := b.Append("t", 0, nil); errors.Is(err, ErrClosed) {
		t.Fatal("the failed second open closed the first broker")
	}
	b.Close()
	b = open(t, dir)
	defer b.Close()
	if _, err := b.Topic("t"); err != nil {
		t.Fatalf("reopen after the first broker closed: %v", err)
	}
}

// Issue 6 item 14: the partitions of all topics together are bounded; a
// create past the bound is refused naming it, and a deletion frees room.
func TestNodePartitionLimit(t *testing.T) {
	b, err := Open(context.Background(), Options{Dir: t.TempDir(), MaxNodePartitions: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic("a", 6, nil); err != nil {
		t.Fatal(err)
	}
	_, err = b.CreateTopic("b", 5, nil)
	if !errors.Is(err, ErrTooManyPartitions) || !strings.Contains(err.Error(), "limit of 10") {
		t.Fatalf("create past the node limit: %v; want ErrTooManyPartitions naming the limit", err)
	}
	t.Logf("create past the node limit: %v", err)
	if _, err := b.CreateTopic("big", 11, nil); !errors.Is(err, ErrInvalidPartition) || !strings.Contains(err.Error(), "1 to 10") {
		t.Fatalf("a topic larger than the node limit: %v", err)
	}
	if _, err := b.CreateTopic("b", 4, nil); err != nil {
		t.Fatalf("create up to the limit: %v", err)
	}
	if err := b.DeleteTopic("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("c", 6, nil); err != nil {
		t.Fatalf("create after a deletion freed room: %v", err)
	}
}
