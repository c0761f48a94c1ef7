package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 6 item 9: a second `tierlog serve` on a data directory in use
// exits at start, naming the directory and the process holding it.
func TestSecondServeOnDataDirFails(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	first := startNode(t, dataDir, nil, "--bucket", "none")
	ok(t, first, "", "topic", "create", "t")

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), "serve", "--data-dir", dataDir, "--bucket", "none",
		"--grpc-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--ready-file", filepath.Join(dir, "ready.json"))
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ctx.Err() != nil {
		t.Fatalf("second serve on %s: %v, want a non-zero exit\n%s", dataDir, err, &out)
	}
	want := dataDir + " is in use by process " + strconv.Itoa(first.cmd.Process.Pid)
	var line string
	for l := range strings.Lines(out.String()) {
		if strings.Contains(l, want) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("second serve's output does not say %q:\n%s", want, &out)
	}
	t.Logf("second serve: %s", strings.TrimSpace(line))
	ok(t, first, "", "topic", "describe", "t") // the first server is untouched
}
