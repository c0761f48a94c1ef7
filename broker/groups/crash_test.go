package groups

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// reviewCrashChild, run in a child process (TIERLOG_REVIEW_CRASH_DIR set),
// commits in a loop from several goroutines (several groups, log rewrites
// every few dozen entries) and prints "group offset" once each commit is
// acknowledged, until it is killed.
func reviewCrashChild(dir string) {
	base, _ := strconv.ParseInt(os.Getenv("TIERLOG_REVIEW_CRASH_BASE"), 10, 64)
	c, err := Open(Options{Dir: dir, CompactEntries: 20})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var out sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			group := fmt.Sprint("g", g)
			for i := base + 1; ; i++ {
				err := c.Commit(CommitRequest{Group: group, Generation: -1, Offsets: []PartitionOffset{
					{Topic: "t", Partition: 0, Offset: Offset{Offset: i}},
					{Topic: "t", Partition: 1, Offset: Offset{Offset: 2 * i}}}})()
				if err != nil {
					fmt.Println("commit:", err)
					os.Exit(2)
				}
				out.Lock()
				fmt.Fprintln(w, group, i)
				w.Flush()
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

// kill -9 of a process committing from several groups while the log is
// rewritten: every acknowledged commit is there after a restart, and
// nothing newer than the last commit made.
func TestCrashKeepsAcknowledgedCommits(t *testing.T) {
	if dir := os.Getenv("TIERLOG_REVIEW_CRASH_DIR"); dir != "" {
		reviewCrashChild(dir)
		return
	}
	dir := t.TempDir()
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsAcknowledgedCommits$")
		cmd.Env = append(os.Environ(), "TIERLOG_REVIEW_CRASH_DIR="+dir, fmt.Sprint("TIERLOG_REVIEW_CRASH_BASE=", round*1_000_000))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]int64{}
		sc := bufio.NewScanner(stdout)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 {
				t.Fatalf("child: %s", sc.Text())
			}
			i, _ := strconv.ParseInt(f[1], 10, 64)
			acked[f[0]] = max(acked[f[0]], i)
			if n++; n == 300+round*97 {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		for sc.Scan() { // acknowledged before the kill took effect
			f := strings.Fields(sc.Text())
			if len(f) == 2 {
				i, _ := strconv.ParseInt(f[1], 10, 64)
				acked[f[0]] = max(acked[f[0]], i)
			}
		}
		_ = cmd.Wait()
		c, err := Open(Options{Dir: dir, CompactEntries: 20})
		if err != nil {
			t.Fatalf("round %d: open after kill -9: %v", round, err)
		}
		for g, i := range acked {
			offs := c.Offsets(g)["t"]
			if offs[0].Offset < i || offs[0].Offset > int64(round+1)*1_000_000 || offs[1].Offset != 2*offs[0].Offset {
				t.Errorf("round %d: %s acknowledged %d, found %d/%d after kill -9", round, g, i, offs[0].Offset, offs[1].Offset)
			}
		}
		c.Close()
	}
}
