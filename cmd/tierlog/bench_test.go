package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestBenchCommands(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	out := ok(t, n, "", "bench", "produce", "--records", "1000", "--batch", "10", "--producers", "4", "--partitions", "2", "--config", "flush.policy=always")
	for _, w := range []string{"produced 1000 records of 1024 B in 100 calls of 10 from 4 producers to tierlog-bench (2 partitions)", "records/s", "p99", "DURABILITY_FSYNCED x 100"} {
		if !strings.Contains(out, w) {
			t.Errorf("bench produce output lacks %q:\n%s", w, out)
		}
	}
	desc := ok(t, n, "", "topic", "describe", "tierlog-bench")
	if !regexp.MustCompile(`(?m)^0\s+0\s+\d+`).MatchString(desc) || !strings.Contains(desc, "flush.policy=always") {
		t.Errorf("bench topic:\n%s", desc)
	}
	out = ok(t, n, "", "bench", "consume")
	if !strings.Contains(out, "consumed 1000 records (1.0 MB of keys and values) from 2 partitions") {
		t.Errorf("bench consume:\n%s", out)
	}
}
