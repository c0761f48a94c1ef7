package broker

import (
	"runtime"
	"testing"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestIdlePartitionsHoldNoGoroutines is issue 6 item 7 (last paragraph) at
// the broker: every partition log ran its own goroutine (10,000 idle
// partitions held 10,013). The broker's partitions share one scheduler.
func TestIdlePartitionsHoldNoGoroutines(t *testing.T) {
	const partitions = 300
	b := open(t, t.TempDir())
	defer b.Close()
	if _, err := b.CreateTopic("warmup", 1, nil); err != nil { // starts the shared dispatcher
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	if _, err := b.CreateTopic("wide", partitions, nil); err != nil {
		t.Fatal(err)
	}
	grown := runtime.NumGoroutine() - base
	t.Logf("%d idle partitions added %d goroutines", partitions, grown)
	if grown > 8 { // the scheduler's few workers at most
		t.Errorf("%d idle partitions added %d goroutines; a partition must cost none of its own", partitions, grown)
	}
	for p := range int32(3) {
		if _, err := b.Append("wide", p, testutil.Batch(t, 0, 5, 50, 1)); err != nil {
			t.Fatal(err)
		}
	}
}
