package kafka

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/testutil"
)

// partGateFS holds the fsyncs of one partition's segments (path contains
// hold) once armed, and records that another partition's (path contains
// watch) started.
type partGateFS struct {
	hold, watch string
	armed       atomic.Bool
	held        chan struct{} // closed when a held fsync started
	watched     atomic.Bool
	gate        chan struct{}
	once        sync.Once
}

type partGateFile struct {
	*os.File
	fs *partGateFS
}

func (g *partGateFS) open(name string, flag int, perm os.FileMode) (hot.File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &partGateFile{File: f, fs: g}, nil
}

func (f *partGateFile) Sync() error {
	g := f.fs
	if g.armed.Load() {
		switch {
		case strings.Contains(f.Name(), g.hold):
			g.once.Do(func() { close(g.held) })
			<-g.gate
		case strings.Contains(f.Name(), g.watch):
			g.watched.Store(true)
		}
	}
	return f.File.Sync()
}

// A Produce to several partitions under flush.policy=always waits for each
// partition's fsync one after another (produce's finish calls Wait in a
// loop), so a request's latency is the sum of its partitions' fsyncs: a
// franz-go producer batching eight partitions into one request pays eight
// fsyncs back to back. The partitions' logs are independent; their
// fsyncs can run together. Here partition 0's fsync is held: partition
// 1's never starts until it ends.
func TestReview_ProducePartitionsFsyncInParallel(t *testing.T) {
	g := &partGateFS{hold: "/topics/multi/0/", watch: "/topics/multi/1/", held: make(chan struct{}), gate: make(chan struct{})}
	n := startKafkaNode(t, t.TempDir(), nodeOptions{broker: func(o *broker.Options) { o.OpenFile = g.open }})
	n.createTopic("multi", 2, map[string]string{"flush.policy": "always"})
	var released atomic.Bool
	release := func() {
		if released.CompareAndSwap(false, true) {
			close(g.gate)
		}
	}
	defer release()
	rc := dialRaw(t, n.addr)
	g.armed.Store(true)
	req := produceReq(9, -1, "multi", map[int32][]byte{0: testutil.Batch(t, 0, 2, 100, 1), 1: testutil.Batch(t, 0, 2, 100, 1)})
	corr := rc.send(req)
	select {
	case <-g.held:
	case <-time.After(10 * time.Second):
		t.Fatal("partition 0's fsync never started")
	}
	testutil.Eventually(t, 5*time.Second, g.watched.Load,
		"partition 1's fsync started while partition 0's is held (a Produce's partitions are made durable one after another)")
	release()
	resp := rc.recv(req, corr).(*kmsg.ProduceResponse)
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 || p.BaseOffset != 0 {
			t.Fatalf("partition %d: %+v", p.Partition, p)
		}
	}
}
