package groups

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Options configure a Coordinator.
type Options struct {
	// Dir holds the committed-offset log.
	Dir        string
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
	// MinSessionTimeout and MaxSessionTimeout bound a member's session
	// timeout (Kafka's group.min.session.timeout.ms and
	// group.max.session.timeout.ms; 0: 6 s and 30 min).
	MinSessionTimeout, MaxSessionTimeout time.Duration
	// CompactEntries is how many entries the offset log holds before it is
	// rewritten from the live offsets (once at least 4x as many as live);
	// 0: 10000.
	CompactEntries int
	// OffsetsRetention is how long the offsets of a group without members
	// are kept after it became empty, or after their commit if later
	// (Kafka's offsets.retention.minutes); 0: 7 days. A commit's own
	// retention time (OffsetCommit v2 to v4) takes its place.
	OffsetsRetention time.Duration
	// RetentionCheckInterval is how often expired offsets are looked for
	// (Kafka's offsets.retention.check.interval.ms); 0: 10 minutes.
	RetentionCheckInterval time.Duration
	// PartitionExists, if set, says whether a topic's partition exists;
	// Commit leaves out offsets of partitions that do not. It is called
	// under the coordinator's lock, so it must not call the coordinator.
	PartitionExists func(topic string, partition int32) bool
	// Replicate, if set, copies every durable change of the committed
	// offsets (commits; deletions with Offset.Offset < 0), in the log's
	// order, after its fsync; a commit is answered only once it returned,
	// and fails with its error (the change then stays local). A cluster
	// replicates through its Raft log, so the offsets survive the loss of
	// the coordinator's node (see Load).
	Replicate func([]OffsetOf) error
}

// MaxMetadataBytes bounds a committed offset's metadata string (Kafka's
// offset.metadata.max.bytes).
const MaxMetadataBytes = 4096

// State is a group's state in the classic protocol.
type State int

const (
	// Empty: no members; the group may have committed offsets.
	Empty State = iota
	// PreparingRebalance: waiting for the members to join again.
	PreparingRebalance
	// CompletingRebalance: joined; waiting for the leader's assignment.
	CompletingRebalance
	// Stable: every member has its assignment.
	Stable
	// Dead: the group does not exist.
	Dead
)

func (s State) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead"}[s]
}

// Coordinator runs the consumer groups of one node: membership,
// rebalances and committed offsets. One mutex guards every group's state;
// it is held for bookkeeping only, never across file I/O. Timers (one per
// member session, one per rebalance) replace goroutines per member.
type Coordinator struct {
	opts  Options
	log   *slog.Logger
	store *store
	m     metrics

	mu     sync.Mutex
	groups map[string]*group // groups with members or a rebalance under way
	// emptySince is when each group with offsets and without members
	// became empty, as far as this process knows: its offsets' retention
	// runs from then. Groups found at Open count from Open (their
	// members may have left just before a restart).
	emptySince map[string]time.Time
	closed     bool
	stop       chan struct{} // closed by Close: ends the retention loop
	loop       sync.WaitGroup
}

type metrics struct {
	rebalances     prometheus.Counter
	expired        prometheus.Counter
	expiredOffsets prometheus.Counter
}

// Open replays the committed offsets under opts.Dir.
func Open(opts Options) (*Coordinator, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinSessionTimeout <= 0 {
		opts.MinSessionTimeout = 6 * time.Second
	}
	if opts.MaxSessionTimeout <= 0 {
		opts.MaxSessionTimeout = 30 * time.Minute
	}
	if opts.CompactEntries <= 0 {
		opts.CompactEntries = 10000
	}
	if opts.OffsetsRetention <= 0 {
		opts.OffsetsRetention = 7 * 24 * time.Hour
	}
	if opts.RetentionCheckInterval <= 0 {
		opts.RetentionCheckInterval = 10 * time.Minute
	}
	f := promauto.With(opts.Registerer)
	syncDur := f.NewHistogram(prometheus.HistogramOpts{Name: "tierlog_groups_offset_sync_seconds",
		Help:    "Write and fsync of committed offsets (one per group commit of concurrent changes).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)})
	st, err := openStore(opts.Dir, opts.Logger, opts.CompactEntries, syncDur)
	if err != nil {
		return nil, err
	}
	st.replicate = opts.Replicate
	c := &Coordinator{opts: opts, log: opts.Logger, store: st, groups: map[string]*group{},
		emptySince: map[string]time.Time{}, stop: make(chan struct{}),
		m: metrics{
			rebalances: f.NewCounter(prometheus.CounterOpts{Name: "tierlog_groups_rebalances_total",
				Help: "Consumer group rebalances completed."}),
			expired: f.NewCounter(prometheus.CounterOpts{Name: "tierlog_groups_expired_members_total",
				Help: "Group members removed for a missed session or rebalance timeout."}),
			expiredOffsets: f.NewCounter(prometheus.CounterOpts{Name: "tierlog_groups_expired_offsets_total",
				Help: "Committed offsets deleted by the offset retention."}),
		}}
	now := time.Now()
	for _, id := range st.groupIDs() {
		c.emptySince[id] = now
	}
	c.loop.Add(1)
	go c.retain()
	return c, nil
}

// retain deletes expired offsets every RetentionCheckInterval until Close.
func (c *Coordinator) retain() {
	defer c.loop.Done()
	t := time.NewTicker(c.opts.RetentionCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.expireOffsets()
		}
	}
}

// expireOffsets deletes, durably, the offsets of groups without members
// whose retention has passed (Kafka's rule for Empty groups and for
// clients that use a group only to store offsets).
func (c *Coordinator) expireOffsets() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	// Under c.mu, so no commit is queued between the choice and the
	// deletions (the store also skips offsets with a commit on its way).
	es := c.store.expired(time.Now(), c.opts.OffsetsRetention, func(id string) (time.Time, bool) {
		if g := c.groups[id]; g != nil && (len(g.members) > 0 || g.state != Empty) {
			return time.Time{}, false
		}
		return c.emptySince[id], true
	})
	var wait func() error
	if len(es) > 0 {
		wait = c.store.enqueue(es)
	}
	for id := range c.emptySince {
		if !c.store.hasGroup(id) {
			delete(c.emptySince, id)
		}
	}
	c.mu.Unlock()
	if wait == nil {
		return
	}
	if err := wait(); err != nil {
		c.log.Warn("expired committed offsets not deleted; the next check tries again", "offsets", len(es), "err", err)
		return
	}
	c.m.expiredOffsets.Add(float64(len(es)))
	c.log.Info("expired committed offsets deleted", "offsets", len(es), "retention", c.opts.OffsetsRetention)
}

// dropGroupsLocked forgets every group's members, answering their pending
// joins and syncs with err. c.mu is held.
func (c *Coordinator) dropGroupsLocked(err error) {
	for _, g := range c.groups {
		g.stopTimers()
		for _, m := range g.members {
			m.answer(err)
			m.timer.Stop()
		}
	}
	c.groups = map[string]*group{}
}

// Close answers every waiting join and sync with ErrUnavailable, stops
// the timers and closes the offset log.
func (c *Coordinator) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.dropGroupsLocked(ErrUnavailable)
	c.groups = nil
	c.mu.Unlock()
	close(c.stop)
	c.loop.Wait()
	return c.store.close()
}

// group is a group with members or a rebalance under way. A group with
// neither is dropped; its committed offsets stay in the store, where
// List and Describe find it as Empty.
type group struct {
	id           string
	state        State
	generation   int32
	protocolType string
	protocol     string
	leader       string
	members      map[string]*member
	joinSeq      int // orders members by first join
	// instances maps static instance ids to their current member ids.
	instances map[string]string
	// pending holds member ids handed out with ErrMemberIDRequired until
	// they join again or their session timeout passes.
	pending map[string]time.Time
	// pendingTimer fires at pendingAt, the earliest pending id's expiry,
	// to drop expired ids (and the group, if nothing else is left).
	pendingTimer *time.Timer
	pendingAt    time.Time
	// rebalance ends a rebalance whose members did not all join again
	// in time; rebalanceID tells a stale firing from the current one.
	rebalance   *time.Timer
	rebalanceID int
}

// stopTimers stops the group's timers other than its members'.
func (g *group) stopTimers() {
	g.stopRebalanceTimer()
	if g.pendingTimer != nil {
		g.pendingTimer.Stop()
		g.pendingTimer = nil
	}
}

func (g *group) stopRebalanceTimer() {
	if g.rebalance != nil {
		g.rebalance.Stop()
		g.rebalance = nil
	}
}

// sortedMembers lists the members in the order they first joined.
func (g *group) sortedMembers() []*member {
	ms := make([]*member, 0, len(g.members))
	for _, m := range g.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return a.seq - b.seq })
	return ms
}

// Protocol is one assignment protocol a member supports, with its
// metadata for the leader (for consumers: the subscription).
type Protocol struct {
	Name     string
	Metadata []byte
}

type member struct {
	id, instanceID       string
	clientID, clientHost string
	seq                  int
	protocols            []Protocol
	session, rebalance   time.Duration
	deadline             time.Time // the session ends unless heard from before
	timer                *time.Timer
	join                 chan JoinResult // awaiting a join answer
	sync                 chan SyncResult // awaiting a sync answer
	assignment           []byte
}

// answer ends the member's waits with err.
func (m *member) answer(err error) {
	if m.join != nil {
		m.join <- JoinResult{Err: err, MemberID: m.id}
		m.join = nil
	}
	if m.sync != nil {
		m.sync <- SyncResult{Err: err}
		m.sync = nil
	}
}

func (m *member) metadata(protocol string) []byte {
	for _, p := range m.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return nil
}

func newMemberID(clientID string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return clientID + "-" + hex.EncodeToString(b[:])
}

// GroupListing is one group in List.
type GroupListing struct {
	ID           string
	ProtocolType string
	State        State
}

// List lists every group: those with members and those with only
// committed offsets (Empty).
func (c *Coordinator) List() []GroupListing {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []GroupListing
	for _, g := range c.groups {
		out = append(out, GroupListing{ID: g.id, ProtocolType: g.protocolType, State: g.state})
	}
	for _, id := range c.store.groupIDs() {
		if c.groups[id] == nil {
			out = append(out, GroupListing{ID: id, State: Empty})
		}
	}
	slices.SortFunc(out, func(a, b GroupListing) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out
}

// Description describes a group. Protocol, member metadata and
// assignments are given only when the group is Stable, as Kafka does.
type Description struct {
	State        State
	ProtocolType string
	Protocol     string
	Members      []MemberDescription
}

// MemberDescription describes one member.
type MemberDescription struct {
	MemberID, InstanceID string
	ClientID, ClientHost string
	Metadata, Assignment []byte
}

// Describe describes a group; an unknown one is Dead.
func (c *Coordinator) Describe(id string) Description {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[id]
	if g == nil {
		if c.store.hasGroup(id) {
			return Description{State: Empty}
		}
		return Description{State: Dead}
	}
	d := Description{State: g.state, ProtocolType: g.protocolType}
	stable := g.state == Stable
	if stable {
		d.Protocol = g.protocol
	}
	for _, m := range g.sortedMembers() {
		md := MemberDescription{MemberID: m.id, InstanceID: m.instanceID, ClientID: m.clientID, ClientHost: m.clientHost}
		if stable {
			md.Metadata, md.Assignment = m.metadata(g.protocol), m.assignment
		}
		d.Members = append(d.Members, md)
	}
	return d
}

// Delete deletes a group without members and its committed offsets: the
// returned wait reports when the deletion is durable.
func (c *Coordinator) Delete(id string) func() error {
	fail := func(err error) func() error { return func() error { return err } }
	if id == "" {
		return fail(ErrInvalidGroupID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fail(ErrUnavailable)
	}
	if g := c.groups[id]; g != nil && len(g.members) > 0 {
		return fail(fmt.Errorf("%w: %s has %d", ErrNonEmptyGroup, id, len(g.members)))
	}
	es := c.store.groupTombstones(id)
	if len(es) == 0 && c.groups[id] == nil {
		return fail(fmt.Errorf("%w: %s", ErrGroupNotFound, id))
	}
	if g := c.groups[id]; g != nil {
		g.stopTimers()
		delete(c.groups, id)
	}
	if len(es) == 0 {
		return func() error { return nil }
	}
	return c.store.enqueue(es)
}
