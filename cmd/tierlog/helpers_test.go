package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tierlog/tierlog/internal/testutil"
)

var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tierlog-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// binary builds the tierlog binary once per test run and returns its path.
func binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(binDir, "tierlog")
	buildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// cleanEnv is the test process environment without TIERLOG_* variables, so
// the developer's shell cannot change what the tests see.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIERLOG_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// eventually polls cond until it returns nil, failing with cond's last
// error. The timeout only bounds a hung test; nothing depends on how fast
// cond becomes true.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	last := &lastError{}
	testutil.Eventually(t, 60*time.Second, func() bool {
		last.err = cond()
		return last.err == nil
	}, "%s: %v", what, last)
}

// lastError prints the error held when the message is formatted.
type lastError struct{ err error }

func (l *lastError) String() string { return fmt.Sprint(l.err) }

// node is a `tierlog serve` child process.
type node struct {
	t         testing.TB
	cmd       *exec.Cmd
	stderr    *testutil.SyncBuffer
	exited    chan struct{}
	waitErr   error
	grpcAddr  string
	httpAddr  string
	kafkaAddr string
}

// startNode runs `tierlog serve` on ephemeral loopback ports and waits until
// it has written its ready file.
func startNode(t testing.TB, dataDir string, env []string, args ...string) *node {
	t.Helper()
	n, ready := launchNode(t, dataDir, env, args...)
	ready()
	return n
}

// launchNode is startNode without the wait (see launchServe).
func launchNode(t testing.TB, dataDir string, env []string, args ...string) (*node, func()) {
	t.Helper()
	return launchNodeWith(t, dataDir, env, nil, args...)
}

// launchNodeWith is launchNode with prep (nil: none) applied to the
// command before it starts (e.g. to run it under another group id).
func launchNodeWith(t testing.TB, dataDir string, env []string, prep func(*exec.Cmd), args ...string) (*node, func()) {
	t.Helper()
	all := append([]string{"--data-dir", dataDir, "--grpc-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--log-level", "debug"}, args...)
	return launchServeWith(t, "", env, prep, all...)
}

// startServe runs `tierlog serve args...` in the working directory dir ("":
// the test's) with a ready file added, and waits until it has written it.
func startServe(t testing.TB, dir string, env []string, args ...string) *node {
	t.Helper()
	n, ready := launchServe(t, dir, env, args...)
	ready()
	return n
}

// launchServe starts `tierlog serve args...` and returns at once, with a
// function that waits until the node has written its ready file (a
// cluster's nodes are all launched before any can be ready).
func launchServe(t testing.TB, dir string, env []string, args ...string) (*node, func()) {
	t.Helper()
	return launchServeWith(t, dir, env, nil, args...)
}

// launchServeWith is launchServe with prep (nil: none) applied to the
// command before it starts.
func launchServeWith(t testing.TB, dir string, env []string, prep func(*exec.Cmd), args ...string) (*node, func()) {
	t.Helper()
	readyPath := filepath.Join(t.TempDir(), "ready.json")
	all := append([]string{"serve", "--ready-file", readyPath}, args...)
	n := &node{t: t, cmd: exec.Command(binary(t), all...), stderr: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	n.cmd.Dir = dir
	n.cmd.Env = cleanEnv(env...)
	n.cmd.Stdout = n.stderr
	n.cmd.Stderr = n.stderr
	if prep != nil {
		prep(n.cmd)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start tierlog serve: %v", err)
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-n.exited:
		default:
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
		if t.Failed() {
			t.Logf("tierlog serve output:\n%s", n.stderr.String())
		}
	})
	return n, func() { n.waitReady(readyPath) }
}

// waitReady waits for the ready file at readyPath and takes the node's
// addresses from it.
func (n *node) waitReady(readyPath string) {
	t := n.t
	t.Helper()
	var rf readyFile
	eventually(t, "tierlog serve writes its ready file", func() error {
		select {
		case <-n.exited:
			t.Fatalf("tierlog serve exited before ready: %v\n%s", n.waitErr, n.stderr.String())
		default:
		}
		data, err := os.ReadFile(readyPath)
		if err != nil {
			return err
		}
		return json.Unmarshal(data, &rf)
	})
	if rf.PID != n.cmd.Process.Pid {
		t.Fatalf("ready file pid %d, want %d", rf.PID, n.cmd.Process.Pid)
	}
	n.grpcAddr, n.httpAddr, n.kafkaAddr = rf.GRPCAddr, rf.HTTPAddr, rf.KafkaAddr
}

// signal sends sig and returns the exit code once the process has exited.
func (n *node) signal(sig syscall.Signal) int {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("signal %v: %v", sig, err)
	}
	<-n.exited
	return n.cmd.ProcessState.ExitCode()
}

// result is one finished CLI invocation.
type result struct {
	stdout, stderr string
	code           int
}

// cli runs the tierlog binary as a client of n (nil: no --server) with the
// given stdin and waits for it.
func cli(t testing.TB, n *node, stdin string, args ...string) result {
	t.Helper()
	var env []string
	if n != nil {
		env = append(env, "TIERLOG_SERVER="+n.grpcAddr)
	}
	return runCLI(t, env, stdin, args...)
}

// runCLI runs the tierlog binary with the extra environment env (a
// server's address, bucket credentials) and waits for it.
func runCLI(t testing.TB, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = cleanEnv(env...)
	return runCmd(t, cmd, stdin)
}

// runCmd runs cmd, a tierlog command line, with the given stdin and waits
// for it.
func runCmd(t testing.TB, cmd *exec.Cmd, stdin string) result {
	t.Helper()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run tierlog %v: %v", cmd.Args[1:], err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// ok runs cli and fails the test unless it exits 0.
func ok(t testing.TB, n *node, stdin string, args ...string) string {
	t.Helper()
	return succeeded(t, cli(t, n, stdin, args...), args)
}

// bucketOK is ok for a command that needs no server, with the extra
// environment env (bucket credentials).
func bucketOK(t testing.TB, env []string, args ...string) string {
	t.Helper()
	return succeeded(t, runCLI(t, env, "", args...), args)
}

// succeeded returns what the command printed, failing the test unless it
// exited 0.
func succeeded(t testing.TB, r result, args []string) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("tierlog %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// writeFile writes data to the file at path (mode 0644) or fails the test.
func writeFile[T ~string | ~[]byte](t testing.TB, path string, data T) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the content of the file at path or fails the test.
func readFile(t testing.TB, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}
