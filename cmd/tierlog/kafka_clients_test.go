package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// The real Kafka clients of the interop tests: Debian's kcat (librdkafka)
// and kafka-python (python3-kafka), which only Debian's own interpreter
// sees. `make test` installs both when missing; a test without them fails
// and says so - it never skips.
const (
	pythonBin         = "/usr/bin/python3"
	kafkaClientsHint  = "`make test` installs them (as root: apt-get install -y kcat python3-kafka)"
	clientRunTimeout  = time.Minute // bounds a hung client; nothing depends on it
	clientScriptLimit = "45"        // kclient.py --timeout, seconds: under clientRunTimeout
)

var kclientScript = filepath.Join("testdata", "kafka", "kclient.py")

// requireKafkaPython fails the test unless /usr/bin/python3 imports kafka.
func requireKafkaPython(t *testing.T) {
	t.Helper()
	out, err := exec.Command(pythonBin, "-c", "import kafka; print(kafka.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-python is missing (%s -c 'import kafka': %v: %s); %s", pythonBin, err, bytes.TrimSpace(out), kafkaClientsHint)
	}
}

// requireKcat fails the test unless kcat is on PATH.
func requireKcat(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Fatalf("kcat is missing (%v); %s", err, kafkaClientsHint)
	}
}

// krec is one Kafka record as a test sends and expects it. Nil Key or
// Value is null; Timestamp 0 on input lets the client choose.
type krec struct {
	Partition int32
	Offset    int64
	Timestamp int64
	Key       []byte
	Value     []byte
	Headers   []khdr
}

type khdr struct {
	Key   string
	Value []byte
}

func (r krec) String() string {
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, fmt.Sprintf("%s=%q", h.Key, h.Value))
	}
	return fmt.Sprintf("{p%d @%d ts %d key %s value %s headers [%s]}", r.Partition, r.Offset, r.Timestamp,
		quoteNull(r.Key), quoteNull(r.Value), strings.Join(hs, " "))
}

func quoteNull(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 40 {
		return fmt.Sprintf("%q...(%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// sameRecords compares what a client read with what was written, every
// field and byte, nil (null) apart from empty.
func sameRecords(got, want []krec) error {
	var errs []error
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			errs = append(errs, fmt.Errorf("record %d missing, want %v", i, want[i]))
		case i >= len(want):
			errs = append(errs, fmt.Errorf("record %d unexpected: %v", i, got[i]))
		case !sameRecord(got[i], want[i]):
			errs = append(errs, fmt.Errorf("record %d:\n  got  %v\n  want %v", i, got[i], want[i]))
		}
		if len(errs) >= 5 {
			errs = append(errs, fmt.Errorf("... (got %d records, want %d)", len(got), len(want)))
			break
		}
	}
	return errors.Join(errs...)
}

func sameRecord(a, b krec) bool {
	return a.Partition == b.Partition && a.Offset == b.Offset && a.Timestamp == b.Timestamp &&
		sameBytes(a.Key, b.Key) && sameBytes(a.Value, b.Value) &&
		slices.EqualFunc(a.Headers, b.Headers, func(x, y khdr) bool { return x.Key == y.Key && sameBytes(x.Value, y.Value) })
}

func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// sortRecords orders records by partition, then offset.
func sortRecords(rs []krec) {
	slices.SortFunc(rs, func(a, b krec) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
}

// testRecords are n records with bytes that are easy to mangle: binary
// values, an empty value, non-UTF-8, newlines; keys and headers when keyed.
// ts > 0 gives record i the timestamp ts+i*1000.
func testRecords(n int, keyed bool, ts int64) []krec {
	out := make([]krec, n)
	for i := range out {
		v := fmt.Appendf(nil, "value %d \x00\xff\n\tnon-utf8 \xc3\x28 ✓ ", i)
		if i == 1 {
			v = []byte{}
		}
		r := krec{Value: append(v, bytes.Repeat([]byte{byte(i)}, i%7)...)}
		if keyed {
			r.Key = fmt.Appendf(nil, "key-%d\x00", i%5)
			r.Headers = []khdr{{"trace", fmt.Appendf(nil, "t%d", i)}, {"bin", []byte{0, byte(i), 0xff}}, {"trace", []byte{}}}
		}
		if ts > 0 {
			r.Timestamp = ts + int64(i)*1000
		}
		out[i] = r
	}
	return out
}

// clientProc is a running client process (kafka-python or kcat) whose
// output is collected as it arrives.
type clientProc struct {
	t      *testing.T
	desc   string
	cmd    *exec.Cmd
	stdout *testutil.SyncBuffer
	stderr *testutil.SyncBuffer
	done   chan struct{}
	err    error
}

// startClient starts name args... with stdin, bounded by clientRunTimeout.
func startClient(t *testing.T, stdin string, name string, args ...string) *clientProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientRunTimeout)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = strings.NewReader(stdin)
	p := &clientProc{t: t, desc: name + " " + strings.Join(args, " "), cmd: cmd,
		stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", p.desc, err)
	}
	go func() {
		p.err = cmd.Wait()
		if ctx.Err() != nil {
			p.err = fmt.Errorf("killed after %v: %w", clientRunTimeout, p.err)
		}
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// wait waits for the process and fails the test unless it exited 0.
func (p *clientProc) wait() string {
	p.t.Helper()
	<-p.done
	if p.err != nil {
		p.t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", p.desc, p.err, p.stdout.String(), p.stderr.String())
	}
	return p.stdout.String()
}

// stop ends a client that runs until told (kcat -G) as Ctrl-C does, so it
// leaves its group and commits, and waits for it.
func (p *clientProc) stop() {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("%s exited early: %v\nstderr:\n%s", p.desc, p.err, p.stderr.String())
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		p.t.Fatalf("interrupt %s: %v", p.desc, err)
	}
	p.wait()
}

// pyEvent is one line kclient.py prints.
type pyEvent struct {
	Event     string           `json:"event"`
	Partition int32            `json:"partition"`
	Offset    int64            `json:"offset"`
	Timestamp int64            `json:"timestamp"`
	Key       *string          `json:"key"`
	Value     *string          `json:"value"`
	Headers   [][2]*string     `json:"headers"`
	Positions map[string]int64 `json:"positions"`
}

// events parses the lines printed so far.
func (p *clientProc) events() ([]pyEvent, error) {
	var evs []pyEvent
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var e pyEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// A line still being written; the next poll sees it whole.
			return evs, fmt.Errorf("kclient.py printed %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// waitEvent waits until kclient.py has printed an event of the kind and
// returns the first, failing if the process exits first.
func (p *clientProc) waitEvent(kind string) pyEvent {
	p.t.Helper()
	var found pyEvent
	eventually(p.t, p.desc+" prints "+kind, func() error {
		evs, _ := p.events()
		for _, e := range evs {
			if e.Event == kind {
				found = e
				return nil
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before %q: %v\nstdout:\n%s\nstderr:\n%s", p.desc, kind, p.err, p.stdout.String(), p.stderr.String())
		default:
		}
		return fmt.Errorf("not yet; stderr: %s", p.stderr.String())
	})
	return found
}

// records waits for kclient.py consume to finish and returns what it read.
func (p *clientProc) records() []krec {
	p.t.Helper()
	p.wait()
	evs, err := p.events()
	if err != nil {
		p.t.Fatal(err)
	}
	var out []krec
	for _, e := range evs {
		if e.Event != "record" {
			continue
		}
		r := krec{Partition: e.Partition, Offset: e.Offset, Timestamp: e.Timestamp, Key: p.unhex(e.Key), Value: p.unhex(e.Value)}
		for _, h := range e.Headers {
			r.Headers = append(r.Headers, khdr{Key: *h[0], Value: p.unhex(h[1])})
		}
		out = append(out, r)
	}
	return out
}

func (p *clientProc) unhex(s *string) []byte {
	if s == nil {
		return nil
	}
	b, err := hex.DecodeString(*s)
	if err != nil {
		p.t.Fatalf("kclient.py printed bad hex %q", *s)
	}
	return b
}

// pyConsume starts a kafka-python KafkaConsumer(topic,
// bootstrap_servers=[bootstrap]) that reads count records; opts are
// kclient.py flags (--offset-reset, --group, --commit).
func pyConsume(t *testing.T, bootstrap, topic string, count int, opts ...string) *clientProc {
	t.Helper()
	requireKafkaPython(t)
	args := append([]string{kclientScript, "consume", "--bootstrap", bootstrap, "--topic", topic,
		"--count", strconv.Itoa(count), "--timeout", clientScriptLimit}, opts...)
	return startClient(t, "", pythonBin, args...)
}

// pyProduce sends recs with a kafka-python KafkaProducer(bootstrap_servers=
// bootstrap) and returns them with the partition, offset and timestamp
// each acknowledgement gave.
func pyProduce(t *testing.T, bootstrap, topic string, recs []krec, opts ...string) []krec {
	t.Helper()
	requireKafkaPython(t)
	var in strings.Builder
	for _, r := range recs {
		line := map[string]any{"key": hexOrNull(r.Key), "value": hexOrNull(r.Value)}
		if r.Timestamp != 0 {
			line["timestamp"] = r.Timestamp
		}
		var hs [][2]any
		for _, h := range r.Headers {
			hs = append(hs, [2]any{h.Key, hexOrNull(h.Value)})
		}
		line["headers"] = hs
		b, _ := json.Marshal(line)
		in.Write(append(b, '\n'))
	}
	args := append([]string{kclientScript, "produce", "--bootstrap", bootstrap, "--topic", topic, "--timeout", clientScriptLimit}, opts...)
	p := startClient(t, in.String(), pythonBin, args...)
	p.wait()
	evs, err := p.events()
	if err != nil {
		t.Fatal(err)
	}
	var sent []pyEvent
	for _, e := range evs {
		if e.Event == "sent" {
			sent = append(sent, e)
		}
	}
	if len(sent) != len(recs) {
		t.Fatalf("kafka-python producer acknowledged %d of %d records\nstderr:\n%s", len(sent), len(recs), p.stderr.String())
	}
	out := slices.Clone(recs)
	for i, e := range sent {
		out[i].Partition, out[i].Offset, out[i].Timestamp = e.Partition, e.Offset, e.Timestamp
	}
	return out
}

func hexOrNull(b []byte) any {
	if b == nil {
		return nil
	}
	return hex.EncodeToString(b)
}

// kcat runs kcat with stdin and returns its stdout, failing the test unless
// it exits 0.
func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	requireKcat(t)
	return startClient(t, stdin, "kcat", args...).wait()
}

// kcatFormat is the -f format kcatRecords parses: one record per line, the
// key and value as hex-free text (tests give kcat printable bytes only).
const kcatFormat = `%p|%o|%T|%K|%k|%S|%s\n`

// kcatRecords parses lines printed with -f kcatFormat, ignoring a last
// line still being written.
func kcatRecords(t *testing.T, out string) []krec {
	t.Helper()
	var recs []krec
	lines := strings.Split(out, "\n")
	for _, line := range lines[:len(lines)-1] {
		f := strings.SplitN(line, "|", 7)
		if len(f) != 7 {
			t.Fatalf("kcat printed %q, want %s", line, kcatFormat)
		}
		var nums [5]int64
		for i, s := range []string{f[0], f[1], f[2], f[3], f[5]} {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("kcat printed %q: field %q: %v", line, s, err)
			}
			nums[i] = n
		}
		r := krec{Partition: int32(nums[0]), Offset: nums[1], Timestamp: nums[2]}
		if nums[3] >= 0 {
			r.Key = []byte(f[4])
		}
		if nums[4] >= 0 {
			r.Value = []byte(f[6])
		}
		if int64(len(r.Key)) != max(nums[3], 0) || int64(len(r.Value)) != max(nums[4], 0) {
			t.Fatalf("kcat printed %q: lengths disagree with the key and value", line)
		}
		recs = append(recs, r)
	}
	return recs
}

// kafkaRequestLine is the server's debug line for each Kafka request.
var kafkaRequestLine = regexp.MustCompile(`msg="kafka request" api=(\S+) version=(\d+) client_id=(\S*)`)

// clientNumber is the number kafka-python appends to each client's id.
var clientNumber = regexp.MustCompile(`-\d+$`)

// logKafkaVersions logs, per client, each API and the versions the server
// saw it use (from serve's debug log): the README's version table.
func logKafkaVersions(t *testing.T, n *node) {
	t.Helper()
	used := map[string]map[string][]int{}
	for _, m := range kafkaRequestLine.FindAllStringSubmatch(n.stderr.String(), -1) {
		client := strings.Trim(m[3], `"`)
		// kafka-python numbers its clients (kafka-python-producer-1).
		client = clientNumber.ReplaceAllString(client, "")
		if used[client] == nil {
			used[client] = map[string][]int{}
		}
		v, _ := strconv.Atoi(m[2])
		if !slices.Contains(used[client][m[1]], v) {
			used[client][m[1]] = append(used[client][m[1]], v)
		}
	}
	for _, client := range slices.Sorted(maps.Keys(used)) {
		var parts []string
		for _, api := range slices.Sorted(maps.Keys(used[client])) {
			vs := used[client][api]
			slices.Sort(vs)
			parts = append(parts, fmt.Sprintf("%s v%s", api, strings.Trim(strings.Join(strings.Fields(fmt.Sprint(vs)), ","), "[]")))
		}
		t.Logf("Kafka versions used by %s: %s", client, strings.Join(parts, ", "))
	}
}
