package hot

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

const truncateChildEnv = "TIERLOG_HOT_TRUNCATE_CHILD" // dir,offset,step[,fully]

// runTruncateChild is the child side of TestKill9DuringTruncateTo and
// TestKill9DuringTruncateFully: it truncates the log and kills itself
// with SIGKILL at the named step.
func runTruncateChild() bool {
	arg := os.Getenv(truncateChildEnv)
	if arg == "" {
		return false
	}
	f := strings.Split(arg, ",")
	offset, _ := strconv.ParseInt(f[1], 10, 64)
	l, err := Open(f[0], testConfig(FlushAlways), Options{})
	if err != nil {
		os.Stderr.WriteString("child open: " + err.Error() + "\n")
		os.Exit(3)
	}
	truncateHook = func(step string) {
		if step == f[2] {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	if len(f) > 3 && f[3] == "fully" {
		err = l.TruncateFullyAndStartAt(offset)
	} else {
		err = l.TruncateTo(offset)
	}
	os.Stderr.WriteString("child: truncation finished without reaching its step: " + strings.TrimSpace(f[2]) + " " + errString(err) + "\n")
	os.Exit(4)
	return true
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestKill9DuringTruncateTo kills a real process with SIGKILL at each step
// of a truncation and checks that the log opens consistent: a prefix of
// the leader's log at least as long as the cut, its epoch cache and
// producer state those of that prefix; and that the truncation then
// completes.
func TestKill9DuringTruncateTo(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	leader, _ := leaderWithEpochs(t, t.TempDir())
	defer leader.Close()
	all, order := logBatches(t, leader, 0)
	src := t.TempDir()
	f := openLog(t, src, testConfig(FlushAlways), Options{})
	replicate(t, leader, f)
	f.Close()
	cut := order[33]

	for _, step := range []string{"recovery-point", "epochs", "segment-deleted", "cut", "unlocked"} {
		dir := t.TempDir()
		copyDir(t, src, dir)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), truncateChildEnv+"="+dir+","+strconv.FormatInt(cut, 10)+","+step)
		out, err := cmd.CombinedOutput()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("step %s: child was not killed: %v: %s", step, err, out)
		}

		l := openLog(t, dir, testConfig(FlushAlways), Options{})
		end := l.EndOffset()
		if end < cut || end > leader.EndOffset() {
			t.Fatalf("step %s: log end %d, want between the cut %d and the old end %d", step, end, cut, leader.EndOffset())
		}
		checkPrefixOf(t, leader, l, end)
		// The producer state is that of the prefix: producer 7's last
		// batch in it is a retry.
		var last batch.Header
		for _, base := range order {
			if h, _ := batch.Peek(all[base]); h.ProducerID == 7 && base < end {
				last = h
			}
		}
		wantDup(t, l, testutil.IdempotentBatch(t, 7, 0, last.BaseSequence, 5, 1000), last.BaseOffset, last.LastOffset())
		if err := l.TruncateTo(cut); err != nil {
			t.Fatalf("step %s: truncation after the crash: %v", step, err)
		}
		checkPrefixOf(t, leader, l, cut)
		l.Close()
		l = openLog(t, dir, testConfig(FlushAlways), Options{})
		checkPrefixOf(t, leader, l, cut)
		l.Close()
		t.Logf("killed at %s: reopened with end %d (cut %d)", step, end, cut)
	}
}
