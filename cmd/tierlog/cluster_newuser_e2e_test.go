package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/replcheck"
	"github.com/tierlog/tierlog/internal/testutil"
)

// readmeCluster is the README's "Three nodes on one machine" block with
// the README's ports swapped for free ones and its bucket for a
// temporary directory, so the test runs the commands a new user copies
// without taking the ports a user (or another test) may hold.
type readmeCluster struct {
	t      *testing.T
	dir    string         // the working directory: node1..node3 are in it
	serve  [][]string     // per node, the serve arguments after "serve"
	create []string       // `topic create ...` arguments
	kcatP  []string       // the kcat producer's arguments
	addrs  map[int]string // README port -> the test's 127.0.0.1:port
	c      *testCluster
}

// readmeAddr is an address in the README's commands.
var readmeAddr = regexp.MustCompile(`127\.0\.0\.1:(\d+)`)

func newReadmeCluster(t *testing.T) *readmeCluster {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const heading = "## Three nodes on one machine\n"
	_, section, ok := strings.Cut(string(raw), heading)
	if !ok {
		t.Fatalf("README.md has no %q section", strings.TrimSpace(heading))
	}
	_, block, _ := strings.Cut(section, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	rc := &readmeCluster{t: t, dir: t.TempDir(), addrs: map[int]string{}}
	bucket := "file://" + filepath.Join(rc.dir, "bucket")
	for _, line := range strings.Split(block, "\n") {
		args := rc.substitute(line, bucket)
		switch {
		case len(args) > 2 && args[0] == "bin/tierlog" && args[1] == "serve":
			rc.serve = append(rc.serve, args[2:])
		case len(args) > 3 && args[0] == "bin/tierlog" && args[1] == "topic" && args[2] == "create":
			rc.create = args[1:]
		case strings.Contains(line, "| kcat ") && strings.Contains(line, " -P"):
			i := slices.Index(args, "kcat")
			rc.kcatP = args[i+1:]
		}
	}
	if len(rc.serve) != 3 || rc.create == nil || rc.kcatP == nil {
		t.Fatalf("README's three-node block: %d serve lines, topic create %v, kcat producer %v; want 3, one, one:\n%s", len(rc.serve), rc.create, rc.kcatP, block)
	}
	rc.c = &testCluster{t: t, nodes: make([]*node, 3)}
	for i := range 3 {
		rc.c.dirs = append(rc.c.dirs, filepath.Join(rc.dir, fmt.Sprintf("node%d", i+1)))
	}
	return rc
}

// substitute splits a README command line into arguments (up to a
// redirection, "&" or a comment) with the README's addresses and bucket
// replaced by the test's.
func (rc *readmeCluster) substitute(line, bucket string) []string {
	var args []string
	for _, f := range strings.Fields(line) {
		if f == "&" || f == "#" || strings.HasPrefix(f, "2>") {
			break
		}
		f = strings.ReplaceAll(f, "file:///tmp/tierlog-bucket", bucket)
		f = readmeAddr.ReplaceAllStringFunc(f, func(a string) string {
			port, _ := strconv.Atoi(readmeAddr.FindStringSubmatch(a)[1])
			if _, ok := rc.addrs[port]; !ok {
				rc.addrs[port] = testutil.FreeAddr(rc.t)
			}
			return rc.addrs[port]
		})
		args = append(args, f)
	}
	return args
}

// launch starts node id (1-based) with its README command line, in the
// README's working directory.
func (rc *readmeCluster) launch(id int) func() {
	n, ready := launchServe(rc.t, rc.dir, nil, rc.serve[id-1]...)
	rc.c.nodes[id-1] = n
	return ready
}

// TestClusterNewUser is the "done when", with the binary and the
// README's commands: three nodes started as the README says and waited
// for, a topic created with `topic create --replication-factor 3`, kcat
// producing at acks=all (idempotent) while a kcat consumer reads, the
// leader killed with SIGKILL (its pid from DATA/.lock, as the README
// does), more kcat produces; no acknowledged record lost or stored twice
// (kcat and kafka-python read them all back), `cluster status` shows the
// new leader and the dead node, and the ISR back at three once the node
// is started again with the same command.
func TestClusterNewUser(t *testing.T) {
	requireKcat(t)
	rc := newReadmeCluster(t)
	c := rc.c
	var ready []func()
	for id := 1; id <= 3; id++ {
		ready = append(ready, rc.launch(id))
	}
	for _, r := range ready {
		r()
	}
	// The README waits for every node's readiness and creates the topic
	// at once: a ready node is registered, so all three replicas exist.
	ok(t, c.node(1), "", rc.create...)
	const topic = "audit"
	ps := partitionStatusOf(t, c.node(1), topic)
	if len(ps.Replicas) != 3 || len(ps.ISR) != 3 {
		t.Fatalf("topic created as the README says: replicas %v, ISR %v; want 3 of each", ps.Replicas, ps.ISR)
	}

	const rounds, perRound = 4, 500
	total := rounds * perRound
	var acked []string
	produce := func(round int) {
		t.Helper()
		var in strings.Builder
		var vals []string
		for i := range perRound {
			v := fmt.Sprintf("r%d-%05d", round, i)
			vals = append(vals, v)
			in.WriteString(v + "\n")
		}
		kcat(t, in.String(), rc.kcatP...) // exit 0: every record acknowledged (acks=all)
		acked = append(acked, vals...)
	}
	produce(0)
	// A consumer that keeps reading across the failover, until every
	// record the rounds produce. Started once the first round is in (as
	// the README does): right after the create, a node that has not yet
	// applied it answers UNKNOWN_TOPIC_OR_PARTITION, on which kcat -C
	// gives up.
	consumer := startClient(t, "", "kcat", "-b", strings.Join(c.kafkaAddrs(), ","), "-t", topic, "-C",
		"-o", "beginning", "-c", strconv.Itoa(total), "-f", kcatFormat)

	leader := int(ps.Leader)
	pid, err := os.ReadFile(filepath.Join(c.dirs[leader-1], ".lock"))
	if err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(c.node(leader).cmd.Process.Pid) {
		t.Fatalf("node%d/.lock holds %q (%v); the README kills that pid, node %d is pid %d", leader, pid, err, leader, c.node(leader).cmd.Process.Pid)
	}
	killedAt := time.Now()
	c.kill(leader, syscall.SIGKILL)
	produce(1)
	t.Logf("leader node %d killed; kcat's next %d records at acks=all acknowledged %v later", leader, perRound, time.Since(killedAt).Round(time.Millisecond))
	for round := 2; round < rounds; round++ {
		produce(round)
	}

	// cluster status on a survivor: a new leader at a higher epoch, the
	// dead node down and out of the ISR, its lag unknown.
	survivor := c.anyNode()
	now := partitionStatusOf(t, survivor, topic)
	if now.Leader == int32(leader) || now.Leader < 0 || now.LeaderEpoch <= ps.LeaderEpoch || slices.Contains(now.ISR, int32(leader)) {
		t.Fatalf("after node %d's kill: %+v", leader, now)
	}
	text := ok(t, survivor, "", "cluster", "status")
	for _, want := range []string{fmt.Sprintf("%d:?", leader), "down (last heartbeat"} {
		if !strings.Contains(text, want) {
			t.Errorf("cluster status lacks %q:\n%s", want, text)
		}
	}
	t.Logf("cluster status after the kill:\n%s", text)

	// Every acknowledged record, once, in order; the kcat consumer read
	// across the failover.
	read := kcatRecords(t, consumer.wait())
	checkReadBack(t, "kcat consumer across the failover", read, acked)
	py := pyConsume(t, survivor.kafkaAddr, topic, total, "--offset-reset", "earliest").records()
	checkReadBack(t, "kafka-python consumer", py, acked)

	// Node started again with the same command: back in the ISR.
	rc.launch(leader)()
	waitInSync(t, c, topic, 0, 3)
	t.Logf("cluster status once node %d is back:\n%s", leader, ok(t, c.node(leader), "", "cluster", "status"))

	var acks []replcheck.Ack
	for _, r := range read {
		acks = append(acks, replcheck.Ack{Partition: r.Partition, Offset: r.Offset, Value: r.Value})
	}
	stopAndCheckReplicas(t, c, topic, acks, false)
}

// checkReadBack checks that a consumer read exactly the acknowledged
// values of partition 0, in order, each once, at dense offsets from 0
// (idempotent producers: no retry stored twice).
func checkReadBack(t *testing.T, who string, got []krec, acked []string) {
	t.Helper()
	if len(got) != len(acked) {
		t.Fatalf("%s read %d records; %d were acknowledged", who, len(got), len(acked))
	}
	for i, r := range got {
		if r.Partition != 0 || r.Offset != int64(i) || string(r.Value) != acked[i] {
			t.Fatalf("%s: record %d is %v; want %q at offset %d", who, i, r, acked[i], i)
		}
	}
}
