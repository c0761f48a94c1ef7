package tiering

import (
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// An idle partition must cost a tiering pass nothing: with 10,000 idle
// partitions, a pass that walked each one (a goroutine, the segment list
// and two manifest copies apiece, every second) kept 10% of a core busy.
// The pass skips a partition unless a sealed segment waits for upload, a
// manifest version waits to be copied, a remote deletion waits to finish
// or total retention must be evaluated.
func TestIdlePartitionNeedsNoPass(t *testing.T) {
	e := newEnv(t, newFileBucket(t), t.TempDir())
	p := e.open("t", 0, true)
	defer p.Close()
	if p.needsPass() {
		t.Fatal("a new, empty partition needs a pass")
	}
	produce(t, p, 3)
	if p.needsPass() {
		t.Fatal("a partition whose only segment is active needs a pass")
	}
	if err := p.Log().Roll(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, p.needsPass, "a sealed segment waiting for upload makes the partition need a pass")
	e.settle(p)
	if p.needsPass() {
		t.Fatalf("after its segment is uploaded and the manifest copied, the partition still needs a pass: %+v", p.Status(time.Now()))
	}
	p.mu.Lock()
	p.retention = Retention{Age: time.Hour, Bytes: -1}
	p.mu.Unlock()
	if !p.needsPass() {
		t.Fatal("a partition with total retention to enforce is skipped")
	}
}
