package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ControllerOptions configure a Controller.
type ControllerOptions struct {
	Node *Node
	// Self is this node's id and addresses. The controller registers it
	// (RegisterNode) while it leads and the state holds something else.
	Self NodeInfo
	// ClusterID is the id the controller gives a cluster that has none yet
	// (a single node's id when it is upgraded into a cluster; nil: a
	// random one).
	ClusterID func() string
	// SessionTimeout: a node not heard from (Heartbeat) for this long is
	// dead. Default 3 s.
	SessionTimeout time.Duration
	// Tick is how often the Raft leader re-evaluates liveness and
	// leadership. Default 200 ms.
	Tick time.Duration
	// Unclean reports unclean.leader.election.enable for a topic; nil is
	// false for every topic.
	Unclean    func(topic string) bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Controller runs on every node; it acts only while its node is the Raft
// leader. It keeps the liveness view (heartbeats, in memory only), moves
// the leadership of partitions whose leader died to an alive in-sync
// replica (Failover), registers nodes, and carries out requests forwarded
// from other nodes (Propose).
//
// Liveness: this node is alive unless retired or restarted; another node
// is alive while it was heard from within SessionTimeout. Every node hears
// every node's heartbeats, so a node that becomes Raft leader judges each
// by its last beat; only a node it never heard from gets SessionTimeout
// from that moment.
type Controller struct {
	o   ControllerOptions
	n   *Node
	log *slog.Logger

	mu      sync.Mutex
	heard   map[int32]time.Time // last heartbeat, or the grace given on becoming leader
	info    map[int32]NodeInfo  // addresses the node's heartbeats carry
	retired map[int32]bool      // dead until the node heartbeats again
	// incarnation is each node's process incarnation as its heartbeats
	// carry it. One that differs from the incarnation the state admitted
	// is a restarted node (a new process, perhaps on a wiped disk): dead
	// until it leads no partition and is in no ISR that has another alive
	// member, when the controller admits the new incarnation (in the
	// state, so every later controller knows it was dealt with).
	incarnation map[int32]uint64
	reconciled  map[int32]uint64 // per node, from its heartbeats (Beat.Reconciled)
	forward     func(context.Context, NodeInfo, Command) error
	leading     bool      // the loop saw this node lead at its last evaluation
	leaderSince time.Time // when this node last became the controller
	assignMu    sync.Mutex
	cancel      context.CancelFunc
	done        chan struct{}
	closeOnce   sync.Once

	leaderChanges *prometheus.CounterVec
	nodesAlive    prometheus.Gauge
	isController  prometheus.Gauge
}

// StartController starts the controller's loop; Close stops it (before the
// Node is closed).
func StartController(o ControllerOptions) *Controller {
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 3 * time.Second
	}
	if o.Tick <= 0 {
		o.Tick = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f := promauto.With(o.Registerer)
	c := &Controller{
		o: o, n: o.Node, log: o.Logger.With("controller", o.Self.ID),
		heard: map[int32]time.Time{}, info: map[int32]NodeInfo{}, retired: map[int32]bool{},
		incarnation: map[int32]uint64{}, reconciled: map[int32]uint64{},
		done: make(chan struct{}),
		leaderChanges: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tierlog_cluster_leader_changes_total",
			Help: "Partition leader changes this node made as controller, by kind: failover (to an in-sync replica), unclean (to an out-of-sync one), offline (to no leader), retire (controlled shutdown).",
		}, []string{"kind"}),
		nodesAlive: f.NewGauge(prometheus.GaugeOpts{
			Name: "tierlog_cluster_nodes_alive",
			Help: "Registered nodes alive as the controller sees them; 0 on nodes that are not the controller, so a sum over nodes counts once.",
		}),
		isController: f.NewGauge(prometheus.GaugeOpts{
			Name: "tierlog_cluster_is_controller",
			Help: "1 while this node is the Raft leader and so the cluster controller.",
		}),
	}
	for _, kind := range []string{"failover", "unclean", "offline", "retire"} {
		c.leaderChanges.WithLabelValues(kind)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(ctx)
	return c
}

// Close stops the loop and waits for it.
func (c *Controller) Close() {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.done
		c.isController.Set(0)
		c.nodesAlive.Set(0)
	})
}

// Beat is one heartbeat: who sends it, which process of it (Incarnation,
// random per start), and how far its local topics follow the metadata
// (Reconciled: the State index its last complete reconcile pass saw).
type Beat struct {
	Node        NodeInfo
	Incarnation uint64
	Reconciled  uint64
}

// Heartbeat records that node b.Node.ID is alive at now. Any node's
// controller takes heartbeats; only the Raft leader's acts on them. A
// retired or dead node that heartbeats is simply alive again (a restarted
// one once admitted); taking it back into a partition's ISR is that
// partition leader's business. The addresses in b.Node are registered by
// the leader when they differ from the state.
func (c *Controller) Heartbeat(b Beat, now time.Time) {
	info, incarnation := b.Node, b.Incarnation
	if info.ID < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reconciled[info.ID] = b.Reconciled
	if prev, ok := c.incarnation[info.ID]; ok && prev != incarnation {
		c.log.Info("node restarted: out of every ISR and leadership before it counts as alive", "node", info.ID)
	}
	c.incarnation[info.ID] = incarnation
	if now.After(c.heard[info.ID]) {
		c.heard[info.ID] = now
	}
	c.info[info.ID] = info
	delete(c.retired, info.ID)
}

// Alive returns when each node was last heard from (or given grace), as
// this node's controller sees it; this node is in it at the current time.
// Nodes counted out (outLocked) are left out.
func (c *Controller) Alive() map[int32]time.Time {
	s := c.n.View()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int32]time.Time, len(c.heard)+1)
	for id, t := range c.heard {
		if !c.outLocked(s, id) {
			out[id] = t
		}
	}
	if !c.outLocked(s, c.o.Self.ID) {
		out[c.o.Self.ID] = time.Now()
	}
	return out
}

// outLocked says whether node id counts as dead whatever its heartbeats
// say: retired (until it heartbeats again) or restarted (until its new
// incarnation is admitted). c.mu held.
func (c *Controller) outLocked(s *State, id int32) bool {
	return c.retired[id] || c.restartedLocked(s, id)
}

// restartedLocked says whether node id's heartbeats carry an incarnation
// other than the one the state admitted (c.mu held).
func (c *Controller) restartedLocked(s *State, id int32) bool {
	inc, heard := c.incarnation[id]
	admitted := s.Nodes[id].Incarnation
	return heard && admitted != 0 && admitted != inc
}

// aliveAt returns the liveness test for one evaluation at now.
func (c *Controller) aliveAt(now time.Time) func(int32) bool {
	s := c.n.View()
	c.mu.Lock()
	heard := make(map[int32]time.Time, len(c.heard))
	for id, t := range c.heard {
		if !c.outLocked(s, id) {
			heard[id] = t
		}
	}
	selfOut := c.outLocked(s, c.o.Self.ID)
	c.mu.Unlock()
	return func(id int32) bool {
		if id == c.o.Self.ID {
			return !selfOut
		}
		t, ok := heard[id]
		return ok && now.Sub(t) < c.o.SessionTimeout
	}
}

// run evaluates on every tick and whenever the state or the Raft leader
// changes (so a new leader starts its grace at once).
func (c *Controller) run(ctx context.Context) {
	defer close(c.done)
	watch, stop := c.n.Watch()
	defer stop()
	t := time.NewTicker(c.o.Tick)
	defer t.Stop()
	for {
		c.evaluate(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-watch:
		}
	}
}

// evaluate is one controller step: nothing unless this node leads; on
// becoming leader the grace; then registrations and failover. A command
// that fails is logged and decided again on the next step from the state
// as it is then.
func (c *Controller) evaluate(ctx context.Context) {
	if !c.n.IsLeader() {
		c.mu.Lock()
		was := c.leading
		c.leading = false
		c.mu.Unlock()
		if was {
			c.log.Info("no longer the cluster controller")
		}
		c.isController.Set(0)
		c.nodesAlive.Set(0)
		return
	}
	c.mu.Lock()
	taking := !c.leading
	c.mu.Unlock()
	if taking {
		// A new Raft leader may not have applied every committed entry
		// yet: deciding on that older state (a node's admitted
		// incarnation, a moved leader) would undo what the last controller
		// did. Act once caught up; until then, next tick.
		wctx, cancel := context.WithTimeout(ctx, max(c.o.Tick, time.Second))
		err := c.n.WaitCaughtUp(wctx)
		cancel()
		if err != nil {
			return
		}
	}
	now := time.Now()
	s := c.n.View()
	c.mu.Lock()
	if !c.leading {
		c.leading = true
		c.leaderSince = now
		// Every node heartbeats to every node (api/peer), so a new
		// controller knows when each was last heard: a node that died with
		// the old controller is dead one session after its last beat, not
		// one session after this takeover. Only a node never heard from
		// (this node just started) gets a session's grace.
		for id := range s.Nodes {
			if !c.retired[id] && c.heard[id].IsZero() {
				c.heard[id] = now
			}
		}
		c.log.Info("became the cluster controller", "nodes", len(s.Nodes), "grace_for_unheard", c.o.SessionTimeout)
	}
	var register []NodeInfo
	if want := c.registration(s, c.o.Self); s.Nodes[c.o.Self.ID] != want {
		register = append(register, want)
	}
	for id, info := range c.info {
		if want := c.registration(s, info); id != c.o.Self.ID && info.RaftAddr != "" && s.Nodes[id] != want {
			register = append(register, want)
		}
	}
	leaderSince := c.leaderSince
	c.mu.Unlock()
	c.isController.Set(1)

	if s.ClusterID == "" {
		id := ""
		if c.o.ClusterID != nil {
			id = c.o.ClusterID()
		}
		// A node upgraded from a single node proposes its own id (serve
		// does, see cmd/tierlog/cluster.go); it gets a session to do so
		// before the cluster gets a new one.
		if id == "" && now.Sub(leaderSince) >= c.o.SessionTimeout {
			id = newClusterID()
		}
		if id != "" {
			if err := c.apply(ctx, Command{SetClusterID: &SetClusterID{ID: id}}); err != nil {
				c.log.Warn("name the cluster", "err", err)
			} else {
				c.log.Info("cluster named", "cluster_id", id)
			}
		}

	}
	for _, info := range register {
		if err := c.apply(ctx, Command{RegisterNode: &RegisterNode{Node: info}}); err != nil {
			c.log.Warn("register node", "node", info.ID, "err", err)
		} else {
			c.log.Info("registered node", "node", info.ID, "raft_addr", info.RaftAddr, "grpc_addr", info.GRPCAddr, "kafka_addr", info.KafkaAddr)
		}
	}

	alive := c.aliveAt(now)
	n := 0
	for id := range s.Nodes {
		if alive(id) {
			n++
		}
	}
	c.nodesAlive.Set(float64(n))
	for _, cmd := range Failover(s, alive, c.o.Unclean) {
		sl := cmd.SetLeader
		old := s.Topics[sl.Topic].Partitions[sl.Partition]
		if err := c.apply(ctx, cmd); err != nil {
			c.log.Warn("leader election", "topic", sl.Topic, "partition", sl.Partition, "epoch", sl.LeaderEpoch, "err", err)
			continue
		}
		kind := "failover"
		switch {
		case sl.Leader == NoLeader:
			kind = "offline"
		case sl.Unclean:
			kind = "unclean"
		}
		c.leaderChanges.WithLabelValues(kind).Inc()
		lv := slog.LevelInfo
		if kind != "failover" {
			lv = slog.LevelWarn
		}
		c.log.Log(ctx, lv, "partition leader changed", "topic", sl.Topic, "partition", sl.Partition,
			"from", old.Leader, "to", sl.Leader, "epoch", sl.LeaderEpoch+1, "kind", kind, "isr", old.ISR)
	}
	c.readmitRestarted(ctx, s, alive)
	for _, cmd := range ShrinkDead(s, alive) {
		ch := cmd.ShrinkISR
		if err := c.apply(ctx, cmd); err != nil {
			c.log.Warn("take dead replicas out of the ISR", "topic", ch.Topic, "partition", ch.Partition, "replicas", ch.Replicas, "err", err)
			continue
		}
		c.log.Info("dead replicas out of the ISR", "topic", ch.Topic, "partition", ch.Partition, "replicas", ch.Replicas, "epoch", ch.LeaderEpoch)
	}
}

// apply applies one command on this (leading) node, bounded so a stuck
// commit does not stall the loop forever.
func (c *Controller) apply(ctx context.Context, cmd Command) error {
	ctx, cancel := context.WithTimeout(ctx, max(5*time.Second, c.o.SessionTimeout))
	defer cancel()
	return c.n.Apply(ctx, cmd)
}

// newClusterID returns a random cluster id (128 bits, hex).
func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SessionTimeout is how long a node may go unheard before it is dead.
func (c *Controller) SessionTimeout() time.Duration { return c.o.SessionTimeout }

// registration is the record of a node the state should hold: its
// addresses, and the incarnation the state admitted (its current one when
// it is registered for the first time; a restart's new one only through
// readmitRestarted).
// c.mu held.
func (c *Controller) registration(s *State, info NodeInfo) NodeInfo {
	if cur, ok := s.Nodes[info.ID]; ok && cur.Incarnation != 0 {
		info.Incarnation = cur.Incarnation
	} else {
		info.Incarnation = c.incarnation[info.ID]
	}
	return info
}

// readmitRestarted admits a restarted node's new incarnation (and so
// counts it alive again) once the state shows it leads no partition and
// is in no ISR that has another alive member (Failover and ShrinkDead saw
// it dead until then). Where it is the only in-sync replica left it comes
// back as what it is: the partition's best copy, elected at a new epoch.
func (c *Controller) readmitRestarted(ctx context.Context, s *State, alive func(int32) bool) {
	c.mu.Lock()
	var admit []NodeInfo
	for id, n := range s.Nodes {
		if !c.restartedLocked(s, id) {
			continue
		}
		clear := true
		for _, t := range s.Topics {
			for _, p := range t.Partitions {
				if p.Leader == id || (slices.Contains(p.ISR, id) && slices.ContainsFunc(p.ISR, func(r int32) bool { return r != id && alive(r) })) {
					clear = false
				}
			}
		}
		if clear {
			n.Incarnation = c.incarnation[id]
			admit = append(admit, n)
		}
	}
	c.mu.Unlock()
	for _, n := range admit {
		if err := c.apply(ctx, Command{RegisterNode: &RegisterNode{Node: n}}); err != nil {
			c.log.Warn("admit a restarted node", "node", n.ID, "err", err)
			continue
		}
		c.log.Info("restarted node counts as alive again", "node", n.ID)
	}
}

// Reconciled returns, per node heard from, the metadata index its local
// topics last followed (heartbeats reach every node, so any node can ask).
func (c *Controller) Reconciled() map[int32]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.reconciled)
}
