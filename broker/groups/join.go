package groups

import (
	"bytes"
	"fmt"
	"time"
)

// JoinRequest is a member joining (or joining again) a group.
type JoinRequest struct {
	Group string
	// MemberID is empty for a new member.
	MemberID string
	// InstanceID is a static member's id (group.instance.id), or empty.
	InstanceID           string
	ClientID, ClientHost string
	ProtocolType         string
	Protocols            []Protocol // in the member's order of preference
	SessionTimeout       time.Duration
	RebalanceTimeout     time.Duration
	// RequireKnownMemberID answers a new member (without an instance id)
	// with ErrMemberIDRequired and its id, which it must join with.
	RequireKnownMemberID bool
}

// JoinResult ends a join: the member's id and generation, and for the
// leader every member's metadata for the chosen protocol.
type JoinResult struct {
	Err          error
	MemberID     string
	Generation   int32
	ProtocolType string
	Protocol     string
	Leader       string
	Members      []JoinedMember
}

// JoinedMember is one member as the leader sees it.
type JoinedMember struct {
	MemberID, InstanceID string
	Metadata             []byte
}

// Join adds the member to the group's next generation. The result comes
// on the channel once the rebalance completes: when every member has
// joined again, or the rebalance timeout removed those that did not.
// The call itself decides the member's place (call it in request order);
// only the wait is asynchronous.
func (c *Coordinator) Join(r JoinRequest) <-chan JoinResult {
	ch := make(chan JoinResult, 1)
	fail := func(err error) <-chan JoinResult {
		ch <- JoinResult{Err: err, MemberID: r.MemberID}
		return ch
	}
	switch {
	case r.Group == "":
		return fail(ErrInvalidGroupID)
	case r.SessionTimeout < c.opts.MinSessionTimeout || r.SessionTimeout > c.opts.MaxSessionTimeout:
		return fail(fmt.Errorf("%w: %v (allowed %v to %v)", ErrInvalidSessionTimeout, r.SessionTimeout, c.opts.MinSessionTimeout, c.opts.MaxSessionTimeout))
	case r.ProtocolType == "" || len(r.Protocols) == 0:
		return fail(fmt.Errorf("%w: no protocol type or protocols", ErrInconsistentProtocol))
	}
	if r.RebalanceTimeout <= 0 {
		r.RebalanceTimeout = r.SessionTimeout // v0 has none
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fail(ErrUnavailable)
	}
	g := c.groups[r.Group]
	if g == nil {
		if r.MemberID != "" {
			return fail(fmt.Errorf("%w: %s is not in group %s", ErrUnknownMember, r.MemberID, r.Group))
		}
		g = &group{id: r.Group, members: map[string]*member{}, instances: map[string]string{}, pending: map[string]time.Time{}}
		c.groups[r.Group] = g
	}
	if !g.supports(r.ProtocolType, r.Protocols) {
		c.dropIfEmpty(g)
		return fail(fmt.Errorf("%w: the group uses protocol type %q and protocols it shares", ErrInconsistentProtocol, g.protocolType))
	}
	now := time.Now()
	if r.MemberID == "" {
		if old, ok := g.instances[r.InstanceID]; ok && r.InstanceID != "" {
			c.rejoinStatic(g, g.members[old], r, ch)
			return ch
		} else if r.InstanceID == "" && r.RequireKnownMemberID {
			id := newMemberID(r.ClientID)
			c.addPending(g, id, now.Add(r.SessionTimeout))
			ch <- JoinResult{Err: ErrMemberIDRequired, MemberID: id}
			return ch
		}
		r.MemberID = newMemberID(r.ClientID)
		c.addMember(g, r, ch)
		return ch
	}
	if exp, ok := g.pending[r.MemberID]; ok {
		delete(g.pending, r.MemberID)
		if now.Before(exp) {
			c.addMember(g, r, ch)
			return ch
		}
	}
	m := g.members[r.MemberID]
	if err := g.checkMember(r.MemberID, r.InstanceID); err != nil {
		c.dropIfEmpty(g)
		return fail(err)
	}
	changed := !sameProtocols(m.protocols, r.Protocols)
	m.protocols, m.session, m.rebalance = r.Protocols, r.SessionTimeout, r.RebalanceTimeout
	m.clientID, m.clientHost = r.ClientID, r.ClientHost
	m.touch()
	switch {
	case g.state == PreparingRebalance:
		m.answer(ErrRebalanceInProgress) // a join it sent before, now replaced
		m.join = ch
		c.tryCompleteJoin(g)
	case !changed && m.join == nil && (g.state == CompletingRebalance || (g.state == Stable && m.id != g.leader)):
		// A member joining again with nothing new (its answer was lost):
		// the generation stands. The leader gets every member again, as
		// in Kafka: it needs them to assign.
		ch <- g.joinResult(m, m.id == g.leader)
	default:
		m.join = ch
		c.prepareRebalance(g, "member "+m.id+" joined again")
	}
	return ch
}

// rejoinStatic takes a known static member back after its restart
// (KIP-345): it gets a new member id in place of the old one, which is
// fenced, and keeps its place, leadership and assignment. In a Stable
// group with its protocols unchanged it is answered at once with the
// current generation, and the other members go on undisturbed; the
// answer names the leader as it was, so a restarted leader does not
// assign again (a Stable group would not pass a new assignment on).
// Otherwise the group rebalances, as in Kafka: in CompletingRebalance too,
// for the leader may be assigning to the old id.
func (c *Coordinator) rejoinStatic(g *group, m *member, r JoinRequest, ch chan JoinResult) {
	m.answer(ErrFencedInstance) // waits under the old id
	leader, old := g.leader, m.id
	delete(g.members, old)
	m.id = newMemberID(r.ClientID)
	g.members[m.id] = m
	g.instances[m.instanceID] = m.id
	if g.leader == old {
		g.leader = m.id
	}
	changed := !sameProtocols(m.protocols, r.Protocols)
	m.protocols, m.session, m.rebalance = r.Protocols, r.SessionTimeout, r.RebalanceTimeout
	m.clientID, m.clientHost = r.ClientID, r.ClientHost
	m.touch()
	c.log.Info("static group member rejoined with a new member id", "group", g.id, "instance", m.instanceID, "member", m.id)
	switch {
	case g.state == Stable && !changed:
		res := g.joinResult(m, false)
		res.Leader = leader
		ch <- res
	case g.state == PreparingRebalance:
		m.join = ch
		c.tryCompleteJoin(g)
	default:
		m.join = ch
		c.prepareRebalance(g, "static member "+m.instanceID+" rejoined")
	}
}

// checkMember finds the member, fencing a static member's replaced id.
func (g *group) checkMember(memberID, instanceID string) error {
	if instanceID != "" {
		if id, ok := g.instances[instanceID]; ok && id != memberID {
			return fmt.Errorf("%w: %s is now member %s", ErrFencedInstance, instanceID, id)
		}
	}
	if g.members[memberID] == nil {
		return fmt.Errorf("%w: %q is not in group %s", ErrUnknownMember, memberID, g.id)
	}
	return nil
}

func sameProtocols(a, b []Protocol) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !bytes.Equal(a[i].Metadata, b[i].Metadata) {
			return false
		}
	}
	return true
}

// supports says whether a member with these protocols can join: any for
// a group without members, else the same type and a protocol every
// member supports.
func (g *group) supports(protocolType string, ps []Protocol) bool {
	if len(g.members) == 0 {
		return true
	}
	if protocolType != g.protocolType {
		return false
	}
	for _, name := range g.candidates() {
		for _, p := range ps {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// candidates lists the protocols every member supports, in the first
// member's order.
func (g *group) candidates() []string {
	var out []string
	ms := g.sortedMembers()
	if len(ms) == 0 {
		return nil
	}
next:
	for _, p := range ms[0].protocols {
		for _, m := range ms[1:] {
			if !m.hasProtocol(p.Name) {
				continue next
			}
		}
		out = append(out, p.Name)
	}
	return out
}

func (m *member) hasProtocol(name string) bool {
	for _, p := range m.protocols {
		if p.Name == name {
			return true
		}
	}
	return false
}

// selectProtocol is the candidate most members prefer: each votes for
// the first candidate in its own order (ties: the earliest candidate).
func (g *group) selectProtocol() string {
	cands := g.candidates()
	votes := map[string]int{}
	for _, m := range g.members {
		for _, p := range m.protocols {
			if contains(cands, p.Name) {
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, name := range cands {
		if best == "" || votes[name] > votes[best] {
			best = name
		}
	}
	return best
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c *Coordinator) addMember(g *group, r JoinRequest, ch chan JoinResult) {
	if len(g.members) == 0 {
		g.protocolType = r.ProtocolType
	}
	g.joinSeq++
	m := &member{id: r.MemberID, instanceID: r.InstanceID, clientID: r.ClientID, clientHost: r.ClientHost,
		seq: g.joinSeq, protocols: r.Protocols, session: r.SessionTimeout, rebalance: r.RebalanceTimeout, join: ch}
	g.members[m.id] = m
	if m.instanceID != "" {
		g.instances[m.instanceID] = m.id
	}
	m.deadline = time.Now().Add(m.session)
	m.timer = time.AfterFunc(m.session, func() { c.expire(g, m) })
	if g.state == PreparingRebalance {
		c.tryCompleteJoin(g)
		return
	}
	c.prepareRebalance(g, "member "+m.id+" joined")
}

// removeMember takes a member out of the group, answering its waits with
// err. The caller moves the group on (prepareRebalance or tryCompleteJoin).
func (c *Coordinator) removeMember(g *group, m *member, err error) {
	m.answer(err)
	m.timer.Stop()
	delete(g.members, m.id)
	if m.instanceID != "" && g.instances[m.instanceID] == m.id {
		delete(g.instances, m.instanceID)
	}
	if g.leader == m.id {
		g.leader = ""
	}
}

// afterRemoval moves the group on once members left.
func (c *Coordinator) afterRemoval(g *group, why string) {
	switch g.state {
	case Stable, CompletingRebalance:
		c.prepareRebalance(g, why)
	case PreparingRebalance:
		c.tryCompleteJoin(g)
	}
}

// touch extends the member's session from now.
func (m *member) touch() { m.deadline = time.Now().Add(m.session) }

// expire runs when a member's session timer fires: a member not heard
// from within its session timeout (and not waiting for a join or sync
// answer, which keeps it alive) leaves the group.
func (c *Coordinator) expire(g *group, m *member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.groups[g.id] != g || g.members[m.id] != m {
		return
	}
	now := time.Now()
	switch {
	case m.join != nil || m.sync != nil:
		m.timer.Reset(m.session)
		return
	case now.Before(m.deadline):
		m.timer.Reset(m.deadline.Sub(now))
		return
	}
	c.log.Info("group member session expired", "group", g.id, "member", m.id, "session_timeout", m.session)
	c.m.expired.Inc()
	c.removeMember(g, m, ErrUnknownMember)
	c.afterRemoval(g, "member "+m.id+" session expired")
	c.dropIfEmpty(g)
}

// prepareRebalance starts a rebalance: every member must join again
// within the longest rebalance timeout among them.
func (c *Coordinator) prepareRebalance(g *group, why string) {
	if g.state == CompletingRebalance {
		for _, m := range g.members {
			if m.sync != nil {
				m.sync <- SyncResult{Err: ErrRebalanceInProgress}
				m.sync = nil
			}
		}
	}
	for _, m := range g.members {
		m.assignment = nil
	}
	g.state = PreparingRebalance
	g.stopRebalanceTimer()
	g.rebalanceID++
	id := g.rebalanceID
	var timeout time.Duration
	for _, m := range g.members {
		timeout = max(timeout, m.rebalance)
	}
	c.log.Debug("group rebalancing", "group", g.id, "reason", why, "timeout", timeout)
	g.rebalance = time.AfterFunc(timeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.closed && c.groups[g.id] == g && g.state == PreparingRebalance && g.rebalanceID == id {
			c.completeJoin(g)
		}
	})
	c.tryCompleteJoin(g)
}

// tryCompleteJoin completes the rebalance once every member has joined.
func (c *Coordinator) tryCompleteJoin(g *group) {
	for _, m := range g.members {
		if m.join == nil {
			return
		}
	}
	c.completeJoin(g)
}

// completeJoin starts the next generation with the members that joined;
// the others are removed.
func (c *Coordinator) completeJoin(g *group) {
	g.stopRebalanceTimer()
	for _, m := range g.members {
		if m.join == nil {
			c.log.Info("group member removed: it did not join the rebalance in time", "group", g.id, "member", m.id)
			c.m.expired.Inc()
			c.removeMember(g, m, ErrUnknownMember)
		}
	}
	g.generation++
	c.m.rebalances.Inc()
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader = Empty, "", ""
		c.dropIfEmpty(g)
		return
	}
	g.protocol = g.selectProtocol()
	if g.leader == "" {
		g.leader = g.sortedMembers()[0].id
	}
	g.state = CompletingRebalance
	for _, m := range g.members {
		m.join <- g.joinResult(m, m.id == g.leader)
		m.join = nil
		m.touch()
	}
}

func (g *group) joinResult(m *member, withMembers bool) JoinResult {
	r := JoinResult{MemberID: m.id, Generation: g.generation, ProtocolType: g.protocolType, Protocol: g.protocol, Leader: g.leader}
	if withMembers {
		for _, o := range g.sortedMembers() {
			r.Members = append(r.Members, JoinedMember{MemberID: o.id, InstanceID: o.instanceID, Metadata: o.metadata(g.protocol)})
		}
	}
	return r
}

// addPending holds a member id handed out with ErrMemberIDRequired until
// exp. One timer per group, set for the earliest expiry, drops expired
// ids (no goroutine or timer per id), so a client that never joins with
// its id (it died, or it probes group ids) leaves nothing behind.
func (c *Coordinator) addPending(g *group, id string, exp time.Time) {
	g.pending[id] = exp
	if g.pendingTimer == nil || exp.Before(g.pendingAt) {
		c.armPending(g, exp)
	}
}

// armPending sets the group's pending-id timer to fire at at.
func (c *Coordinator) armPending(g *group, at time.Time) {
	if g.pendingTimer != nil {
		g.pendingTimer.Stop()
	}
	g.pendingAt = at
	g.pendingTimer = time.AfterFunc(time.Until(at), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || c.groups[g.id] != g || !g.pendingAt.Equal(at) {
			return // stale: the group was dropped, or the timer moved
		}
		g.pendingTimer = nil
		c.dropIfEmpty(g)
	})
}

// dropIfEmpty drops expired pending member ids, and forgets a group
// without members or pending member ids; its committed offsets stay.
func (c *Coordinator) dropIfEmpty(g *group) {
	now := time.Now()
	var next time.Time
	for p, exp := range g.pending {
		switch {
		case !now.Before(exp):
			delete(g.pending, p)
		case next.IsZero() || exp.Before(next):
			next = exp
		}
	}
	if g.pendingTimer == nil && !next.IsZero() {
		c.armPending(g, next) // for the earliest id left
	}
	if len(g.members) == 0 && len(g.pending) == 0 && g.state != PreparingRebalance {
		g.stopTimers()
		if c.groups[g.id] == g {
			delete(c.groups, g.id)
			if c.store.hasGroup(g.id) {
				c.emptySince[g.id] = now // its offsets' retention starts
			}
		}
	}
}

// SyncRequest is a member asking for its assignment; the leader's carries
// every member's.
type SyncRequest struct {
	Group, MemberID, InstanceID string
	Generation                  int32
	// ProtocolType and Protocol, when set, must be the group's.
	ProtocolType, Protocol *string
	Assignments            map[string][]byte
}

// SyncResult is a member's assignment for the generation.
type SyncResult struct {
	Err          error
	ProtocolType string
	Protocol     string
	Assignment   []byte
}

// Sync answers with the member's assignment once the leader has sent
// them all (at once if it has).
func (c *Coordinator) Sync(r SyncRequest) <-chan SyncResult {
	ch := make(chan SyncResult, 1)
	fail := func(err error) <-chan SyncResult { ch <- SyncResult{Err: err}; return ch }
	if r.Group == "" {
		return fail(ErrInvalidGroupID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fail(ErrUnavailable)
	}
	g := c.groups[r.Group]
	if g == nil {
		return fail(fmt.Errorf("%w: group %s has no members", ErrUnknownMember, r.Group))
	}
	if err := g.checkMember(r.MemberID, r.InstanceID); err != nil {
		return fail(err)
	}
	if r.Generation != g.generation {
		return fail(fmt.Errorf("%w: %d, the group is at %d", ErrIllegalGeneration, r.Generation, g.generation))
	}
	if (r.ProtocolType != nil && *r.ProtocolType != g.protocolType) || (r.Protocol != nil && *r.Protocol != g.protocol) {
		return fail(ErrInconsistentProtocol)
	}
	m := g.members[r.MemberID]
	m.touch()
	switch g.state {
	case PreparingRebalance:
		return fail(ErrRebalanceInProgress)
	case Stable:
		ch <- SyncResult{ProtocolType: g.protocolType, Protocol: g.protocol, Assignment: m.assignment}
		return ch
	}
	// CompletingRebalance.
	if m.sync != nil {
		m.sync <- SyncResult{Err: ErrRebalanceInProgress}
	}
	m.sync = ch
	if m.id == g.leader {
		for _, o := range g.members {
			o.assignment = r.Assignments[o.id]
			if o.assignment == nil {
				o.assignment = []byte{}
			}
		}
		g.state = Stable
		for _, o := range g.members {
			if o.sync != nil {
				o.sync <- SyncResult{ProtocolType: g.protocolType, Protocol: g.protocol, Assignment: o.assignment}
				o.sync = nil
				// Its session restarts with the answer, as in Kafka: it
				// waited (perhaps longer than its session) for the leader.
				o.touch()
			}
		}
	}
	return ch
}

// Heartbeat keeps a member's session alive and tells it whether it must
// join again (ErrRebalanceInProgress).
func (c *Coordinator) Heartbeat(group, memberID, instanceID string, generation int32) error {
	if group == "" {
		return ErrInvalidGroupID
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrUnavailable
	}
	g := c.groups[group]
	if g == nil {
		return fmt.Errorf("%w: group %s has no members", ErrUnknownMember, group)
	}
	if err := g.checkMember(memberID, instanceID); err != nil {
		return err
	}
	if generation != g.generation {
		return fmt.Errorf("%w: %d, the group is at %d", ErrIllegalGeneration, generation, g.generation)
	}
	g.members[memberID].touch()
	if g.state == PreparingRebalance {
		return ErrRebalanceInProgress
	}
	return nil
}

// Leaver is one member leaving: by member id, or by instance id for a
// static member (the member id, if given, must then be the instance's).
type Leaver struct{ MemberID, InstanceID string }

// Leave removes members from the group, which rebalances without them.
// It returns one error per leaver.
func (c *Coordinator) Leave(group string, leavers []Leaver) ([]error, error) {
	if group == "" {
		return nil, ErrInvalidGroupID
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrUnavailable
	}
	g := c.groups[group]
	if g == nil {
		return nil, fmt.Errorf("%w: group %s has no members", ErrUnknownMember, group)
	}
	errs := make([]error, len(leavers))
	left := 0
	for i, l := range leavers {
		id := l.MemberID
		if l.InstanceID != "" {
			cur, ok := g.instances[l.InstanceID]
			switch {
			case !ok:
				errs[i] = fmt.Errorf("%w: instance %s", ErrUnknownMember, l.InstanceID)
				continue
			case id != "" && id != cur:
				errs[i] = fmt.Errorf("%w: %s is now member %s", ErrFencedInstance, l.InstanceID, cur)
				continue
			}
			id = cur
		}
		if _, ok := g.pending[id]; ok {
			delete(g.pending, id)
			continue
		}
		m := g.members[id]
		if m == nil {
			errs[i] = fmt.Errorf("%w: %q", ErrUnknownMember, id)
			continue
		}
		c.removeMember(g, m, ErrUnknownMember)
		left++
	}
	if left > 0 {
		c.afterRemoval(g, fmt.Sprintf("%d members left", left))
	}
	c.dropIfEmpty(g)
	return errs, nil
}
