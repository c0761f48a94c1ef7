package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tierlog/tierlog/internal/testutil"
)

// testLines are values that are easy to get wrong: empty, spaces, tabs,
// quotes and backslashes, JSON-looking text, HTML characters, multi-byte
// UTF-8 and a carriage return (kept as part of the value).
func testLines(n int) []string {
	special := []string{"", "  leading and trailing  ", "tab\there", `quote " and \ backslash`,
		`{"not":"json"}`, "<a href='x'>&amp;</a>", "héllo wörld ✓ 日本", "cr at end\r"}
	lines := make([]string, n)
	for i := range lines {
		if i < len(special) {
			lines[i] = special[i]
		} else {
			lines[i] = fmt.Sprintf("record %06d %s", i, strings.Repeat("x", i%37))
		}
	}
	return lines
}

func joinLines(lines []string) string { return strings.Join(lines, "\n") + "\n" }

// jsonRec mirrors one line of `consume --format json`.
type jsonRec struct {
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Timestamp string  `json:"timestamp"`
	Key       *string `json:"key"`
	Value     *string `json:"value"`
	Headers   []struct {
		Key   string  `json:"key"`
		Value *string `json:"value"`
	} `json:"headers"`
}

func parseJSONLines(t *testing.T, out string) []jsonRec {
	t.Helper()
	var recs []jsonRec
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var r jsonRec
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("json line %d %q: %v", i, line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestEndToEnd drives a real server through the CLI: topics, produce,
// consume in both formats, follow, a crash (kill -9) and restart, and a
// clean SIGTERM shutdown.
func TestEndToEnd(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, nil)

	// Topics.
	if out := ok(t, n, "", "topic", "create", "logs"); !strings.Contains(out, "created topic logs with 1 partitions") {
		t.Errorf("topic create: %q", out)
	}
	ok(t, n, "", "topic", "create", "multi", "--partitions", "3", "--config", "flush.policy=os")
	if out := ok(t, n, "", "topic", "list"); !strings.Contains(out, "logs ") || !strings.Contains(out, "multi ") {
		t.Errorf("topic list:\n%s", out)
	}
	desc := ok(t, n, "", "topic", "describe", "multi")
	for _, w := range []string{"Topic: multi", "Partitions: 3", "flush.policy=os", "PARTITION"} {
		if !strings.Contains(desc, w) {
			t.Errorf("topic describe lacks %q:\n%s", w, desc)
		}
	}
	r := cli(t, n, "", "topic", "create", "logs")
	if r.code != 1 || !strings.Contains(r.stderr, "AlreadyExists") {
		t.Errorf("create existing topic: exit %d, stderr %q; want exit 1 naming AlreadyExists", r.code, r.stderr)
	}

	// Produce from stdin, one record per line; each gets "partition offset".
	lines := testLines(1000)
	input := joinLines(lines)
	out := ok(t, n, input, "produce", "logs")
	produced := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(produced) != len(lines) {
		t.Fatalf("produce printed %d lines, want %d", len(produced), len(lines))
	}
	for i, p := range produced {
		if p != fmt.Sprintf("0 %d", i) {
			t.Fatalf("produce line %d: %q, want %q", i, p, fmt.Sprintf("0 %d", i))
		}
	}
	if out := ok(t, n, "", "produce", "logs", "--value", "single", "--key", "k1", "--header", "h=v", "--compression", "zstd"); out != "0 1000\n" {
		t.Errorf("produce --value: %q, want \"0 1000\\n\"", out)
	}
	lines = append(lines, "single")
	input = joinLines(lines)

	// Consume text: byte-identical to the input, and the same on every run.
	text := ok(t, n, "", "consume", "logs")
	if text != input {
		t.Fatalf("consume text differs from produced input:\n got %d bytes\nwant %d bytes", len(text), len(input))
	}
	if again := ok(t, n, "", "consume", "logs", "--from-beginning"); again != text {
		t.Fatal("a second consume printed different bytes")
	}

	// Consume JSON: one object per record with the fields named in help.
	js := ok(t, n, "", "consume", "logs", "--format", "json")
	recs := parseJSONLines(t, js)
	if len(recs) != len(lines) {
		t.Fatalf("json: %d records, want %d", len(recs), len(lines))
	}
	for i, r := range recs {
		if r.Partition != 0 || r.Offset != int64(i) || r.Value == nil || *r.Value != lines[i] || r.Timestamp == "" {
			t.Fatalf("json record %d: %+v, want partition 0 offset %d value %q", i, r, i, lines[i])
		}
	}
	last := recs[len(recs)-1]
	if last.Key == nil || *last.Key != "k1" || len(last.Headers) != 1 || last.Headers[0].Key != "h" || *last.Headers[0].Value != "v" {
		t.Errorf("json last record: %+v, want key k1 and header h=v", last)
	}
	if recs[0].Key != nil {
		t.Errorf("json first record key %q, want null", *recs[0].Key)
	}
	if again := ok(t, n, "", "consume", "logs", "--format", "json"); again != js {
		t.Fatal("a second json consume printed different bytes")
	}

	// Start positions and limits.
	if out := ok(t, n, "", "consume", "logs", "--offset", "998", "--max", "2"); out != joinLines(lines[998:1000]) {
		t.Errorf("--offset 998 --max 2: %q", out)
	}
	if out := ok(t, n, "", "consume", "logs", "--since", "2000-01-01T00:00:00Z", "--max", "1"); out != joinLines(lines[:1]) {
		t.Errorf("--since in the past: %q, want the first record", out)
	}
	if out := ok(t, n, "", "consume", "logs", "--since", "2999-01-01T00:00:00Z"); out != "" {
		t.Errorf("--since in the future: %q, want nothing", out)
	}

	// Several partitions: keyed records land by key; output goes partition
	// by partition, each in offset order, and is stable across runs.
	var multiIn []string
	for k := range 3 {
		var vs []string
		for i := range 50 {
			vs = append(vs, fmt.Sprintf("key%d value %d", k, i))
		}
		ok(t, n, joinLines(vs), "produce", "multi", "--key", fmt.Sprintf("key%d", k), "--quiet")
		multiIn = append(multiIn, vs...)
	}
	ok(t, n, joinLines(multiIn[:10]), "produce", "multi", "--partition", "2")
	multiOut := ok(t, n, "", "consume", "multi", "--format", "json")
	if again := ok(t, n, "", "consume", "multi", "--format", "json"); again != multiOut {
		t.Fatal("consume of 3 partitions printed different bytes on a second run")
	}
	mrecs := parseJSONLines(t, multiOut)
	if len(mrecs) != 160 {
		t.Fatalf("multi: %d records, want 160", len(mrecs))
	}
	for i := 1; i < len(mrecs); i++ {
		a, b := mrecs[i-1], mrecs[i]
		if b.Partition < a.Partition || (b.Partition == a.Partition && b.Offset != a.Offset+1) {
			t.Fatalf("multi records out of order at %d: %+v then %+v", i, a, b)
		}
	}
	keyPartition := map[string]int32{}
	for _, r := range mrecs {
		if r.Key == nil {
			continue
		}
		if p, seen := keyPartition[*r.Key]; seen && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d", *r.Key, p, r.Partition)
		}
		keyPartition[*r.Key] = r.Partition
	}
	if out := ok(t, n, "", "consume", "multi", "--partition", "2", "--offset", "0", "--max", "1000"); !strings.Contains(out, multiIn[9]+"\n") {
		t.Errorf("consume --partition 2 lacks the records produced to it:\n%s", out)
	}

	// Follow: a record produced after the follower started is printed.
	follow := exec.Command(binary(t), "consume", "logs", "--follow", "--offset", fmt.Sprint(len(lines)))
	follow.Env = cleanEnv("TIERLOG_SERVER=" + n.grpcAddr)
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var followErr testutil.SyncBuffer
	follow.Stderr = &followErr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	ok(t, n, "", "produce", "logs", "--value", "late record")
	got, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || got != "late record\n" {
		t.Fatalf("follow read %q, %v; want \"late record\\n\" (stderr: %s)", got, err, followErr.String())
	}
	if err := follow.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := follow.Wait(); err != nil {
		t.Errorf("follow after SIGINT: %v (stderr %s), want exit 0", err, followErr.String())
	}
	lines = append(lines, "late record")
	input = joinLines(lines)
	jsBefore := ok(t, n, "", "consume", "logs", "--format", "json")
	multiBefore := ok(t, n, "", "consume", "multi", "--format", "json")

	// Crash: kill -9, restart on the same data dir, read the same bytes.
	if code := n.signal(syscall.SIGKILL); code != -1 {
		t.Fatalf("kill -9: exit code %d, want -1 (killed by signal)", code)
	}
	n = startNode(t, dataDir, nil)
	if out := ok(t, n, "", "consume", "logs"); out != input {
		t.Fatalf("after kill -9 and restart, consume text differs (%d bytes, want %d)", len(out), len(input))
	}
	if out := ok(t, n, "", "consume", "logs", "--format", "json"); out != jsBefore {
		t.Fatal("after restart, consume json of logs differs")
	}
	if out := ok(t, n, "", "consume", "multi", "--format", "json"); out != multiBefore {
		t.Fatal("after restart, consume json of multi differs")
	}

	// Delete, then errors name the topic.
	ok(t, n, "", "topic", "delete", "multi")
	r = cli(t, n, "", "consume", "multi")
	if r.code != 1 || !strings.Contains(r.stderr, "NotFound") {
		t.Errorf("consume deleted topic: exit %d, stderr %q; want 1 and NotFound", r.code, r.stderr)
	}

	// Clean shutdown.
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0\n%s", code, n.stderr.String())
	}
	for _, w := range []string{"shutting down", "gRPC server stopped", "shutdown complete"} {
		if !strings.Contains(n.stderr.String(), w) {
			t.Errorf("shutdown log lacks %q:\n%s", w, n.stderr.String())
		}
	}
}

// TestProduceManyLines pipes 100,000 lines through produce and reads them
// back; batching makes this take a hundred calls, not a hundred thousand.
func TestProduceManyLines(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	ok(t, n, "", "topic", "create", "bulk")
	lines := make([]string, 100_000)
	for i := range lines {
		lines[i] = fmt.Sprintf("line %d", i)
	}
	input := joinLines(lines)
	out := ok(t, n, input, "produce", "bulk")
	if got := strings.Count(out, "\n"); got != len(lines) {
		t.Fatalf("produce printed %d lines, want %d", got, len(lines))
	}
	if !strings.HasSuffix(out, "0 99999\n") {
		t.Errorf("last produce line: %q", out[len(out)-20:])
	}
	if got := ok(t, n, "", "consume", "bulk"); got != input {
		t.Fatalf("consume of 100,000 lines differs from the input (%d bytes, want %d)", len(got), len(input))
	}
	if out := ok(t, n, "", "produce", "bulk", "--quiet", "--compression", "lz4", "--batch", "7"); out != "" {
		t.Errorf("produce --quiet of empty stdin: %q", out)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	// The --server flag works as well as TIERLOG_SERVER.
	ok(t, nil, "", "topic", "create", "m", "--server", n.grpcAddr)
	ok(t, nil, "a\nb\n", "produce", "m", "--server", n.grpcAddr)
	base := "http://" + n.httpAddr
	for _, c := range []struct{ path, want string }{
		{"/healthz", "ok"},
		{"/readyz", "ready"},
		{"/metrics", "go_goroutines"},
		{"/metrics", "process_cpu_seconds_total"},
		// The broker's metrics land on the same registry.
		{"/metrics", "tierlog_hot_records_in_total"},
	} {
		code, body, err := httpGet(base + c.path)
		if err != nil || code != 200 || !strings.Contains(body, c.want) {
			t.Errorf("GET %s: %d %v, body lacks %q:\n%.300s", c.path, code, err, c.want, body)
		}
	}
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// TestConfigPrecedence checks flag > env > YAML > default with the real
// binary, through --print-config and through a running server's topic
// defaults.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tierlog.yaml")
	yaml := "data_dir: /from/file\ngrpc_addr: 127.0.0.1:1001\nhttp_addr: 127.0.0.1:1002\nlog_level: warn\n" +
		"topic_defaults:\n  segment.bytes: 111111\n  retention.ms: 222222\n  flush.policy: os\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "serve", "--print-config", "--http-addr", "127.0.0.1:3002", "--default", "flush.policy=interval")
	cmd.Env = cleanEnv("TIERLOG_CONFIG="+cfgPath, "TIERLOG_GRPC_ADDR=127.0.0.1:2001", "TIERLOG_KAFKA_ADDR=127.0.0.1:0", "TIERLOG_HTTP_ADDR=127.0.0.1:2002",
		"TIERLOG_DEFAULT_RETENTION_MS=333333", "TIERLOG_DEFAULT_FLUSH_POLICY=always")
	outB, err := cmd.Output()
	if err != nil {
		t.Fatalf("serve --print-config: %v", err)
	}
	out := string(outB)
	for _, w := range []string{
		"data_dir: /from/file\n",           // file over default
		"grpc_addr: 127.0.0.1:2001\n",      // env over file
		"http_addr: 127.0.0.1:3002\n",      // flag over env over file
		"log_level: warn\n",                // file
		"log_format: text\n",               // default
		"segment.bytes: \"111111\"\n",      // file
		"retention.ms: \"333333\"\n",       // env over file
		"flush.policy: interval\n",         // flag over env over file
		"max.message.bytes: \"1048588\"\n", // broker default
	} {
		if !strings.Contains(out, w) {
			t.Errorf("--print-config lacks %q:\n%s", w, out)
		}
	}

	// Invalid settings are usage errors (exit 2) naming the source.
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--default", "segment.bytes=lots"}, nil, "segment.bytes"},
		{[]string{"--default", "no.such.key=1"}, nil, "no.such.key"},
		{nil, []string{"TIERLOG_LOG_LEVEL=loud"}, "TIERLOG_LOG_LEVEL"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, nil, "missing.yaml"},
	} {
		cmd := exec.Command(binary(t), append([]string{"serve", "--print-config"}, c.args...)...)
		cmd.Env = cleanEnv(c.env...)
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("serve %v %v: exit %d, output %q; want exit 2 naming %q", c.args, c.env, cmd.ProcessState.ExitCode(), out, c.want)
		}
	}

	// A running server applies its defaults to new topics; the topic's own
	// config wins over them.
	n := startNode(t, filepath.Join(dir, "data"), []string{"TIERLOG_DEFAULT_RETENTION_MS=444444"}, "--default", "segment.bytes=555555")
	ok(t, n, "", "topic", "create", "t1", "--config", "segment.bytes=666666")
	desc := ok(t, n, "", "topic", "describe", "t1")
	for _, w := range []string{"retention.ms=444444", "segment.bytes=666666"} {
		if !strings.Contains(desc, w) {
			t.Errorf("describe lacks %q:\n%s", w, desc)
		}
	}
}

// TestErrorsAndExitCodes checks that server errors exit 1 with the status
// message and usage errors exit 2.
func TestErrorsAndExitCodes(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	ok(t, n, "", "topic", "create", "t")
	ok(t, n, "", "produce", "t", "--value", "a")
	cases := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"produce", "nope", "--value", "x"}, 1, []string{"produce to nope", "NotFound"}},
		{[]string{"consume", "t", "--offset", "99"}, 1, []string{"OutOfRange", "99"}},
		{[]string{"consume", "t", "--partition", "5"}, 1, []string{"InvalidArgument"}},
		{[]string{"topic", "create", "bad/name"}, 1, []string{"InvalidArgument"}},
		{[]string{"topic", "create", "t2", "--config", "segment.bytes=huge"}, 1, []string{"segment.bytes"}},
		{[]string{"topic", "describe", "nope"}, 1, []string{"NotFound"}},
		{[]string{"topic", "create"}, 2, []string{"missing NAME", "--help"}},
		{[]string{"topic", "frobnicate"}, 2, []string{"unknown command"}},
		{[]string{"frobnicate"}, 2, []string{"unknown command"}},
		{[]string{"consume", "t", "--bogus"}, 2, []string{"unknown flag"}},
		{[]string{"consume", "t", "--offset", "1", "--since", "2020-01-01T00:00:00Z"}, 2, []string{"offset", "since"}},
		{[]string{"consume", "t", "--since", "yesterday"}, 2, []string{"RFC 3339"}},
		{[]string{"consume", "t", "--format", "xml"}, 2, []string{"text, json"}},
		{[]string{"produce", "t", "--compression", "brotli"}, 2, []string{"none, gzip, snappy, lz4, zstd"}},
		{[]string{"topic", "create", "x", "--partitions", "0"}, 2, []string{"at least 1"}},
	}
	for _, c := range cases {
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

	// Nothing listening: exit 1 saying the server cannot be reached.
	n.signal(syscall.SIGTERM)
	r := cli(t, n, "", "topic", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach server "+n.grpcAddr) {
		t.Errorf("topic list with the server gone: exit %d, stderr %q", r.code, r.stderr)
	}
	if cli(t, nil, "", "--help").code != 0 {
		t.Error("--help does not exit 0")
	}
}

// TestShutdownEndsFollowers checks that SIGTERM ends open follow streams
// instead of waiting for them: with a shutdown timeout far longer than the
// test, the server can only exit if the streams were ended. The follower is
// told the server is unavailable and exits 1.
func TestShutdownEndsFollowers(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil, "--shutdown-timeout", "1h")
	ok(t, n, "", "topic", "create", "t", "--partitions", "2")
	// From the beginning: --follow alone starts at the end, which the
	// produce below may beat, and the follower would wait for ever.
	follow := exec.Command(binary(t), "consume", "t", "--follow", "--from-beginning")
	follow.Env = cleanEnv("TIERLOG_SERVER=" + n.grpcAddr)
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var followErr testutil.SyncBuffer
	follow.Stderr = &followErr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	// Once a record has come through, the follower's streams are open.
	ok(t, n, "", "produce", "t", "--value", "x", "--partition", "1")
	if got, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || got != "x\n" {
		t.Fatalf("follow read %q, %v (stderr %s)", got, err, followErr.String())
	}
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM with a follower: exit %d\n%s", code, n.stderr.String())
	}
	err = follow.Wait()
	if follow.ProcessState.ExitCode() != 1 || !strings.Contains(followErr.String(), "Unavailable") {
		t.Errorf("follower after server shutdown: %v, stderr %q; want exit 1 naming Unavailable", err, followErr.String())
	}
}
