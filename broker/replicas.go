package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/fileutil"
	"github.com/tierlog/tierlog/tiering"
)

// replicaManager keeps this node's partitions in the roles the cluster
// metadata gives them: leader (appends, consumers, the followers'
// positions) or follower (a loop fetching from the leader).
type replicaManager struct {
	b    *Broker
	o    ClusterOptions
	self int32
	log  *slog.Logger

	mu    sync.RWMutex // guards parts; never held across I/O
	parts map[partKey]*partRole

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the watch loop and every partition loop

	// passed is closed and replaced after every reconcile pass, so calls
	// that changed the metadata wait for this node to follow it; kick
	// asks the roles loop for a pass.
	passed atomic.Pointer[chan struct{}]
	kick   chan struct{}
	// settled: the node's metadata is caught up with the cluster's and its
	// topics from before the cluster are imported; only then does a local
	// topic the metadata lacks mean a deleted one.
	settled atomic.Bool
	// reconciled is the metadata index of the last topics pass that left
	// nothing to retry (ReconciledIndex; sent in heartbeats).
	reconciled atomic.Uint64
	// coordTerm is the Raft term in which this node, as controller, last
	// loaded the group offsets (groupsync.go).
	coordTerm atomic.Uint64

	isrChanges  *prometheus.CounterVec // by op: shrink, expand
	truncations prometheus.Counter     // follower truncations to a leader's epoch end
}

type partKey struct {
	topic     string
	partition int32
}

// partRole is one local partition's current role; loops run under it.
type partRole struct {
	// mu fences appends against role changes: AppendAcks holds it (read)
	// from its check that this node leads to the end of its write, and a
	// change of leader or epoch holds it (write) while the old role ends,
	// so no leader's append lands after the node started to follow (and
	// truncate to) another leader.
	mu   sync.RWMutex
	role atomic.Pointer[role]
	// stop ends the role's loop; done is closed when it has returned.
	stop context.CancelFunc
	done chan struct{}
}

// role is immutable: a change of leader, epoch or ISR stores a new one.
type role struct {
	topicID  string
	leader   int32
	epoch    int32
	replicas []int32
	isr      []int32
	// rs tracks the followers while this node leads a replicated partition.
	rs *hot.ReplicaSet
	// ctx ends when the leadership (or followership) at this epoch ends:
	// an acks=all wait under it then fails instead of waiting for
	// replicas that follow someone else.
	ctx    context.Context
	cancel context.CancelFunc
	// expand is signalled by a fetch after which a follower may rejoin
	// the ISR (leader only).
	expand chan struct{}
}

func newReplicaManager(b *Broker, o ClusterOptions) *replicaManager {
	o.fill()
	rm := &replicaManager{b: b, o: o, self: o.NodeID, log: b.opts.Logger.With("node", o.NodeID),
		parts: map[partKey]*partRole{}, kick: make(chan struct{}, 1)}
	f := promauto.With(b.opts.Registerer)
	rm.isrChanges = f.NewCounterVec(prometheus.CounterOpts{Name: "tierlog_replication_isr_changes_total",
		Help: "In-sync set changes this node proposed as a partition leader and the controller accepted, by op (shrink, expand)."}, []string{"op"})
	rm.truncations = f.NewCounter(prometheus.CounterOpts{Name: "tierlog_replication_truncations_total",
		Help: "Times a follower cut its log back to where its last epoch ends on a new leader."})
	if b.opts.Registerer != nil {
		b.opts.Registerer.MustRegister(newReplCollector(b))
	}
	rm.ctx, rm.cancel = context.WithCancel(context.Background())
	ch := make(chan struct{})
	rm.passed.Store(&ch)
	return rm
}

// start begins following the metadata. The first pass has been made when
// it returns.
func (rm *replicaManager) start() {
	rm.topicsPass()
	rm.rolesPass()
	rm.wg.Add(3)
	// Three loops: roles and the group coordinator's seat never wait
	// behind topic creates and deletes, which talk to the bucket (a slow
	// bucket must not delay a failover).
	go func() {
		defer rm.wg.Done()
		rm.loop(rm.rolesPass, rm.kick)
	}()
	go func() {
		defer rm.wg.Done()
		rm.settle()
		rm.loop(rm.topicsPass, nil)
	}()
	go func() {
		defer rm.wg.Done()
		rm.coordinate()
	}()
}

// loop runs pass after every metadata change, every second (a pass that
// failed, a bucket that refused a create, is retried) and on kick.
func (rm *replicaManager) loop(pass func(), kick <-chan struct{}) {
	watch, unwatch := rm.o.Node.Watch()
	defer unwatch()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-rm.ctx.Done():
			return
		case <-watch:
		case <-tick.C:
		case <-kick:
		}
		pass()
	}
}

// settle waits until the metadata is caught up and imports the node's
// topics from before the cluster, retrying until both are done (the
// cluster may have no leader yet).
func (rm *replicaManager) settle() {
	b := newBackoff()
	// The metadata index this node's topics followed before it stopped:
	// its copy of the metadata must be at least that new before a local
	// topic it lacks can mean a deleted one (a restart or a snapshot
	// restore can show an older copy first).
	floor := rm.loadReconciled()
	for rm.ctx.Err() == nil {
		err := rm.o.Node.WaitCaughtUp(rm.ctx)
		var imported []*topic
		if err == nil {
			imported, err = rm.importLocalTopics()
		}
		if err == nil {
			// An import was applied on the controller; this node's copy
			// must show it too.
			err = rm.waitFor("the metadata this node followed before, and its imports", func() bool {
				v := rm.o.Node.View()
				if v.Index < floor {
					return false
				}
				for _, t := range imported {
					if ct, ok := v.Topics[t.name]; !ok || ct.ID != t.id {
						return false
					}
				}
				return true
			})
		}
		if err == nil {
			rm.settled.Store(true)
			rm.topicsPass()
			return
		}
		rm.log.Warn("waiting for the cluster metadata", "err", err)
		b.wait(rm.ctx)
	}
}

// reconciledFile, in the data directory, holds the metadata index the
// node's local topics last followed completely (see settle).
const reconciledFile = "cluster-reconciled"

func (rm *replicaManager) loadReconciled() uint64 {
	raw, err := os.ReadFile(filepath.Join(rm.b.opts.Dir, reconciledFile))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	return n
}

// saveReconciled records index as followed, when it moved (a small
// atomic write per metadata change the topics followed).
func (rm *replicaManager) saveReconciled(index uint64) {
	if index <= rm.reconciled.Load() {
		return
	}
	rm.reconciled.Store(index)
	if err := fileutil.WriteFileAtomic(filepath.Join(rm.b.opts.Dir, reconciledFile), []byte(strconv.FormatUint(index, 10)+"\n"), 0o644); err != nil {
		rm.log.Warn("record the metadata index the topics follow", "err", err)
	}
}

// topicsPass makes the local topics the metadata's and follows the
// controller's seat (bucket topic records), then
// kicks the roles loop: new topics have partitions to give roles.
func (rm *replicaManager) topicsPass() {
	if rm.b.store != nil {
		// The controller writes the bucket's topic records.
		rm.b.store.SetTopicWriter(rm.o.Node.IsLeader())
	}
	v := rm.o.Node.View()
	if rm.reconcileTopics(v) && rm.settled.Load() {
		rm.saveReconciled(v.Index)
	}
	select {
	case rm.kick <- struct{}{}:
	default:
	}
	rm.signalPass()
}

// rolesPass gives every local replica the role the metadata says.
func (rm *replicaManager) rolesPass() {
	rm.reconcileRoles(rm.o.Node.View())
	rm.signalPass()
}

func (rm *replicaManager) signalPass() {
	ch := make(chan struct{})
	close(*rm.passed.Swap(&ch))
}

// waitFor waits, up to 15 s, for this node to have followed the metadata
// far enough that cond holds.
func (rm *replicaManager) waitFor(what string, cond func() bool) error {
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		ch := *rm.passed.Load()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("broker: the cluster accepted the change, but this node had not applied it after 15 s (%s)", what)
		case <-rm.ctx.Done():
			return ErrClosed
		}
	}
}

// reconcileRoles gives every local replica the role the metadata says.
func (rm *replicaManager) reconcileRoles(s *cluster.State) {
	seen := map[partKey]bool{}
	for name, t := range s.Topics {
		lt, err := rm.b.topic(name)
		if err != nil || lt.id != t.ID {
			continue // not created here yet (or an older topic of the name)
		}
		parts := lt.partitions()
		for i, p := range t.Partitions {
			if i >= len(parts) || !slices.Contains(p.Replicas, rm.self) {
				continue
			}
			k := partKey{name, int32(i)}
			seen[k] = true
			rm.apply(k, lt, parts[i], t.ID, p)
		}
	}
	rm.mu.Lock()
	var gone []*partRole
	for k, pr := range rm.parts {
		if !seen[k] {
			gone = append(gone, pr)
			delete(rm.parts, k)
		}
	}
	rm.mu.Unlock()
	for _, pr := range gone {
		pr.end()
	}
}

// apply moves one partition to the role p gives it, if it is not in it.
func (rm *replicaManager) apply(k partKey, t *topic, part *tiering.Partition, topicID string, p cluster.Partition) {
	rm.mu.Lock()
	pr := rm.parts[k]
	if pr == nil {
		pr = &partRole{}
		rm.parts[k] = pr
	}
	rm.mu.Unlock()
	cur := pr.role.Load()
	if cur != nil && cur.leader == p.Leader && cur.epoch == p.LeaderEpoch && cur.topicID == topicID {
		if !slices.Equal(cur.isr, p.ISR) {
			next := *cur
			next.isr = slices.Clone(p.ISR)
			if next.rs != nil {
				next.rs.SetISR(next.isr)
			}
			pr.role.Store(&next)
		}
		return
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.end()
	r := &role{topicID: topicID, leader: p.Leader, epoch: p.LeaderEpoch, replicas: slices.Clone(p.Replicas),
		isr: slices.Clone(p.ISR), expand: make(chan struct{}, 1)}
	r.ctx, r.cancel = context.WithCancel(rm.ctx)
	log := part.Log()
	if p.Leader == rm.self {
		// The epoch is stamped on appends before the node takes any.
		if err := log.SetLeaderEpoch(p.LeaderEpoch); err != nil {
			rm.log.Error("cannot lead partition: leader epoch", "topic", k.topic, "partition", k.partition, "epoch", p.LeaderEpoch, "err", err)
			r.cancel()
			return
		}
		if t.rf > 1 {
			r.rs = hot.NewReplicaSet(log, rm.self, r.replicas, r.isr, log.LogEndOffset(), time.Now())
		}
		rm.log.Info("leading partition", "topic", k.topic, "partition", k.partition, "epoch", p.LeaderEpoch, "isr", p.ISR)
	} else {
		rm.log.Info("following partition", "topic", k.topic, "partition", k.partition, "leader", p.Leader, "epoch", p.LeaderEpoch)
	}
	part.SetLeadership(p.LeaderEpoch, p.Leader == rm.self)
	pr.role.Store(r)
	loopCtx, stop := context.WithCancel(r.ctx)
	pr.stop, pr.done = stop, make(chan struct{})
	rm.wg.Add(1)
	go func() {
		defer rm.wg.Done()
		defer close(pr.done)
		switch {
		case r.rs != nil:
			rm.lead(loopCtx, k, part, r)
		case p.Leader != rm.self && p.Leader != cluster.NoLeader:
			rm.follow(loopCtx, k, part, r)
		}
	}()
}

// end stops the partition's current role and waits for its loop.
func (pr *partRole) end() {
	if r := pr.role.Load(); r != nil {
		r.cancel()
		if r.rs != nil {
			r.rs.Close() // acks=all waiters fail now, not at their timeout
		}
	}
	if pr.stop != nil {
		pr.stop()
		<-pr.done
	}
}

// current returns a partition's role (nil: not a local replica).
func (rm *replicaManager) current(name string, partition int32) *role {
	rm.mu.RLock()
	pr := rm.parts[partKey{name, partition}]
	rm.mu.RUnlock()
	if pr == nil {
		return nil
	}
	return pr.role.Load()
}

// leading returns the partition's role if this node leads it, else a
// *NotLeaderError naming the leader the metadata gives.
func (rm *replicaManager) leading(name string, partition int32) (*role, error) {
	r := rm.current(name, partition)
	if r != nil && r.leader == rm.self && r.ctx.Err() == nil {
		return r, nil
	}
	return nil, rm.notLeader(name, partition)
}

// notLeader is the error for a partition this node does not lead.
func (rm *replicaManager) notLeader(name string, partition int32) error {
	leader := cluster.NoLeader
	if p, err := rm.o.Node.View().Partition(name, partition); err == nil {
		leader = p.Leader
	}
	return &NotLeaderError{Topic: name, Partition: partition, Leader: leader}
}

// close ends every role and loop.
func (rm *replicaManager) close() {
	rm.cancel()
	rm.wg.Wait()
}

// AppendAcks writes one batch to a partition for a producer asking for
// acks (0, 1, or -1 for all), without waiting for the flush policy's
// promise (see hot.Log.AppendDeferred: a front end serving one
// connection's requests in order calls it in request order, so producer
// sequences are checked in that order, and waits afterwards). In a cluster only the leader appends (*NotLeaderError
// elsewhere), and acks=-1 is refused with ErrNotEnoughReplicas, before
// anything is written, while the ISR is smaller than min.insync.replicas.
// It returns the leader epoch the batch was written at; after the
// PendingAppend's Wait, an acks=-1 producer calls WaitReplicated with it.
func (b *Broker) AppendAcks(name string, partition int32, batch []byte, acks int16) (*hot.PendingAppend, int32, error) {
	p, err := b.Partition(name, partition)
	if err != nil {
		return nil, 0, err
	}
	if b.rm == nil {
		pa, err := p.AppendDeferred(batch)
		return pa, p.Log().LeaderEpoch(), err
	}
	pr := b.rm.part(name, partition)
	if pr == nil {
		return nil, 0, b.rm.notLeader(name, partition)
	}
	pr.mu.RLock()
	defer pr.mu.RUnlock()
	r := pr.role.Load()
	if r == nil || r.leader != b.rm.self || r.ctx.Err() != nil {
		return nil, 0, b.rm.notLeader(name, partition)
	}
	if acks == -1 && r.rs != nil {
		// Members this leader has not seen caught up within
		// replica.lag.time.max.ms count as out already: it proposes their
		// removal, but the metadata cannot commit it without a quorum
		// (two of three nodes down), and acks=all must then be refused,
		// not left to time out.
		lagging := r.rs.OutOfSync(time.Now(), b.rm.o.ReplicaLagMax)
		isr := slices.DeleteFunc(r.rs.ISR(), func(id int32) bool { return slices.Contains(lagging, id) })
		if need := b.minISR(name); len(isr) < need {
			return nil, 0, fmt.Errorf("%w: %s/%d has %d in sync (%v; behind for over %v: %v), min.insync.replicas is %d",
				ErrNotEnoughReplicas, name, partition, len(isr), isr, b.rm.o.ReplicaLagMax, lagging, need)
		}
	}
	pa, err := p.AppendDeferred(batch)
	return pa, r.epoch, err
}

// part returns a partition's role holder (nil: not a local replica).
func (rm *replicaManager) part(name string, partition int32) *partRole {
	rm.mu.RLock()
	defer rm.mu.RUnlock()
	return rm.parts[partKey{name, partition}]
}

// ReconciledIndex is the cluster metadata index this node's local topics
// last followed completely (0 for a single node).
func (b *Broker) ReconciledIndex() uint64 {
	if b.rm == nil {
		return 0
	}
	return b.rm.reconciled.Load()
}

// Replicated says whether the topic's partitions have more than one
// replica (acks=all then waits for the others).
func (b *Broker) Replicated(name string) bool {
	t, err := b.topic(name)
	return err == nil && b.rm != nil && t.rf > 1
}

// minISR is the topic's min.insync.replicas.
func (b *Broker) minISR(name string) int {
	t, err := b.topic(name)
	if err != nil {
		return 1
	}
	return int(t.settings.Load().cfg.MinInsyncReplicas)
}

// WaitReplicated waits until the offsets below end, written by AppendAcks
// at leader epoch epoch, are on every in-sync replica (the high watermark
// reached end) and at least min.insync.replicas of them: what acks=all
// promises. A single node, and a partition with one replica, return at
// once. It fails with ErrNotEnoughReplicasAfterAppend when the ISR shrinks
// below the minimum, with ctx's error, and with a *NotLeaderError when
// the node no longer leads at that epoch - even if it leads again at a
// later one, whose log may hold other records at those offsets.
func (b *Broker) WaitReplicated(ctx context.Context, name string, partition int32, end int64, epoch int32) error {
	if b.rm == nil {
		return nil
	}
	r, err := b.rm.leading(name, partition)
	if err != nil {
		return err
	}
	if r.epoch != epoch {
		return b.rm.notLeader(name, partition)
	}
	if r.rs == nil {
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer context.AfterFunc(r.ctx, cancel)()
	defer cancel()
	err = r.rs.WaitReplicated(wctx, end, b.minISR(name))
	if err != nil && (r.ctx.Err() != nil || errors.Is(err, hot.ErrReplicaSetClosed)) && ctx.Err() == nil {
		return b.rm.notLeader(name, partition)
	}
	return err
}

// CheckLeader refuses consumer reads on a node that does not lead the
// partition (cluster only).
func (b *Broker) CheckLeader(name string, partition int32) error {
	if b.rm == nil {
		return nil
	}
	_, err := b.rm.leading(name, partition)
	return err
}
