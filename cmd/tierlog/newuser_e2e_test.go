package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestNewUserMessages runs the command lines a new user got wrong and
// checks that each message says what is wrong and what to do.
func TestNewUserMessages(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	_, grpcPort, _ := net.SplitHostPort(n.grpcAddr)
	cases := []struct {
		args []string
		code int
		want []string
		not  []string
	}{
		{[]string{"produce"}, 2, []string{"missing TOPIC", "tierlog produce TOPIC"}, []string{"arg(s)"}},
		{[]string{"consume"}, 2, []string{"missing TOPIC", "tierlog consume TOPIC"}, []string{"arg(s)"}},
		{[]string{"topic", "create"}, 2, []string{"missing NAME", "tierlog topic create NAME"}, []string{"arg(s)"}},
		{[]string{"topic", "create", ""}, 2, []string{"NAME is empty"}, []string{"create topic : create topic"}},
		{[]string{"topic", "delete", "a", "b"}, 2, []string{`unexpected argument "b"`, "takes only NAME"}, []string{"arg(s)"}},
		{[]string{"tier", "status", "a", "b"}, 2, []string{`unexpected argument "b"`, "at most TOPIC"}, []string{"arg(s)"}},
		{[]string{"bench", "consume", "a", "--topic", "b"}, 2, []string{"disagree"}, nil},
		// --server pointed at the HTTP port: not the gRPC port, and which is.
		{[]string{"topic", "list", "--server", n.httpAddr}, 1, []string{"does not speak gRPC", "--grpc-addr", "7070", "--http-addr"}, nil},
		{[]string{"serve", "--server", n.grpcAddr}, 2, []string{"--server is for client commands", "--grpc-addr"}, nil},
		{[]string{"serve", "--cache-bytes", "lots"}, 2, []string{"--cache-bytes", `"lots" is not a byte size`, "256MiB"}, nil},
	}
	for _, c := range cases {
		r := cli(t, nil, "", c.args...)
		if r.code != c.code {
			t.Errorf("tierlog %s: exit %d, want %d (stderr %q)", strings.Join(c.args, " "), r.code, c.code, r.stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("tierlog %s: stderr %q lacks %q", strings.Join(c.args, " "), r.stderr, w)
			}
		}
		for _, w := range c.not {
			if strings.Contains(r.stderr, w) {
				t.Errorf("tierlog %s: stderr %q still says %q", strings.Join(c.args, " "), r.stderr, w)
			}
		}
	}

	// A --server without a port gets 7070, not gRPC's 443: "localhost"
	// names a port in the message, and the node's own host with its port
	// still works when given.
	r := cli(t, nil, "", "topic", "list", "--server", "localhost")
	if r.code != 1 || !strings.Contains(r.stderr, "localhost:7070") {
		t.Errorf("--server localhost: exit %d, stderr %q; want it to dial localhost:7070", r.code, r.stderr)
	}
	ok(t, nil, "", "topic", "create", "q", "--server", "127.0.0.1:"+grpcPort)

	// --quiet prints nothing on success.
	if out := ok(t, n, "a\nb\n", "produce", "q", "--quiet"); out != "" {
		t.Errorf("produce --quiet printed %q", out)
	}
	if out := ok(t, n, "", "consume", "q", "--max", "2"); out != "a\nb\n" {
		t.Errorf("consume after produce --quiet: %q", out)
	}

	// bench takes the topic as an argument; --topic still works, deprecated.
	ok(t, n, "", "bench", "produce", "bt", "--records", "10", "--batch", "5", "--record-size", "1KiB")
	if out := ok(t, n, "", "bench", "consume", "bt", "--max-bytes", "64KiB"); !strings.Contains(out, "consumed 10 records") {
		t.Errorf("bench consume bt: %s", out)
	}
	r = cli(t, n, "", "bench", "consume", "--topic", "bt")
	if r.code != 0 || !strings.Contains(r.stdout, "consumed 10 records") || !strings.Contains(r.stderr, "deprecated") {
		t.Errorf("bench consume --topic bt: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestHelpText checks the help a new user reads: the root lists --server,
// no flag shows two defaults, byte sizes show as sizes.
func TestHelpText(t *testing.T) {
	root := ok(t, nil, "", "--help")
	if !strings.Contains(root, "--server") || !strings.Contains(root, "version") {
		t.Errorf("root help lacks --server or the version command:\n%s", root)
	}
	twoDefaults := regexp.MustCompile(`\(default[^)]*\).*\(default`)
	for _, cmd := range [][]string{{"serve"}, {"produce"}, {"consume"}, {"topic", "create"}, {"topic", "describe"}, {"tier", "status"}, {"bench", "produce"}, {"bench", "consume"}} {
		out := ok(t, nil, "", append(cmd, "--help")...)
		for _, line := range strings.Split(out, "\n") {
			if twoDefaults.MatchString(line) {
				t.Errorf("tierlog %s --help: two defaults in %q", strings.Join(cmd, " "), line)
			}
		}
		if !strings.Contains(out, "--server") && cmd[0] != "serve" {
			t.Errorf("tierlog %s --help lacks --server", strings.Join(cmd, " "))
		}
		if cmd[0] == "serve" && strings.Contains(out, "--server") {
			t.Errorf("serve --help offers --server:\n%s", out)
		}
	}
	serve := ok(t, nil, "", "serve", "--help")
	for _, w := range []string{"--cache-bytes size", "(default 256MiB)", "--fetch-budget-bytes size", "--local-disk-max-bytes size", "--upload-rate size", "--shutdown-timeout duration", "--shutdown-upload-timeout duration", "--tiering-concurrency int"} {
		if !strings.Contains(serve, w) {
			t.Errorf("serve --help lacks %q", w)
		}
	}
	if produce := ok(t, nil, "", "produce", "--help"); !strings.Contains(produce, "--batch-bytes size") || !strings.Contains(produce, "(default 512KiB)") {
		t.Errorf("produce --help does not show --batch-bytes as a size:\n%s", produce)
	}
}

// TestPrintConfigSizesAndBucket checks that byte settings take units from
// flags, env and a file alike, and --print-config names the bucket a start
// would open.
func TestPrintConfigSizesAndBucket(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tierlog.yaml")
	if err := os.WriteFile(cfgFile, []byte("remote_read_rate: 10MB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "serve", "--print-config", "--data-dir", filepath.Join(dir, "data"),
		"--cache-bytes", "1GiB", "--local-disk-max-bytes", "-1", "--config", cfgFile)
	cmd.Env = cleanEnv("TIERLOG_FETCH_BUDGET_BYTES=64MiB")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("serve --print-config: %v", err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("print-config output: %v\n%s", err, out)
	}
	want := map[string]string{
		"cache_bytes": "1GiB", "fetch_budget_bytes": "64MiB", "remote_read_rate": "10000000", "local_disk_max_bytes": "-1",
		"bucket": "file://" + filepath.Join(dir, "data", "bucket"),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("print-config %s = %v, want %s\n%s", k, got[k], v, out)
		}
	}
}

// TestVersion checks that `tierlog version` reports the binary's build.
func TestVersion(t *testing.T) {
	out := ok(t, nil, "", "version")
	if !strings.HasPrefix(out, "tierlog ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("tierlog version: %q", out)
	}
	line := versionLine(&debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}})
	if line != "tierlog v1.2.3 revision abc123+dirty (2026-01-02T03:04:05Z) go1.99" {
		t.Errorf("versionLine: %q", line)
	}
}
