package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/testutil"
)

// followLines runs `tierlog consume` with args against n in the background
// and returns its output lines as they arrive; it is interrupted (SIGINT,
// the normal end of a follow) when the test ends.
func followLines(t *testing.T, n *node, args ...string) <-chan string {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"consume"}, args...)...)
	cmd.Env = cleanEnv("TIERLOG_SERVER=" + n.grpcAddr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		br := bufio.NewReader(stdout)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimSuffix(l, "\n")
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		for range lines {
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("consume %v after SIGINT: %v, want exit 0 (stderr %s)", args, err, stderr.String())
		}
	})
	return lines
}

// firstFollowed produces "new N" records to topic until the follower has
// printed a line, and returns that line. The follower's stream may open
// after any number of them, so the test cannot know which one it sees
// first - only that it must be a new one, never history.
func firstFollowed(t *testing.T, n *node, lines <-chan string, topic string) string {
	t.Helper()
	var first string
	i := 0
	eventually(t, "the follower prints a record produced after it started", func() error {
		ok(t, n, "", "produce", topic, "--value", fmt.Sprintf("new %d", i), "--quiet")
		i++
		select {
		case l, open := <-lines:
			if !open {
				t.Fatal("the follower exited")
			}
			first = l
			return nil
		case <-time.After(100 * time.Millisecond):
			return fmt.Errorf("nothing printed after %d records", i)
		}
	})
	return first
}

// TestConsumeStartPositions: --follow alone starts at the end (tail -f),
// --offset end and -N, and --since with a duration and a date.
func TestConsumeStartPositions(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	ok(t, n, "", "topic", "create", "hist")
	ok(t, n, "", "topic", "create", "three", "--partitions", "3")
	history := testLines(20)[8:] // without the empty line, so every line is a record we can see
	ok(t, n, joinLines(history), "produce", "hist", "--quiet")

	// --follow alone: only records appended after it started.
	if first := firstFollowed(t, n, followLines(t, n, "hist", "--follow"), "hist"); !strings.HasPrefix(first, "new ") {
		t.Errorf("consume --follow printed %q first, want a record produced after it started (not history)", first)
	}
	// --follow --from-beginning still prints the history first.
	fb := followLines(t, n, "hist", "--follow", "--from-beginning")
	select {
	case l := <-fb:
		if l != history[0] {
			t.Errorf("consume --follow --from-beginning printed %q first, want %q", l, history[0])
		}
	case <-time.After(time.Minute):
		t.Error("consume --follow --from-beginning printed nothing")
	}

	end := len(history) + 100 // at most; "new N" records were added
	all := strings.Split(strings.TrimSuffix(ok(t, n, "", "consume", "hist"), "\n"), "\n")
	if len(all) > end || len(all) < len(history)+1 {
		t.Fatalf("hist holds %d records, want %d history and at least one new", len(all), len(history))
	}
	// --offset end without --follow: nothing, exit 0.
	if out := ok(t, n, "", "consume", "hist", "--offset", "end"); out != "" {
		t.Errorf("consume --offset end: %q, want nothing", out)
	}
	// --offset end --follow: like --follow alone.
	if first := firstFollowed(t, n, followLines(t, n, "hist", "--follow", "--offset", "end"), "hist"); !strings.HasPrefix(first, "new ") {
		t.Errorf("consume --follow --offset end printed %q first, want a new record", first)
	}
	all = strings.Split(strings.TrimSuffix(ok(t, n, "", "consume", "hist"), "\n"), "\n")
	// --offset -N: the last N; more than there are: all of them.
	if out := ok(t, n, "", "consume", "hist", "--offset", "-3"); out != joinLines(all[len(all)-3:]) {
		t.Errorf("consume --offset -3: %q, want the last 3 %q", out, all[len(all)-3:])
	}
	if out := ok(t, n, "", "consume", "hist", "--offset", fmt.Sprint(-len(all)-50)); out != joinLines(all) {
		t.Errorf("consume --offset -%d: %d bytes, want all %d records", len(all)+50, len(out), len(all))
	}
	if out := ok(t, n, "", "consume", "hist", "--offset", "beginning", "--max", "1"); out != joinLines(history[:1]) {
		t.Errorf("consume --offset beginning --max 1: %q, want %q", out, history[0])
	}
	// -N counts per partition, as kcat's -o -N does.
	for p := range 3 {
		var vs []string
		for i := range 5 {
			vs = append(vs, fmt.Sprintf("p%d-%d", p, i))
		}
		ok(t, n, joinLines(vs), "produce", "three", "--partition", fmt.Sprint(p), "--quiet")
	}
	if out := ok(t, n, "", "consume", "three", "--offset", "-2"); out != joinLines([]string{"p0-3", "p0-4", "p1-3", "p1-4", "p2-3", "p2-4"}) {
		t.Errorf("consume three --offset -2: %q, want the last 2 of each partition", out)
	}
	if out := ok(t, n, "", "consume", "three", "--partition", "1", "--offset", "-1"); out != "p1-4\n" {
		t.Errorf("consume three --partition 1 --offset -1: %q, want p1-4", out)
	}

	// --since with a duration and a date: records stamped 3 days and 2
	// hours ago, then one now.
	ok(t, n, "", "topic", "create", "times")
	c := dialNode(t, n)
	now := time.Now()
	for _, rec := range []struct {
		v  string
		at time.Time
	}{{"3 days ago", now.Add(-72 * time.Hour)}, {"2 hours ago", now.Add(-2 * time.Hour)}} {
		if _, err := c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "times", Records: []*tierlogv1.Record{
			{TimestampMs: rec.at.UnixMilli(), Value: []byte(rec.v)}}}); err != nil {
			t.Fatal(err)
		}
	}
	ok(t, n, "", "produce", "times", "--value", "now")
	yesterday := now.Add(-24 * time.Hour).Format(time.DateOnly) // local midnight, as the child reads it
	for _, tc := range []struct {
		since, want string
	}{
		{"1h", "now\n"},
		{"30m", "now\n"},
		{"3h", "2 hours ago\nnow\n"},
		{"4d", "3 days ago\n2 hours ago\nnow\n"},
		{"2d", "2 hours ago\nnow\n"},
		{yesterday, "2 hours ago\nnow\n"},
		{now.Add(-3 * time.Hour).UTC().Format(time.RFC3339), "2 hours ago\nnow\n"},
	} {
		if out := ok(t, n, "", "consume", "times", "--since", tc.since); out != tc.want {
			t.Errorf("consume --since %s: %q, want %q", tc.since, out, tc.want)
		}
	}

	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"consume", "hist", "--offset", "latest-ish"}, []string{"--offset \"latest-ish\"", "end", "-N"}},
		{[]string{"consume", "hist", "--since", "yesterday"}, []string{"--since \"yesterday\"", "7d", "2026-11-30", "RFC 3339"}},
		{[]string{"consume", "hist", "--offset", "-2", "--since", "1h"}, []string{"offset", "since"}},
	} {
		r := cli(t, n, "", c.args...)
		if r.code != 2 {
			t.Errorf("tierlog %s: exit %d, want 2 (stderr %q)", strings.Join(c.args, " "), r.code, r.stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("tierlog %s: stderr %q lacks %q", strings.Join(c.args, " "), r.stderr, w)
			}
		}
	}
}

// TestProduceKeySeparator: --key-separator splits each line into key and
// value; each key lands in the partition the server picks for it (the
// murmur2 rule), a line without the separator gets a null key (kcat's
// -K), and "partition offset" lines come out in input order.
func TestProduceKeySeparator(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil)
	ok(t, n, "", "topic", "create", "keyed", "--partitions", "4")
	var input []string
	for i := range 60 {
		input = append(input, fmt.Sprintf("user%d:event %d: with a colon", i%7, i))
	}
	input = append(input, "no separator here", ":empty key", "user1:", "")
	out := ok(t, n, joinLines(input), "produce", "keyed", "--key-separator", ":")
	placed := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(placed) != len(input) {
		t.Fatalf("produce printed %d lines for %d input lines:\n%s", len(placed), len(input), out)
	}
	recs := map[string]jsonRec{} // by "partition offset"
	for _, r := range parseJSONLines(t, ok(t, n, "", "consume", "keyed", "--format", "json")) {
		recs[fmt.Sprintf("%d %d", r.Partition, r.Offset)] = r
	}
	// The partition the server itself picks for a key (a one-record
	// produce with --key), asked once per key.
	serverPick := map[string]string{}
	for i, line := range input {
		r, found := recs[placed[i]]
		if !found {
			t.Fatalf("line %d %q: produce said %q, which consume does not hold", i+1, line, placed[i])
		}
		key, value, hasSep := strings.Cut(line, ":")
		if !hasSep {
			if r.Key != nil || r.Value == nil || *r.Value != line {
				t.Errorf("line %d %q: stored key %v value %v, want a null key and the whole line", i+1, line, r.Key, r.Value)
			}
			continue
		}
		if r.Key == nil || *r.Key != key || r.Value == nil || *r.Value != value {
			t.Errorf("line %d %q: stored key %v value %v, want %q and %q", i+1, line, r.Key, r.Value, key, value)
			continue
		}
		if _, asked := serverPick[key]; !asked {
			p := ok(t, n, "", "produce", "keyed", "--key", key, "--value", "probe")
			serverPick[key], _, _ = strings.Cut(p, " ")
		}
		if part, _, _ := strings.Cut(placed[i], " "); part != serverPick[key] {
			t.Errorf("line %d key %q in partition %s, but the server puts key %q in partition %s", i+1, key, part, key, serverPick[key])
		}
	}
	if len(serverPick) < 3 {
		t.Errorf("the keys landed in %d partitions; the test needs several", len(serverPick))
	}

	// With --partition every record goes there, keys kept.
	out = ok(t, n, "a:1\nb:2\n", "produce", "keyed", "--key-separator", ":", "--partition", "3")
	if !strings.HasPrefix(out, "3 ") || !strings.Contains(out, "\n3 ") {
		t.Errorf("--key-separator --partition 3: %q, want both records in partition 3", out)
	}

	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"produce", "keyed", "--key-separator", ":", "--key", "k"}, []string{"key", "key-separator"}},
		{[]string{"produce", "keyed", "--key-separator", ":", "--value", "v"}, []string{"value", "key-separator"}},
		{[]string{"produce", "keyed", "--key-separator", ""}, []string{"--key-separator", "at least one character"}},
	} {
		r := cli(t, n, "x:y\n", c.args...)
		if r.code != 2 {
			t.Errorf("tierlog %s: exit %d, want 2 (stderr %q)", strings.Join(c.args, " "), r.code, r.stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("tierlog %s: stderr %q lacks %q", strings.Join(c.args, " "), r.stderr, w)
			}
		}
	}
}
