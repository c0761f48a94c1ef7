package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestTopicAlterConfig changes a running topic's settings through the
// binary: the change shows in describe, applies to produce at once, a key
// returns to the default, and bad changes say what is wrong.
func TestTopicAlterConfig(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, nil)
	ok(t, n, "", "topic", "create", "t", "--config", "flush.policy=os")
	big := strings.Repeat("x", 4000)
	ok(t, n, "", "produce", "t", "--value", big)

	out := ok(t, n, "", "topic", "alter-config", "t", "--config", "max.message.bytes=2048", "--config", "retention.ms=3600000",
		"--delete-config", "flush.policy")
	want := "altered config of topic t:\n  max.message.bytes=2048\n  retention.ms=3600000\n  flush.policy=always (server default)\n"
	if out != want {
		t.Errorf("alter-config printed %q, want %q", out, want)
	}
	desc := ok(t, n, "", "topic", "describe", "t")
	for _, w := range []string{"max.message.bytes=2048", "retention.ms=3600000", "flush.policy=always"} {
		if !strings.Contains(desc, w) {
			t.Errorf("describe after alter lacks %s:\n%s", w, desc)
		}
	}
	if r := cli(t, n, "", "produce", "t", "--value", big); r.code != 1 || !strings.Contains(r.stderr, "InvalidArgument") {
		t.Errorf("produce of 4000 bytes after max.message.bytes=2048: exit %d, stderr %q; want exit 1, InvalidArgument", r.code, r.stderr)
	}

	for _, c := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"topic", "alter-config", "t", "--config", "retention.ms=soon"}, 1, []string{"retention.ms", "InvalidArgument", "positive integer"}},
		{[]string{"topic", "alter-config", "t", "--config", "colour=blue"}, 1, []string{"unknown key \"colour\"", "valid keys"}},
		{[]string{"topic", "alter-config", "t", "--delete-config", "colour"}, 1, []string{"colour", "valid keys"}},
		{[]string{"topic", "alter-config", "nope", "--config", "retention.ms=1"}, 1, []string{"nope", "NotFound"}},
		{[]string{"topic", "alter-config", "t"}, 2, []string{"nothing to change", "--config", "--delete-config"}},
		{[]string{"topic", "alter-config", "t", "--config", "retention.ms=1", "--delete-config", "retention.ms"}, 2, []string{"not both"}},
		{[]string{"topic", "alter-config", "t", "--config", "retention.ms"}, 2, []string{"key=value"}},
	} {
		r := cli(t, n, "", c.args...)
		if r.code != c.code {
			t.Errorf("tierlog %s: exit %d, want %d (stderr %q)", strings.Join(c.args, " "), r.code, c.code, r.stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("tierlog %s: stderr %q lacks %q", strings.Join(c.args, " "), r.stderr, w)
			}
		}
	}
	if desc2 := ok(t, n, "", "topic", "describe", "t"); !strings.Contains(desc2, "retention.ms=3600000") {
		t.Errorf("a refused alter changed the config:\n%s", desc2)
	}
	// Survives a restart.
	n.signal(syscall.SIGTERM)
	n = startNode(t, dataDir, nil)
	if desc := ok(t, n, "", "topic", "describe", "t"); !strings.Contains(desc, "max.message.bytes=2048") || !strings.Contains(desc, "flush.policy=always") {
		t.Errorf("after a restart the altered config is gone:\n%s", desc)
	}
}

// openPTY opens a pseudo-terminal pair: what is written to master is what
// a program reading slave reads, as from a keyboard.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	num, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", num), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// onTerminal runs the binary against n with a terminal as stdin, typing
// answer on it.
func onTerminal(t *testing.T, n *node, answer string, args ...string) result {
	t.Helper()
	master, slave := openPTY(t)
	if _, err := master.WriteString(answer); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), args...)
	cmd.Env = cleanEnv("TIERLOG_SERVER=" + n.grpcAddr)
	cmd.Stdin = slave
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// TestTopicDeleteConfirms: deleting a topic whose history is in the bucket
// asks on a terminal, refuses without one unless --yes, and says that the
// bucket history goes too; a topic without bucket history is deleted
// without a question.
func TestTopicDeleteConfirms(t *testing.T) {
	m := testutil.StartMinIO(t)
	n := startNode(t, filepath.Join(t.TempDir(), "data"), m.Env(), "--bucket", m.MinIOURL(m.Bucket, "tierlog"))
	for _, name := range []string{"a", "b"} {
		createTiered(t, n, name)
		ok(t, n, joinLines(tierLines(2000)), "produce", name, "--quiet")
	}
	for _, name := range []string{"a", "b"} {
		eventually(t, name+" has segments in the bucket", func() error {
			row, err := tierStatus(t, n, name).partitionRow()
			if err != nil {
				return err
			}
			if segs, err := row.int("REMOTE SEGS"); err != nil || segs == 0 {
				return fmt.Errorf("REMOTE SEGS %q", row["REMOTE SEGS"])
			}
			return nil
		})
	}
	ok(t, n, "", "topic", "create", "local-only", "--config", "remote.storage.enable=false")

	if help := ok(t, n, "", "topic", "delete", "--help"); !strings.Contains(help, "in the bucket") || !strings.Contains(help, "--yes") {
		t.Errorf("topic delete --help does not say the bucket history goes too, or lacks --yes:\n%s", help)
	}
	// No terminal, no --yes: refused, naming --yes and the bucket.
	r := cli(t, n, "", "topic", "delete", "a")
	if r.code != 2 || !strings.Contains(r.stderr, "pass --yes") || !strings.Contains(r.stderr, "segments") || !strings.Contains(r.stderr, m.Bucket) {
		t.Errorf("topic delete a without a terminal: exit %d, stderr %q; want exit 2 naming the bucket history and --yes", r.code, r.stderr)
	}
	// On a terminal: "n" keeps it, "y" deletes it.
	r = onTerminal(t, n, "n\n", "topic", "delete", "a")
	if r.code != 1 || !strings.Contains(r.stderr, "Delete topic a? [y/N]") || !strings.Contains(r.stderr, "not confirmed") {
		t.Errorf("topic delete a answered n: exit %d, stderr %q; want the question and exit 1, not confirmed", r.code, r.stderr)
	}
	if out := ok(t, n, "", "topic", "list"); !strings.Contains(out, "a ") {
		t.Fatalf("topic a is gone after a refused delete:\n%s", out)
	}
	if r = onTerminal(t, n, "y\n", "topic", "delete", "a"); r.code != 0 || r.stdout != "deleted topic a\n" {
		t.Errorf("topic delete a answered y: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// --yes: no question.
	if out := ok(t, n, "", "topic", "delete", "b", "--yes"); out != "deleted topic b\n" {
		t.Errorf("topic delete b --yes: %q", out)
	}
	// Nothing in the bucket: no question.
	if out := ok(t, n, "", "topic", "delete", "local-only"); out != "deleted topic local-only\n" {
		t.Errorf("topic delete local-only: %q", out)
	}
	if out := ok(t, n, "", "topic", "list"); strings.Contains(out, "a ") || strings.Contains(out, "b ") || strings.Contains(out, "local-only") {
		t.Errorf("topics left after the deletes:\n%s", out)
	}
}
