package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// Peer is one voter of the Raft group.
type Peer struct {
	ID       int32
	RaftAddr string
}

// Options configure a Node. Zero timing fields take raft's defaults (1 s
// heartbeat and election timeouts, 500 ms lease); tests make them small.
type Options struct {
	// ID is this node's id (Kafka's broker id), >= 0.
	ID int32
	// Dir holds raft.db (log and stable store, fsynced per write) and
	// snapshots/. Created if missing.
	Dir string
	// RaftAddr is the host:port the Raft transport listens on and that
	// peers dial; it must be an address peers can reach (not 0.0.0.0).
	RaftAddr string
	// Peers are the voters of a NEW cluster, this node included. A node
	// whose Dir holds no Raft state asks them whether the cluster exists
	// (admission.go): it bootstraps a new one only when a majority answer
	// and none has state. Later starts rejoin from the stores. Empty means
	// a cluster of this node alone.
	Peers []Peer
	// Logger gets raft's log lines (at their level) and the node's own.
	Logger *slog.Logger

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot
	// make raft take one (default 8192); TrailingLogs how many entries a
	// snapshot leaves in the log for slow followers (default 10240).
	SnapshotThreshold uint64
	TrailingLogs      uint64
}

// Node is one member of the cluster's metadata Raft group: it holds the
// replicated State and, on the Raft leader, applies commands to it.
type Node struct {
	opts   Options
	log    *slog.Logger
	fsm    *fsm
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	stream *streamLayer
	store  *raftboltdb.BoltStore

	// For the admission probe (admission.go), served from before Open
	// starts raft: live is raft once it runs; hasState whether the node
	// has (or is about to run raft with) Raft state; openIndex its last
	// index (snapshot included) until raft runs.
	live      atomic.Pointer[raft.Raft]
	hasState  atomic.Bool
	openIndex atomic.Uint64
	readmitMu sync.Mutex

	// The Raft group's identity (identity.go): id as kept in the stable
	// store; naming while this leader proposes one; bg counts such
	// proposals, which Close waits for; foreign rate-limits the Error a
	// connection from another group logs.
	id      atomic.Pointer[string]
	naming  atomic.Bool
	bg      sync.WaitGroup
	foreign foreignLog

	obs      *raft.Observer
	obsCh    chan raft.Observation
	obsDone  chan struct{}
	mu       sync.Mutex
	watchers map[int]chan struct{}
	nextW    int
}

// Open starts the node. With Raft state in Dir the node rejoins with the
// log, term, vote and snapshots it has. Without, it asks its peers first
// (admission.go): it bootstraps a new cluster from Options.Peers, or -
// when the cluster exists and this node lost its state - waits until the
// Raft leader re-admits it. ctx bounds that wait only (Open returns ctx's
// error when it ends first); the node runs until Close.
func Open(ctx context.Context, opts Options) (*Node, error) {
	if opts.ID < 0 || opts.Dir == "" || opts.RaftAddr == "" {
		return nil, fmt.Errorf("%w: node needs an id >= 0, a dir and a raft address", ErrInvalidCommand)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if host, _, err := net.SplitHostPort(opts.RaftAddr); err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
		return nil, fmt.Errorf("%w: raft address %q must be a host:port peers can dial", ErrInvalidCommand, opts.RaftAddr)
	}
	peers := opts.Peers
	if len(peers) == 0 {
		peers = []Peer{{ID: opts.ID, RaftAddr: opts.RaftAddr}}
	}
	if !slices.ContainsFunc(peers, func(p Peer) bool { return p.ID == opts.ID }) {
		return nil, fmt.Errorf("%w: node %d is not among its peers", ErrInvalidCommand, opts.ID)
	}
	if err := fileutil.MkdirAllDurable(opts.Dir); err != nil {
		return nil, err
	}
	n := &Node{opts: opts, log: opts.Logger.With("node", opts.ID), watchers: map[int]chan struct{}{}}
	hlog := newHCLogger(n.log)
	n.fsm = newFSM(func() { n.keepRaftID(); n.notify() })

	var err error
	n.store, err = raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(opts.Dir, "raft.db"),
		// Fail instead of hanging when another process has the file open.
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(opts.Dir, 2, hlog)
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	// bbolt and raft fsync what they write into raft.db and snapshots/,
	// not the entries of the two in Dir: without this a machine crash
	// after the first start could lose the term and vote raft promised.
	if err := fileutil.SyncDir(opts.Dir); err != nil {
		n.store.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if snaps, err = n.setLostSnapshotsAside(snaps, hlog); err != nil {
		n.store.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	existing, err := raft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("cluster: read raft state: %w", err)
	}
	n.hasState.Store(existing)
	if existing {
		idx, err := lastIndex(n.store, snaps)
		if err != nil {
			n.store.Close()
			return nil, fmt.Errorf("cluster: read raft state: %w", err)
		}
		n.openIndex.Store(idx)
	}
	if err := n.loadRaftID(); err != nil {
		n.store.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	stream, err := listenStream(opts.RaftAddr, n.serveProbe, n.raftID, n.refuseForeign)
	n.stream = stream
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("cluster: raft transport: %w", err)
	}
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
	})

	conf := raft.DefaultConfig()
	conf.LocalID = serverID(opts.ID)
	conf.Logger = hlog
	if opts.HeartbeatTimeout > 0 {
		conf.HeartbeatTimeout = opts.HeartbeatTimeout
	}
	if opts.ElectionTimeout > 0 {
		conf.ElectionTimeout = opts.ElectionTimeout
	}
	if opts.LeaderLeaseTimeout > 0 {
		conf.LeaderLeaseTimeout = opts.LeaderLeaseTimeout
	}
	if opts.SnapshotThreshold > 0 {
		conf.SnapshotThreshold = opts.SnapshotThreshold
	}
	if opts.TrailingLogs > 0 {
		conf.TrailingLogs = opts.TrailingLogs
	}

	fail := func(err error) (*Node, error) {
		n.trans.Close() // and the stream layer
		n.stream.waitHandlers(10 * time.Second)
		n.store.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if !existing {
		bootstrap, err := n.admit(ctx, peers)
		if err != nil {
			return fail(fmt.Errorf("join: %w", err))
		}
		if bootstrap {
			if err := n.bootstrap(conf, snaps, peers); err != nil {
				return fail(fmt.Errorf("bootstrap: %w", err))
			}
			n.openIndex.Store(1)
		}
		n.hasState.Store(true)
	}
	n.stream.serveRaft()
	if n.raft, err = raft.NewRaft(conf, n.fsm, n.store, n.store, snaps, n.trans); err != nil {
		return fail(fmt.Errorf("start raft: %w", err))
	}
	n.live.Store(n.raft)

	// Raft leadership changes wake watchers too: the controller role moves
	// with it.
	n.obsCh = make(chan raft.Observation, 16)
	n.obsDone = make(chan struct{})
	n.obs = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.obs)
	go func() {
		defer close(n.obsDone)
		for range n.obsCh {
			n.nameGroup()
			n.notify()
		}
	}()
	n.nameGroup() // in case it led before the observer was registered
	return n, nil
}

// bootstrap writes a new cluster's configuration, all peers voters, at
// index 1 (admission.go).
func (n *Node) bootstrap(conf *raft.Config, snaps raft.SnapshotStore, peers []Peer) error {
	var cfg raft.Configuration
	for _, p := range peers {
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: serverID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	return raft.BootstrapCluster(conf, n.store, n.store, snaps, n.trans, cfg)
}

// setLostSnapshotsAside: a node whose raft.db has no term and no log
// entries but whose snapshot store has snapshots lost raft.db (removed,
// or a disk restored in part). raft.HasExistingState would take the
// snapshot for state and the node would vote at once, with its term, vote
// and every entry after the snapshot forgotten. Such a node is empty: its
// snapshots move to snapshots.lost-<unix time> (kept for the operator,
// never deleted) and it goes through admission. It returns the snapshot
// store to use.
func (n *Node) setLostSnapshotsAside(snaps *raft.FileSnapshotStore, hlog hclog.Logger) (*raft.FileSnapshotStore, error) {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return snaps, err
	}
	term, err := n.store.GetUint64([]byte("CurrentTerm")) // raft's key
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return nil, fmt.Errorf("read raft term: %w", err)
	}
	last, err := n.store.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("read raft log: %w", err)
	}
	if term > 0 || last > 0 {
		return snaps, nil
	}
	from := filepath.Join(n.opts.Dir, "snapshots") // raft's FileSnapshotStore directory
	to := fmt.Sprintf("%s.lost-%d", from, time.Now().Unix())
	n.log.Warn("raft.db has no term and no log but snapshots exist: this node lost its Raft state; moving the snapshots aside and joining as an empty node",
		"snapshots", len(list), "latest_index", list[0].Index, "moved_to", to)
	if err := os.Rename(from, to); err != nil {
		return nil, fmt.Errorf("set lost snapshots aside: %w", err)
	}
	snaps, err = raft.NewFileSnapshotStoreWithLogger(n.opts.Dir, 2, hlog) // a new, empty snapshots/
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	if err := fileutil.SyncDir(n.opts.Dir); err != nil { // the rename and the new directory
		return nil, fmt.Errorf("set lost snapshots aside: %w", err)
	}
	return snaps, nil
}

// lastIndex is the last index of the log or of the latest snapshot.
func lastIndex(logs raft.LogStore, snaps raft.SnapshotStore) (uint64, error) {
	idx, err := logs.LastIndex()
	if err != nil {
		return 0, err
	}
	list, err := snaps.List()
	if err != nil {
		return 0, err
	}
	if len(list) > 0 {
		idx = max(idx, list[0].Index)
	}
	return idx, nil
}

func serverID(id int32) raft.ServerID { return raft.ServerID(strconv.Itoa(int(id))) }

// Apply replicates cmd and applies it, returning the command's own refusal
// (ErrStaleEpoch, ErrNotInISR, ...) or nil once it is applied on this node
// and committed on a majority. On a node that is not the Raft leader it
// returns a *NotLeaderError naming the leader. If leadership is lost while
// the entry is in flight, the entry may or may not commit: commands carry
// epochs, so retrying on the new leader is refused if the first try took.
func (n *Node) Apply(ctx context.Context, cmd Command) error {
	if cmd.RetireNode != nil {
		return fmt.Errorf("%w: retire_node goes to Controller.Propose, not the raft log", ErrInvalidCommand)
	}
	data, err := cmd.Encode()
	if err != nil {
		return err
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return n.notLeader()
		}
		return fmt.Errorf("cluster: apply: %w", err)
	}
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

func (n *Node) notLeader() error {
	id, addr := n.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// Leader returns the Raft leader's node id and Raft address as this node
// knows them, or -1 and "" while none is known.
func (n *Node) Leader() (int32, string) { return leaderOf(n.raft) }

func leaderOf(r *raft.Raft) (int32, string) {
	addr, id := r.LeaderWithID()
	v, err := strconv.ParseInt(string(id), 10, 32)
	if err != nil || id == "" {
		return -1, ""
	}
	return int32(v), string(addr)
}

// IsLeader reports whether this node is the Raft leader (the controller).
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// State returns a copy of the state as applied on this node. On a follower
// it may lag the leader; State().Index tells how far it got.
func (n *Node) State() *State { return n.fsm.read() }

// View is State without the copy: the same value for every caller until
// the next change, which callers must treat as read-only.
func (n *Node) View() *State { return n.fsm.view.Load() }

// Watch returns a channel that receives a value after the state changes
// (a command applied, a snapshot restored) or the Raft leader changes.
// Signals coalesce: a watcher reads State() after each one and compares
// it with what it saw (see LeaderChanges). cancel stops the signals.
func (n *Node) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	id := n.nextW
	n.nextW++
	n.watchers[id] = ch
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(n.watchers, id)
		n.mu.Unlock()
	}
}

func (n *Node) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ch := range n.watchers {
		select {
		case ch <- struct{}{}:
		default: // a signal is pending already
		}
	}
}

// Snapshot makes raft take a snapshot now (and compact the log behind it).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Close stops raft and closes the transport and the store. The node's Raft
// state stays in Dir for the next Open.
func (n *Node) Close() error {
	err := n.raft.Shutdown().Error()
	n.raft.DeregisterObserver(n.obs)
	close(n.obsCh)
	<-n.obsDone
	n.bg.Wait()            // nameGroup's proposal, ended by the shutdown
	n.trans.CloseStreams() // our pooled connections to peers
	terr := n.trans.Close()
	// A handler that read a peer's heartbeat before its socket closed may
	// still save a term: the store closes after the handlers are done.
	if !n.stream.waitHandlers(10 * time.Second) {
		n.log.Warn("raft connection handlers still running after 10 s; closing the store anyway")
	}
	return errors.Join(err, terr, n.store.Close())
}

// newHCLogger sends raft's hclog lines to slog at their level.
func newHCLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name: "raft", Level: hclog.Info, Output: &slogWriter{l: l},
		DisableTime: true,
	})
}

// slogWriter parses hclog's "[LEVEL] name: message: k=v" lines.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		level := slog.LevelInfo
		for tag, lv := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug} {
			if rest, ok := strings.CutPrefix(line, tag); ok {
				level, line = lv, strings.TrimSpace(rest)
				break
			}
		}
		line = strings.TrimPrefix(strings.TrimPrefix(line, "[INFO]"), " ")
		w.l.Log(context.Background(), level, strings.TrimSpace(line))
	}
	return len(p), nil
}

// WaitCaughtUp waits until this node has applied every entry the cluster
// had committed when it last heard from the leader (on the leader: every
// entry of earlier terms), so its State is not a stale one from before a
// restart. A node that reconciles local data against the State (deleting
// what the State lacks) must wait for this first.
func (n *Node) WaitCaughtUp(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if n.IsLeader() {
			if n.raft.Barrier(time.Second).Error() == nil {
				return nil
			}
		} else if id, _ := n.Leader(); id >= 0 && time.Since(n.raft.LastContact()) < 2*time.Second {
			if commit := n.raft.CommitIndex(); commit > 0 && n.raft.AppliedIndex() >= commit {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Voters is the number of voters in the Raft configuration: the cluster's
// nodes as --peers named them at bootstrap.
func (n *Node) Voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	return len(f.Configuration().Servers)
}

// Term is the node's current Raft term. A node that is leader in the same
// term has held the leadership without a break: anything it loaded when it
// took over in that term is still its own.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }
