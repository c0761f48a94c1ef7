package cluster

// How a node whose Dir holds no Raft state joins.
//
// Raft's safety assumes a voter never forgets its log, term and vote. A
// node whose disk was wiped (or replaced) that simply bootstrapped again
// would be a voter with an empty log: with the one peer that missed an
// entry committed on it, it could elect that peer, and the committed
// entry (an ISR shrink, a leader epoch) would be gone - and it could vote
// twice in one term. So an empty node first asks its peers, over the Raft
// port (probeByte, then a JSON line each way), whether a cluster exists:
//
//   - A majority of the peers (this node included) answer, all empty: a
//     new cluster. The node bootstraps it from Options.Peers, as every
//     node of a new cluster does. It names the empty nodes it counted (a
//     random token per Open, the "witnesses"); a node it counted that then
//     finds it running bootstraps the same configuration too - it is as if
//     both had bootstrapped at once - instead of waiting for a leader the
//     first node cannot get alone. The token lives in memory only (a
//     wiped node must never match an old one): a node restarted in the
//     second between being counted and looking again waits for
//     readmission like a late node, and if the peer that counted it is
//     then the only node with state, no leader can ever be elected - the
//     nodes wait, logging it, until the operator clears that peer's Dir
//     (it holds only the bootstrap configuration) and restarts it.
//   - A peer runs Raft (or waits to be re-admitted itself): the cluster
//     exists, and this node was a voter that lost its state. It must not
//     vote until the cluster takes it back: it asks the Raft leader to
//     remove it from the voters and add it back (readmit), and starts
//     Raft only when both changes are committed, with no configuration of
//     its own (hashicorp never campaigns without one; the leader's
//     AppendEntries or InstallSnapshot bring it).
//   - Otherwise it waits, and says so at Warn: it never bootstraps on a
//     guess.
//
// Why readmission is safe: the removal commits on a majority of the other
// voters, so from then on every committed entry is on a majority that
// does not count the wiped node; the addition commits the same way. When
// the node starts voting again it is a new, empty voter added by a
// committed configuration change - the standard Raft membership change -
// and any majority it helps elect holds a voter that has every committed
// entry and refuses a candidate without them.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
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

// witnessesKey is where a node that bootstrapped a new cluster keeps the
// tokens of the empty nodes it counted (in raft.db's stable store, beside
// the term and vote), so they still find them after it restarts.
var witnessesKey = []byte("tierlog_bootstrap_witnesses")

type probeRequest struct {
	Op    string `json:"op"` // "state" or "readmit"
	ID    int32  `json:"id"`
	Token string `json:"token,omitempty"`
	// Addr is the Raft address readmit adds the node with.
	Addr string `json:"addr,omitempty"`
}

type probeAnswer struct {
	ID int32 `json:"id"`
	// State: this node runs Raft (it has, or is being given, the cluster's
	// state). Token: an empty node's token for this Open.
	State bool   `json:"state"`
	Token string `json:"token,omitempty"`
	// Readmitting: an empty node that found the cluster and waits to be
	// taken back; a new cluster does not count it as empty.
	Readmitting bool `json:"readmitting,omitempty"`
	// Witnesses: on a node that bootstrapped a new cluster, the tokens of
	// the empty nodes it counted.
	Witnesses  []string `json:"witnesses,omitempty"`
	LeaderID   int32    `json:"leader_id"`
	LeaderAddr string   `json:"leader_addr,omitempty"`
	// Admitted answers readmit: both configuration changes are committed.
	Admitted bool   `json:"admitted,omitempty"`
	Error    string `json:"error,omitempty"`
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

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
		ans.Token, ans.Readmitting = n.token, n.readmitting.Load()
		return ans
	}
	ans.State = true
	if w := n.witnesses.Load(); w != nil {
		ans.Witnesses = *w
	}
	if r := n.live.Load(); r != nil {
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

// mayReadmit: only a node of this cluster - a voter now, or one of the
// peers it was started with (a readmission that removed it and then
// failed) - at a dialable address, and never the leader itself.
func (n *Node) mayReadmit(r *raft.Raft, req probeRequest) error {
	if req.ID == n.opts.ID {
		return fmt.Errorf("node %d is the leader", req.ID)
	}
	if host, _, err := net.SplitHostPort(req.Addr); err != nil || host == "" {
		return fmt.Errorf("raft address %q is not a host:port", req.Addr)
	}
	known := slices.ContainsFunc(n.opts.Peers, func(p Peer) bool { return p.ID == req.ID })
	if f := r.GetConfiguration(); f.Error() == nil {
		known = known || slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return s.ID == serverID(req.ID) })
	}
	if !known {
		return fmt.Errorf("node %d is not a member of this cluster (adding nodes is not supported)", req.ID)
	}
	return nil
}

// admit decides how a node without Raft state starts: bootstrap a new
// cluster (true, with the witnesses to keep), or - once the cluster took
// it back - join with no configuration (false). It returns ctx's error if
// ctx ends first.
func (n *Node) admit(ctx context.Context, peers []Peer) (bool, []string, error) {
	need := len(peers)/2 + 1
	w := waiter{log: n.log}
	for {
		answers := n.probePeers(ctx, peers)
		empty := []string{n.token}
		exists := false
		for _, a := range answers {
			if a.State && slices.Contains(a.Witnesses, n.token) {
				n.log.Info("joining the new cluster a peer bootstrapped counting this node", "peer", a.ID, "peers", len(peers))
				return true, a.Witnesses, nil
			}
			if a.State || a.Readmitting {
				exists = true
			} else if a.Token != "" {
				empty = append(empty, a.Token)
			}
		}
		if exists {
			return false, nil, n.waitReadmitted(ctx, peers, answers)
		}
		if len(empty) >= need {
			n.log.Info("bootstrapping a new cluster: no peer has Raft state", "peers", len(peers), "empty_answered", len(empty))
			return true, empty, nil
		}
		w.wait("no Raft state here: waiting for a majority of the peers to answer before bootstrapping a new cluster (a node never bootstraps on a guess)",
			"answered", len(empty), "need", need)
		if err := w.pause(ctx); err != nil {
			return false, nil, err
		}
	}
}

// waitReadmitted asks the Raft leader to take this node back until it
// has (see readmit).
func (n *Node) waitReadmitted(ctx context.Context, peers []Peer, answers []probeAnswer) error {
	n.readmitting.Store(true)
	n.log.Warn("no Raft state here but the cluster exists: this node lost its state; waiting to be re-admitted as a voter before it runs Raft")
	w := waiter{log: n.log}
	req := probeRequest{Op: "readmit", ID: n.opts.ID, Token: n.token, Addr: n.opts.RaftAddr}
	for {
		leader, why := "", "no peer knows a raft leader"
		for _, a := range answers {
			if a.LeaderAddr != "" {
				leader = a.LeaderAddr
				break
			}
		}
		// A node that stopped leading names the next one: follow it once.
		for hop := 0; leader != "" && hop < 2; hop++ {
			a, err := ask(ctx, leader, req, readmitTimeout)
			if err == nil && a.Admitted {
				n.log.Info("re-admitted as a voter: starting raft with no configuration of its own", "leader", leader)
				return nil
			}
			why = fmt.Sprintf("leader %s: %v", leader, errors.Join(err, errorText(a.Error)))
			if err != nil || a.LeaderAddr == leader {
				break
			}
			leader = a.LeaderAddr
		}
		w.wait("waiting to be re-admitted: the Raft leader must remove this node from the voters and add it back (with 3 nodes, both others must be up)",
			"why", why)
		if err := w.pause(ctx); err != nil {
			return err
		}
		answers = n.probePeers(ctx, peers)
	}
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
			a, err := ask(ctx, p.RaftAddr, probeRequest{Op: "state", ID: n.opts.ID, Token: n.token}, probeTimeout)
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
