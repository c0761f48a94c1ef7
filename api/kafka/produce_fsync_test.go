package kafka

import (
	"fmt"
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

// A Produce to several partitions under flush.policy=always waits for its
// partitions' fsyncs together (each log has its own group commit), so a
// request's latency is its slowest fsync, not their sum: a franz-go
// producer batching eight partitions into one request must not pay eight
// fsyncs back to back. Here partition 0's fsync is held: partition 1's
// must start meanwhile, and both are answered (acks=-1) or become visible
// (acks=0, which nobody answers) once it is released.
func TestProducePartitionsFsyncInParallel(t *testing.T) {
	for _, acks := range []int16{-1, 0} {
		t.Run(fmt.Sprintf("acks=%d", acks), func(t *testing.T) { testProduceFsyncInParallel(t, acks) })
	}
}

func testProduceFsyncInParallel(t *testing.T, acks int16) {
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
	req := produceReq(9, acks, "multi", map[int32][]byte{0: testutil.Batch(t, 0, 2, 100, 1), 1: testutil.Batch(t, 0, 2, 100, 1)})
	corr := rc.send(req)
	select {
	case <-g.held:
	case <-time.After(10 * time.Second):
		t.Fatal("partition 0's fsync never started")
	}
	testutil.Eventually(t, 5*time.Second, g.watched.Load,
		"partition 1's fsync started while partition 0's is held (a Produce's partitions are made durable one after another)")
	release()
	if acks == 0 {
		for p := range int32(2) {
			testutil.Eventually(t, 5*time.Second, func() bool {
				_, end, err := n.b.Offsets("multi", p)
				return err == nil && end == 2
			}, "partition %d's batch visible after its fsync", p)
		}
		return
	}
	resp := rc.recv(req, corr).(*kmsg.ProduceResponse)
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 || p.BaseOffset != 0 {
			t.Fatalf("partition %d: %+v", p.Partition, p)
		}
	}
}
