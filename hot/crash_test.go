package hot

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

var crashCycles = flag.Int("crash-cycles", 12, "kill -9 cycles in TestKill9UnderFlushAlways (soak: 500)")

const crashDirEnv = "TIERLOG_HOT_CRASH_CHILD_DIR"

// crashValue is the value of record k of writer w's batch s: the parent
// recomputes it to check every acknowledged byte.
func crashValue(w, s, k int) []byte {
	return fmt.Appendf(testutil.Value(int64(w*1_000_003+s*7+k), 180)[:0:0], "w%d-s%d-k%d-%s", w, s, k, testutil.Value(int64(s), 150))
}

// runCrashChild is the child side of TestKill9UnderFlushAlways: several
// writers append to the log under flush=always and print one line per
// acknowledged batch until the parent kills the process.
func runCrashChild() bool {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return false
	}
	cfg := DefaultConfig()
	cfg.SegmentBytes = 256 << 10
	l, err := Open(dir, cfg, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var out sync.Mutex
	for w := range 4 {
		go func() {
			for s := 0; ; s++ {
				recs := make([]batch.Record, 3)
				for k := range recs {
					recs[k] = batch.Record{Timestamp: time.Now().UnixMilli(), Value: crashValue(w, s, k)}
				}
				b, _ := batch.Build(recs, batch.BuildOptions{Codec: batch.Codec(s % 5)})
				res, err := l.Append(b)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(4)
				}
				if res.Durability != DurabilityFsynced {
					os.Exit(5)
				}
				out.Lock()
				os.Stdout.WriteString(fmt.Sprintf("%d %d %d\n", w, s, res.BaseOffset))
				out.Unlock()
			}
		}()
	}
	select {}
}

// TestKill9UnderFlushAlways runs a real child process appending under
// flush=always, kills it with SIGKILL at a random moment, reopens the log and
// checks that every acknowledged record is there byte for byte, for many
// cycles on the same directory.
func TestKill9UnderFlushAlways(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := t.TempDir()
	type ack struct{ w, s int }
	acked := map[int64]ack{} // base offset -> batch
	seenSeq := map[int]int{}
	for cycle := range *crashCycles {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		killAfter := 100 + rand.IntN(400) // acknowledged batches before the kill
		n := 0
		for line := range lines {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue
			}
			w, _ := strconv.Atoi(f[0])
			s, _ := strconv.Atoi(f[1])
			base, _ := strconv.ParseInt(f[2], 10, 64)
			acked[base] = ack{w, s}
			seenSeq[w] = max(seenSeq[w], s)
			if n++; n == killAfter {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		cmd.Wait()
		if n < killAfter {
			t.Fatalf("cycle %d: child stopped after %d acks: %s", cycle, n, stderr.String())
		}

		l := openLog(t, dir, DefaultConfig(), Options{})
		end := l.EndOffset()
		byOffset := map[int64]batch.Record{}
		for _, r := range readAll(t, l, 0) {
			byOffset[r.Offset] = r
		}
		l.Close()
		for base, a := range acked {
			for k := range 3 {
				r, ok := byOffset[base+int64(k)]
				if !ok {
					t.Fatalf("cycle %d: acknowledged offset %d (writer %d batch %d) lost; log end %d", cycle, base+int64(k), a.w, a.s, end)
				}
				if string(r.Value) != string(crashValue(a.w, a.s, k)) {
					t.Fatalf("cycle %d: offset %d holds %q, want %q", cycle, r.Offset, r.Value, crashValue(a.w, a.s, k))
				}
			}
		}
		if int64(len(byOffset)) != end {
			t.Fatalf("cycle %d: %d records readable, end offset %d", cycle, len(byOffset), end)
		}
		t.Logf("cycle %d: killed after %d acks; %d acknowledged batches all intact; log end %d", cycle, n, len(acked), end)
	}
}
