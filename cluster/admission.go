package cluster

// How a node whose Dir holds no Raft state joins.
//
// Raft's safety assumes a voter never forgets its log, term and vote. A
// node whose disk was wiped (or replaced) that simply bootstrapped again
// would be a voter with an empty log: with the one peer that missed an
// entry committed on it, it could elect that peer, and the committed
// entry (an ISR shrink, a leader epoch) would be gone. So an empty node
// first asks its peers, over the Raft port (probeByte, then a JSON line
// each way), what they hold, and asks again about every second until it
// can decide:
//
//   - A peer holds state: it runs Raft and its log (snapshot included)
//     goes past index 1. BootstrapCluster writes the configuration at
//     index 1 and any elected leader appends at least a no-op at index 2,
//     so a node at index <= 1 never had anything committed on it. The
//     cluster exists and this node lost its state: it asks the Raft leader
//     to remove it from the voters and add it back (readmit), and starts
//     Raft only when both changes are committed, with no configuration of
//     its own (hashicorp never campaigns without one; the leader's
//     AppendEntries or InstallSnapshot bring it).
//   - Else, a majority of the peers (this node included) answered, and
//     all hold nothing (empty, waiting to be re-admitted, or running Raft
//     with only the bootstrap configuration): the node bootstraps with the
//     configuration from Options.Peers. Every node has the same --peers,
//     so several nodes bootstrapping, at once or one after another, write
//     the same index 1 - the case hashicorp documents as safe (call
//     BootstrapCluster on every server with the same configuration). A
//     node that bootstraps late is like a voter that has been down since
//     the cluster began.
//   - Else it waits, and says so at Warn: it never bootstraps on a guess.
//
// Why bootstrapping is safe: once an entry is committed, a majority holds
// index >= 2 for good (unless wiped), and every majority the node counts
// meets it, so the node finds state - unless the peer in both answered
// before the entry reached it; then the node joins with index 1 only, an
// empty voter holding a prefix of every log, which any Raft node may be.
// Why readmission is safe: the removal commits on a majority of the other
// voters, so from then on every committed entry is on a majority that
// does not count the wiped node; the addition commits the same way. When
// the node starts voting again it is a new, empty voter added by a
// committed configuration change - the standard Raft membership change.
// The leader re-admits only a configured voter, at its configured address,
// after asking that address itself and hearing that the node there does
// not run Raft: a healthy voter is never removed on someone's word.
//
// What admission cannot do: a lost majority (two wiped nodes of three)
// cannot be recovered by Raft. If the wiped nodes answer as a majority
// while the others are down, they bootstrap a new cluster; every Raft
// group names itself (identity.go: chosen once, in its log), and the
// transport refuses connections between nodes of different groups, so
// when an old node comes back the two histories never merge: both sides
// log the refusal at Error, and the operator restarts the cluster from
// scratch (README). The same goes for a wiped node that voted in a term
// whose leader is down while the peers it asks hold nothing: it may vote
// again in that term; only a wipe and a failure together reach this.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// probeLineMax bounds a probe request or answer line.
	probeLineMax = 64 << 10
	// probeTimeout bounds a state question, dial to answer.
	probeTimeout = 2 * time.Second
	// readmitTimeout bounds a readmission: two configuration changes,
	// each committed on a majority.
	readmitTimeout = 30 * time.Second
	// waitLogEvery is how often a waiting node repeats what it waits for.
	waitLogEvery = 10 * time.Second
)

type probeRequest struct {
	Op string `json:"op"` // "state" or "readmit"
	ID int32  `json:"id"`
	// Addr is the Raft address readmit adds the node with: the one the
	// configuration has for it.
	Addr string `json:"addr,omitempty"`
}

type probeAnswer struct {
	ID int32 `json:"id"`
	// State: this node runs Raft (or is about to, with the state it has).
	// LastIndex is its last log index, snapshot included: past 1, the
	// node holds what a leader wrote (see the top of this file).
	State      bool   `json:"state"`
	LastIndex  uint64 `json:"last_index,omitempty"`
	LeaderID   int32  `json:"leader_id"`
	LeaderAddr string `json:"leader_addr,omitempty"`
	// Admitted answers readmit: both configuration changes are committed.
	Admitted bool   `json:"admitted,omitempty"`
	Error    string `json:"error,omitempty"`
}

// holdsState reports whether the answering node holds what a Raft leader
// wrote: then the cluster exists.
func (a probeAnswer) holdsState() bool { return a.State && a.LastIndex > 1 }

// serveProbe answers one probe connection (after its probeByte) and
// closes it.
func (n *Node) serveProbe(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	var req probeRequest
	if err := readLine(c, &req); err != nil {
		n.log.Debug("bad admission probe", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	var ans probeAnswer
	switch req.Op {
	case "state":
		ans = n.probeState()
	case "readmit":
		_ = c.SetDeadline(time.Now().Add(readmitTimeout))
		ans = n.readmit(req)
	default:
		ans = probeAnswer{ID: n.opts.ID, LeaderID: -1, Error: fmt.Sprintf("unknown op %q", req.Op)}
	}
	b, _ := json.Marshal(ans)
	if _, err := c.Write(append(b, '\n')); err != nil {
		n.log.Debug("admission probe answer not sent", "remote", c.RemoteAddr().String(), "err", err)
	}
}

func (n *Node) probeState() probeAnswer {
	ans := probeAnswer{ID: n.opts.ID, LeaderID: -1}
	if !n.hasState.Load() {
		return ans
	}
	ans.State = true
	ans.LastIndex = n.openIndex.Load()
	if r := n.live.Load(); r != nil {
		ans.LastIndex = r.LastIndex()
		ans.LeaderID, ans.LeaderAddr = leaderOf(r)
	}
	return ans
}

// readmit, on the Raft leader, removes the asking node from the voters
// and adds it back (see the top of this file). Both steps are idempotent:
// a node whose answer got lost asks again, perhaps another leader.
func (n *Node) readmit(req probeRequest) probeAnswer {
	ans := n.probeState()
	r := n.live.Load()
	if r == nil || r.State() != raft.Leader {
		ans.Error = "not the raft leader"
		return ans
	}
	if err := n.mayReadmit(r, req); err != nil {
		n.log.Warn("readmission refused", "readmit", req.ID, "raft_addr", req.Addr, "err", err)
		ans.Error = err.Error()
		return ans
	}
	n.readmitMu.Lock()
	defer n.readmitMu.Unlock()
	n.log.Warn("re-admitting a node whose Raft state is gone: removing it from the voters, then adding it back",
		"readmit", req.ID, "raft_addr", req.Addr)
	if err := r.RemoveServer(serverID(req.ID), 0, readmitTimeout).Error(); err != nil {
		ans.Error = fmt.Sprintf("remove node %d from the voters: %v", req.ID, err)
		return ans
	}
	if err := r.AddVoter(serverID(req.ID), raft.ServerAddress(req.Addr), 0, readmitTimeout).Error(); err != nil {
		ans.Error = fmt.Sprintf("add node %d back as a voter: %v", req.ID, err)
		return ans
	}
	n.log.Info("node re-admitted as a voter", "readmit", req.ID, "raft_addr", req.Addr)
	ans.Admitted = true
	return ans
}

// mayReadmit: only a voter of this cluster (in the configuration, or -
// after a readmission that removed it and then failed - among the peers
// this node was started with), only at the address it has there, never
// the leader itself, and only once the node at that address answered,
// to this leader's own probe, that it does not run Raft.
func (n *Node) mayReadmit(r *raft.Raft, req probeRequest) error {
	if req.ID == n.opts.ID {
		return fmt.Errorf("node %d is the leader", req.ID)
	}
	addr := ""
	for _, p := range n.opts.Peers {
		if p.ID == req.ID {
			addr = p.RaftAddr
		}
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read the raft configuration: %w", err)
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == serverID(req.ID) {
			addr = string(s.Address)
		}
	}
	switch {
	case addr == "":
		return fmt.Errorf("node %d is not a member of this cluster (adding nodes is not supported)", req.ID)
	case req.Addr != addr:
		return fmt.Errorf("node %d's raft address is %s in the cluster's configuration, not %s (changing a node's address is not supported)", req.ID, addr, req.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	a, err := ask(ctx, addr, probeRequest{Op: "state", ID: n.opts.ID}, probeTimeout)
	switch {
	case err != nil:
		return fmt.Errorf("node %d does not answer at %s: %w", req.ID, addr, err)
	case a.ID != req.ID:
		return fmt.Errorf("node %d's address %s answers as node %d", req.ID, addr, a.ID)
	case a.State:
		return fmt.Errorf("node %d at %s runs raft with its state: it needs no readmission", req.ID, addr)
	}
	return nil
}

// admit decides how a node without Raft state starts: bootstrap a new
// cluster (true), or - once the cluster took it back - join with no
// configuration (false). It returns ctx's error if ctx ends first.
func (n *Node) admit(ctx context.Context, peers []Peer) (bool, error) {
	need := len(peers)/2 + 1
	w := waiter{log: n.log}
	for {
		answers := n.probePeers(ctx, peers)
		exists := false
		for _, a := range answers {
			exists = exists || a.holdsState()
		}
		switch {
		case exists:
			why := n.askReadmit(ctx, answers)
			if why == nil {
				n.log.Info("re-admitted as a voter: starting raft with no configuration of its own")
				return false, nil
			}
			w.wait("no Raft state here but the cluster exists: this node lost its state; waiting to be re-admitted as a voter before it runs Raft (the Raft leader must remove it from the voters and add it back; with 3 nodes both others must be up)",
				"why", why)
		case 1+len(answers) >= need:
			n.log.Info("bootstrapping a new cluster: a majority of the peers answered and none holds Raft state", "peers", len(peers), "answered", 1+len(answers))
			return true, nil
		default:
			w.wait("no Raft state here: waiting for a majority of the peers to answer before bootstrapping a new cluster (a node never bootstraps on a guess)",
				"answered", 1+len(answers), "need", need)
		}
		if err := w.pause(ctx); err != nil {
			return false, err
		}
	}
}

// askReadmit asks the Raft leader the answers name to take this node back
// (see readmit); it returns nil once it has, else why not.
func (n *Node) askReadmit(ctx context.Context, answers []probeAnswer) error {
	leader := ""
	for _, a := range answers {
		if a.LeaderAddr != "" {
			leader = a.LeaderAddr
			break
		}
	}
	if leader == "" {
		return errors.New("no peer knows a raft leader")
	}
	req := probeRequest{Op: "readmit", ID: n.opts.ID, Addr: n.opts.RaftAddr}
	var why error
	// A node that stopped leading names the next one: follow it once.
	for hop := 0; leader != "" && hop < 2; hop++ {
		a, err := ask(ctx, leader, req, readmitTimeout)
		if err == nil && a.Admitted {
			return nil
		}
		why = fmt.Errorf("leader %s: %w", leader, errors.Join(err, errorText(a.Error)))
		if err != nil || a.LeaderAddr == leader {
			break
		}
		leader = a.LeaderAddr
	}
	return why
}

func errorText(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

// probePeers asks every other peer for its state, at once; it returns the
// answers it got.
func (n *Node) probePeers(ctx context.Context, peers []Peer) []probeAnswer {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var answers []probeAnswer
	for _, p := range peers {
		if p.ID == n.opts.ID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := ask(ctx, p.RaftAddr, probeRequest{Op: "state", ID: n.opts.ID}, probeTimeout)
			if err != nil {
				n.log.Debug("peer did not answer the admission probe", "peer", p.ID, "raft_addr", p.RaftAddr, "err", err)
				return
			}
			if a.ID != p.ID {
				n.log.Warn("a peer's raft address answers with another node id; check --peers", "peer", p.ID, "raft_addr", p.RaftAddr, "answered_id", a.ID)
				return
			}
			mu.Lock()
			answers = append(answers, a)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return answers
}

// ask sends one probe request to addr and reads the answer, within
// timeout or until ctx ends.
func ask(ctx context.Context, addr string, req probeRequest, timeout time.Duration) (probeAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return probeAnswer{}, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return probeAnswer{}, err
	}
	if _, err := c.Write(append(append([]byte{probeByte}, b...), '\n')); err != nil {
		return probeAnswer{}, err
	}
	var a probeAnswer
	err = readLine(c, &a)
	return a, err
}

// readLine reads one JSON line of at most probeLineMax bytes into v.
func readLine(r io.Reader, v any) error {
	line, err := bufio.NewReader(io.LimitReader(r, probeLineMax)).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read probe line: %w", err)
	}
	return json.Unmarshal(line, v)
}

// waiter paces a waiting loop and logs what it waits for at Warn: the
// first time, when the reason changes, and every waitLogEvery.
type waiter struct {
	log    interface{ Warn(string, ...any) }
	last   string
	logged time.Time
	delay  time.Duration
}

func (w *waiter) wait(msg string, args ...any) {
	key := fmt.Sprint(msg, args)
	if key != w.last || time.Since(w.logged) >= waitLogEvery {
		w.log.Warn(msg, args...)
		w.last, w.logged = key, time.Now()
	}
}

func (w *waiter) pause(ctx context.Context) error {
	w.delay = min(max(2*w.delay, 100*time.Millisecond), time.Second)
	t := time.NewTimer(w.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
