package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// firewallHint says how to get what the partition test needs.
const firewallHint = "the network partition test needs root and iptables (`make test` installs it; as root: apt-get install -y iptables)"

// firewall cuts a node of a test cluster off from its peers with iptables
// rules on the loopback. Every node runs under a group id of its own
// (nodeGID), so the node's outgoing connections are told apart from its
// peers' by the owner match, and its listeners by their ports. The rules
// live in a chain named after this process, jumped to from OUTPUT (on lo
// every packet passes OUTPUT), so concurrent test runs never touch each
// other's rules, and the chain is removed in t.Cleanup whatever the
// test's outcome.
type firewall struct {
	t     *testing.T
	chain string
}

// newFirewall creates the chain and hooks it into OUTPUT. Without root or
// iptables the test fails and says so: it never skips.
func newFirewall(t *testing.T) *firewall {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("iptables not found (%v); %s", err, firewallHint)
	}
	fw := &firewall{t: t, chain: fmt.Sprintf("TIERLOG-PART-%d", os.Getpid())}
	if out, err := iptables("-N", fw.chain); err != nil {
		t.Fatalf("iptables -N %s: %v: %s; %s", fw.chain, err, out, firewallHint)
	}
	t.Cleanup(fw.remove)
	if out, err := iptables("-I", "OUTPUT", "-j", fw.chain); err != nil {
		t.Fatalf("iptables -I OUTPUT -j %s: %v: %s; %s", fw.chain, err, out, firewallHint)
	}
	return fw
}

// iptables runs iptables -w (waiting for the xtables lock another run may
// hold) with args.
func iptables(args ...string) (string, error) {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// isolate drops, on the loopback, every TCP packet to or from the
// isolated node's listeners (own: its Raft and gRPC addresses) and every
// packet its process (group gid) sends to its peers' (peers). Other
// listeners of the node (its Kafka port) stay reachable.
func (fw *firewall) isolate(gid uint32, own, peers []string) {
	fw.t.Helper()
	ownPorts, peerPorts := ports(fw.t, own), ports(fw.t, peers)
	for _, rule := range [][]string{
		{"-p", "tcp", "-m", "multiport", "--dports", ownPorts},
		{"-p", "tcp", "-m", "multiport", "--sports", ownPorts},
		{"-p", "tcp", "-m", "owner", "--gid-owner", fmt.Sprint(gid), "-m", "multiport", "--dports", peerPorts},
	} {
		args := append([]string{"-A", fw.chain, "-o", "lo"}, rule...)
		if out, err := iptables(append(args, "-j", "DROP")...); err != nil {
			fw.t.Fatalf("iptables %s: %v: %s; %s", strings.Join(args, " "), err, out, firewallHint)
		}
	}
}

// heal removes the partition's rules.
func (fw *firewall) heal() {
	fw.t.Helper()
	if out, err := iptables("-F", fw.chain); err != nil {
		fw.t.Fatalf("iptables -F %s: %v: %s", fw.chain, err, out)
	}
}

// remove unhooks and deletes the chain; a rule left behind is an error.
func (fw *firewall) remove() {
	for _, args := range [][]string{{"-D", "OUTPUT", "-j", fw.chain}, {"-F", fw.chain}, {"-X", fw.chain}} {
		if out, err := iptables(args...); err != nil {
			fw.t.Errorf("clean up the partition's iptables rules: iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// ports lists the ports of host:port addresses, comma separated.
func ports(t *testing.T, addrs []string) string {
	t.Helper()
	var out []string
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatalf("address %q: %v", a, err)
		}
		out = append(out, p)
	}
	return strings.Join(out, ",")
}

// nodeGID is the group id node id runs under in a partition test: a range
// no account uses, so an owner match names that node's sockets only.
func nodeGID(id int) uint32 { return 47100 + uint32(id) }

// runAsNodeGID runs node id's process as root with group nodeGID(id) and
// no supplementary groups (root keeps its access to every file).
func runAsNodeGID(id int, cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(os.Getuid()), Gid: nodeGID(id)}}
}
