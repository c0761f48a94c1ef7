package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/tiering"
)

// The child side of TestRestoreResumesAfterCrash: it opens a broker that
// restores from the bucket and kills itself (SIGKILL, no clean-up of any
// kind) right after the restore recorded its third topic.
const restoreChildEnv = "TIERLOG_BROKER_RESTORE_CHILD" // "<data dir>|<bucket dir>"

func runRestoreChild() bool {
	v := os.Getenv(restoreChildEnv)
	if v == "" {
		return false
	}
	dir, bucketDir, _ := strings.Cut(v, "|")
	bk, err := filebucket.New(bucketDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child bucket:", err)
		os.Exit(3)
	}
	logger := slog.New(&killAfter{n: 3, msg: "restoring topic from the bucket"})
	if _, err := Open(context.Background(), Options{Dir: dir, Bucket: bk, Logger: logger, Takeover: true}); err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(4)
	}
	os.Exit(0) // the restore finished before the crash point: the parent fails
	return true
}

// killAfter is a slog handler that SIGKILLs the process at the n-th record
// with message msg.
type killAfter struct {
	n   int
	msg string
}

func (h *killAfter) Enabled(context.Context, slog.Level) bool { return true }
func (h *killAfter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		if h.n--; h.n == 0 {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	return nil
}
func (h *killAfter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *killAfter) WithGroup(string) slog.Handler      { return h }

// A node that lost its disk restores its topics from the bucket. If it is
// killed half way through, the next start must finish the restore: the
// topics not yet recorded locally are in the bucket and were never deleted.
// (Left unfinished, they are missing from the node for good, and a create
// of one of their names adopts the old partition's manifest.)
func TestRestoreResumesAfterCrash(t *testing.T) {
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	bk, err := filebucket.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	store, err := tiering.OpenStore(context.Background(), bk, t.TempDir(), tiering.StoreOptions{}) // the node that wrote the bucket
	if err != nil {
		t.Fatal(err)
	}
	const topics = 8
	for i := range topics {
		if err := store.PutTopic(context.Background(), tiering.TopicMeta{Name: fmt.Sprintf("t%d", i), Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	bk.Close()

	dir := t.TempDir() // the new, empty disk
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), restoreChildEnv+"="+dir+"|"+bucketDir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed during the restore: %v %s", err, stderr.String())
	}

	b, _ := tieredNode(t, dir, bucketDir)
	defer b.Close()
	var missing []string
	for i := range topics {
		if _, err := b.Topic(fmt.Sprintf("t%d", i)); err != nil {
			missing = append(missing, fmt.Sprintf("t%d", i))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("after a crash during the restore, the restart has %d of %d topics the bucket records; missing %v", topics-len(missing), topics, missing)
	}
}
