package hot

import (
	"bufio"
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
)

const epochChildDirEnv = "TIERLOG_HOT_EPOCH_CRASH_CHILD_DIR"

// The child of TestKill9WithEpochChanges runs from init, before
// TestMain, when the variable is set.
func init() {
	if dir := os.Getenv(epochChildDirEnv); dir != "" {
		epochCrashChild(dir)
	}
}

// epochCrashChild appends under flush=always from two writers, rolls tiny
// segments, and raises the leader epoch every few milliseconds. It prints
// "A w s base epoch" per acknowledged batch (epoch read back from the log)
// and "E epoch" per returned SetLeaderEpoch, until it is killed.
func epochCrashChild(dir string) {
	cfg := DefaultConfig()
	cfg.SegmentBytes = 16 << 10
	l, err := Open(dir, cfg, Options{BackgroundInterval: time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var out sync.Mutex
	say := func(format string, a ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		out.Unlock()
	}
	go func() {
		for {
			e := l.LeaderEpoch() + 1
			if err := l.SetLeaderEpoch(e); err != nil {
				fmt.Fprintln(os.Stderr, "child epoch:", err)
				os.Exit(6)
			}
			say("E %d", e)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for w := range 2 {
		go func() {
			for s := 0; ; s++ {
				recs := make([]batch.Record, 3)
				for k := range recs {
					recs[k] = batch.Record{Timestamp: time.Now().UnixMilli(), Value: crashValue(w, s, k)}
				}
				b, _ := batch.Build(recs, batch.BuildOptions{})
				res, err := l.Append(b)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(4)
				}
				r, err := l.Read(res.BaseOffset, 1)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child read:", err)
					os.Exit(5)
				}
				h, _ := batch.ParseHeader(r.Records)
				say("A %d %d %d %d", w, s, res.BaseOffset, h.PartitionLeaderEpoch)
			}
		}()
	}
	select {}
}

// TestKill9WithEpochChanges: kill -9 a process that appends under
// flush=always while raising the leader epoch; after each kill every
// acknowledged batch is there byte for byte with its epoch, the epoch
// cache agrees with the batch headers, and the log's epoch is at least
// every epoch SetLeaderEpoch acknowledged (an append after the restart
// never stamps an older one).
func TestKill9WithEpochChanges(t *testing.T) {
	dir := t.TempDir()
	type ack struct {
		w, s  int
		epoch int32
	}
	acked := map[int64]ack{}
	var maxEpoch int32
	for cycle := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), epochChildDirEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 200 + rand.IntN(600)
		n := 0
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 2 && f[0] == "E":
				e, _ := strconv.Atoi(f[1])
				maxEpoch = max(maxEpoch, int32(e))
			case len(f) == 5 && f[0] == "A":
				w, _ := strconv.Atoi(f[1])
				s, _ := strconv.Atoi(f[2])
				base, _ := strconv.ParseInt(f[3], 10, 64)
				e, _ := strconv.Atoi(f[4])
				acked[base] = ack{w, s, int32(e)}
				if n++; n == killAfter {
					cmd.Process.Signal(syscall.SIGKILL)
				}
			}
		}
		cmd.Wait()
		if n < killAfter {
			t.Fatalf("cycle %d: child stopped after %d acks: %s", cycle, n, stderr.String())
		}

		l := openLog(t, dir, DefaultConfig(), Options{})
		if got := l.LeaderEpoch(); got < maxEpoch {
			t.Errorf("cycle %d: leader epoch %d after restart, but SetLeaderEpoch(%d) was acknowledged", cycle, got, maxEpoch)
		}
		entries := l.EpochEntries()
		end := l.EndOffset()
		headers := map[int64]batch.Header{}
		values := map[int64][]byte{}
		for off := int64(0); off < end; {
			res, err := l.Read(off, 1)
			if err != nil {
				t.Fatalf("cycle %d: read at %d: %v", cycle, off, err)
			}
			h, _ := batch.ParseHeader(res.Records)
			headers[h.BaseOffset] = h
			recs, err := batch.DecodeAll(res.Records)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				values[r.Offset] = r.Value
			}
			off = h.LastOffset() + 1
		}
		l.Close()
		for base, a := range acked {
			h, ok := headers[base]
			if !ok {
				t.Fatalf("cycle %d: acknowledged batch at %d lost (end %d)", cycle, base, end)
			}
			if h.PartitionLeaderEpoch != a.epoch {
				t.Fatalf("cycle %d: batch at %d has epoch %d, acknowledged with %d", cycle, base, h.PartitionLeaderEpoch, a.epoch)
			}
			for k := range 3 {
				if string(values[base+int64(k)]) != string(crashValue(a.w, a.s, k)) {
					t.Fatalf("cycle %d: offset %d changed", cycle, base+int64(k))
				}
			}
		}
		for base, h := range headers {
			var want int32 = -1
			for _, e := range entries {
				if e.StartOffset <= base {
					want = e.Epoch
				}
			}
			if want != h.PartitionLeaderEpoch {
				t.Fatalf("cycle %d: batch at %d has epoch %d, the cache %v says %d", cycle, base, h.PartitionLeaderEpoch, entries, want)
			}
		}
		t.Logf("cycle %d: %d acks, %d acknowledged batches intact, end %d, %d epochs, max acked epoch %d", cycle, n, len(acked), end, len(entries), maxEpoch)
	}
}
