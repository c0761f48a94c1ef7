package kafka

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/testutil"
)

// joinReq is a consumer-protocol JoinGroup at the newest version.
func joinReq(group, member string, session, rebalance time.Duration, protocols ...string) *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group, req.MemberID, req.ProtocolType = group, member, "consumer"
	req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = int32(session.Milliseconds()), int32(rebalance.Milliseconds())
	if len(protocols) == 0 {
		protocols = []string{"range"}
	}
	for _, p := range protocols {
		rp := kmsg.NewJoinGroupRequestProtocol()
		rp.Name, rp.Metadata = p, []byte("meta-"+member+"-"+p)
		req.Protocols = append(req.Protocols, rp)
	}
	return req
}

// newMember joins a group as a new member the v4+ way: the first join
// answers MEMBER_ID_REQUIRED with an id, the second joins with it. It
// returns the id and a channel with the answer of the second join.
func newMember(t *testing.T, cl *kgo.Client, group string, session, rebalance time.Duration, meta ...[]byte) (string, <-chan *kmsg.JoinGroupResponse) {
	t.Helper()
	first := request[*kmsg.JoinGroupResponse](t, cl, joinReq(group, "", session, rebalance))
	if first.ErrorCode != kerr.MemberIDRequired.Code || first.MemberID == "" {
		t.Fatalf("first join: error %d, member %q; want MEMBER_ID_REQUIRED with an id", first.ErrorCode, first.MemberID)
	}
	return first.MemberID, rejoin(t, cl, group, first.MemberID, session, rebalance, meta...)
}

// rejoin sends a join that waits for the rebalance, answering on the
// channel.
func rejoin(t *testing.T, cl *kgo.Client, group, member string, session, rebalance time.Duration, meta ...[]byte) <-chan *kmsg.JoinGroupResponse {
	ch := make(chan *kmsg.JoinGroupResponse, 1)
	req := joinReq(group, member, session, rebalance)
	if len(meta) > 0 {
		req.Protocols[0].Metadata = meta[0]
	}
	go func() {
		ch <- request[*kmsg.JoinGroupResponse](t, cl, req)
	}()
	return ch
}

func recvJoin(t *testing.T, ch <-chan *kmsg.JoinGroupResponse) *kmsg.JoinGroupResponse {
	t.Helper()
	select {
	case r := <-ch:
		if r.ErrorCode != 0 {
			t.Fatalf("join: %v", kerr.ErrorForCode(r.ErrorCode))
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("join not answered")
		return nil
	}
}

func syncReq(group, member string, gen int32, assign map[string]string) *kmsg.SyncGroupRequest {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Group, req.MemberID, req.Generation = group, member, gen
	for m, a := range assign {
		ga := kmsg.NewSyncGroupRequestGroupAssignment()
		ga.MemberID, ga.MemberAssignment = m, []byte(a)
		req.GroupAssignment = append(req.GroupAssignment, ga)
	}
	return req
}

func heartbeat(t *testing.T, cl *kgo.Client, group, member string, gen int32) int16 {
	t.Helper()
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.MemberID, req.Generation = group, member, gen
	return request[*kmsg.HeartbeatResponse](t, cl, req).ErrorCode
}

func describe(t *testing.T, cl *kgo.Client, group string) kmsg.DescribeGroupsResponseGroup {
	t.Helper()
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{group}
	resp := request[*kmsg.DescribeGroupsResponse](t, cl, req)
	return resp.Groups[0]
}

// A group through its life: a first member (leader), a second joining
// (the first learns of the rebalance from its heartbeat and joins again),
// the leader's assignment reaching the follower, stale generations and
// unknown members refused, a batch leave rebalancing the rest.
func TestGroupRebalances(t *testing.T) {
	n := startGroupsNode(t)
	cl := n.client()
	const g = "g1"
	sess, reb := 10*time.Second, 10*time.Second

	a, ja := newMember(t, cl, g, sess, reb)
	r := recvJoin(t, ja)
	if r.Generation != 1 || r.LeaderID != a || r.MemberID != a || len(r.Members) != 1 || *r.Protocol != "range" {
		t.Fatalf("first generation: %+v", r)
	}
	if string(r.Members[0].ProtocolMetadata) != "meta-"+a+"-range" {
		t.Fatalf("leader got metadata %q", r.Members[0].ProtocolMetadata)
	}
	s := request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, a, 1, map[string]string{a: "all"}))
	if s.ErrorCode != 0 || string(s.MemberAssignment) != "all" {
		t.Fatalf("sync: error %d, assignment %q", s.ErrorCode, s.MemberAssignment)
	}
	if code := heartbeat(t, cl, g, a, 1); code != 0 {
		t.Fatalf("heartbeat: %v", kerr.ErrorForCode(code))
	}

	// A second member: its join waits for the first to join again.
	b, jb := newMember(t, cl, g, sess, reb)
	testutil.Eventually(t, 5*time.Second, func() bool { return describe(t, cl, g).State == "PreparingRebalance" }, "rebalance starts")
	if code := heartbeat(t, cl, g, a, 1); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("heartbeat during a rebalance: %v", kerr.ErrorForCode(code))
	}
	select {
	case <-jb:
		t.Fatal("second member's join answered before the first joined again")
	default:
	}
	ra := recvJoin(t, rejoin(t, cl, g, a, sess, reb))
	rb := recvJoin(t, jb)
	if ra.Generation != 2 || rb.Generation != 2 || ra.LeaderID != a || rb.LeaderID != a {
		t.Fatalf("second generation: leader view %+v, follower view %+v", ra, rb)
	}
	if len(ra.Members) != 2 || len(rb.Members) != 0 {
		t.Fatalf("only the leader gets the members: %d and %d", len(ra.Members), len(rb.Members))
	}

	// The follower's sync waits for the leader's assignment.
	sb := make(chan *kmsg.SyncGroupResponse, 1)
	go func() { sb <- request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, b, 2, nil)) }()
	testutil.Eventually(t, 5*time.Second, func() bool { return describe(t, cl, g).State == "CompletingRebalance" }, "join completes")
	sa := request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, a, 2, map[string]string{a: "p0", b: "p1"}))
	if sa.ErrorCode != 0 || string(sa.MemberAssignment) != "p0" {
		t.Fatalf("leader sync: error %d, assignment %q", sa.ErrorCode, sa.MemberAssignment)
	}
	if got := <-sb; got.ErrorCode != 0 || string(got.MemberAssignment) != "p1" {
		t.Fatalf("follower sync: error %d, assignment %q", got.ErrorCode, got.MemberAssignment)
	}
	d := describe(t, cl, g)
	if d.State != "Stable" || d.Protocol != "range" || d.ProtocolType != "consumer" || len(d.Members) != 2 ||
		string(d.Members[1].MemberAssignment) != "p1" || d.Members[0].ClientHost != "/127.0.0.1" {
		t.Fatalf("describe: %+v", d)
	}

	if code := heartbeat(t, cl, g, a, 1); code != kerr.IllegalGeneration.Code {
		t.Fatalf("stale generation heartbeat: %v", kerr.ErrorForCode(code))
	}
	if code := heartbeat(t, cl, g, "nobody", 2); code != kerr.UnknownMemberID.Code {
		t.Fatalf("unknown member heartbeat: %v", kerr.ErrorForCode(code))
	}
	if s := request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, b, 1, nil)); s.ErrorCode != kerr.IllegalGeneration.Code {
		t.Fatalf("stale generation sync: %v", kerr.ErrorForCode(s.ErrorCode))
	}

	// Batch leave (v3+): b leaves, an unknown id is refused by itself.
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = g
	for _, id := range []string{b, "nobody"} {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		leave.Members = append(leave.Members, m)
	}
	lr := request[*kmsg.LeaveGroupResponse](t, cl, leave)
	if lr.ErrorCode != 0 || len(lr.Members) != 2 || lr.Members[0].ErrorCode != 0 || lr.Members[1].ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("leave: %+v", lr)
	}
	if code := heartbeat(t, cl, g, a, 2); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("heartbeat after a leave: %v", kerr.ErrorForCode(code))
	}
	r = recvJoin(t, rejoin(t, cl, g, a, sess, reb))
	if r.Generation != 3 || len(r.Members) != 1 {
		t.Fatalf("third generation: %+v", r)
	}
}

// A member whose client vanished (connection gone, no leave) is removed
// when its session timeout passes, and the group rebalances without it.
func TestGroupSessionExpiry(t *testing.T) {
	n := startGroupsNode(t)
	stay := n.client()
	gone := n.client()
	const g = "g-expiry"
	a, ja := newMember(t, stay, g, 10*time.Second, 10*time.Second)
	recvJoin(t, ja)
	request[*kmsg.SyncGroupResponse](t, stay, syncReq(g, a, 1, nil))
	b, jb := newMember(t, gone, g, 500*time.Millisecond, 10*time.Second)
	testutil.Eventually(t, 5*time.Second, func() bool { return describe(t, stay, g).State == "PreparingRebalance" }, "b's join arrives")
	recvJoin(t, rejoin(t, stay, g, a, 10*time.Second, 10*time.Second))
	recvJoin(t, jb)
	request[*kmsg.SyncGroupResponse](t, stay, syncReq(g, a, 2, map[string]string{a: "x", b: "y"}))
	gone.Close() // b's connection ends; it never heartbeats again

	testutil.Eventually(t, 10*time.Second, func() bool {
		return heartbeat(t, stay, g, a, 2) == kerr.RebalanceInProgress.Code
	}, "the vanished member's session expires")
	r := recvJoin(t, rejoin(t, stay, g, a, 10*time.Second, 10*time.Second))
	if r.Generation != 3 || len(r.Members) != 1 || r.Members[0].MemberID != a {
		t.Fatalf("after expiry: %+v", r)
	}
	if code := heartbeat(t, stay, g, b, 3); code != kerr.UnknownMemberID.Code {
		t.Fatalf("expired member's heartbeat: %v", kerr.ErrorForCode(code))
	}
}

// A member that keeps its session but does not join a rebalance within
// the rebalance timeout is left out of the next generation.
func TestGroupRebalanceTimeout(t *testing.T) {
	n := startGroupsNode(t)
	cl := n.client()
	const g = "g-slow"
	sess, reb := 30*time.Second, time.Second
	a, ja := newMember(t, cl, g, sess, reb)
	recvJoin(t, ja)
	request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, a, 1, nil))
	b, jb := newMember(t, cl, g, sess, reb) // a never joins again
	start := time.Now()
	r := recvJoin(t, jb)
	if r.Generation != 2 || r.LeaderID != b || len(r.Members) != 1 {
		t.Fatalf("after the rebalance timeout: %+v", r)
	}
	if waited := time.Since(start); waited < reb/2 {
		t.Fatalf("join answered after %v, before the rebalance timeout", waited)
	}
	if code := heartbeat(t, cl, g, a, 1); code != kerr.UnknownMemberID.Code {
		t.Fatalf("removed member's heartbeat: %v", kerr.ErrorForCode(code))
	}
}

// Bad requests get Kafka's error codes.
func TestGroupErrors(t *testing.T) {
	n := startGroupsNode(t)
	cl := n.client()

	if r := request[*kmsg.JoinGroupResponse](t, cl, joinReq("", "", 10*time.Second, 10*time.Second)); r.ErrorCode != kerr.InvalidGroupID.Code {
		t.Errorf("empty group id: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	if r := request[*kmsg.JoinGroupResponse](t, cl, joinReq("g", "", time.Millisecond, 10*time.Second)); r.ErrorCode != kerr.InvalidSessionTimeout.Code {
		t.Errorf("tiny session timeout: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	if r := request[*kmsg.JoinGroupResponse](t, cl, joinReq("g", "made-up", 10*time.Second, 10*time.Second)); r.ErrorCode != kerr.UnknownMemberID.Code {
		t.Errorf("made-up member id: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	noProto := joinReq("g", "", 10*time.Second, 10*time.Second)
	noProto.Protocols = nil
	if r := request[*kmsg.JoinGroupResponse](t, cl, noProto); r.ErrorCode != kerr.InconsistentGroupProtocol.Code {
		t.Errorf("no protocols: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	// A member whose protocols share nothing with the group's.
	a, ja := newMember(t, cl, "g", 10*time.Second, 10*time.Second)
	recvJoin(t, ja)
	other := joinReq("g", "", 10*time.Second, 10*time.Second, "roundrobin")
	other.Version = 3 // before MEMBER_ID_REQUIRED
	if r := rawRequest[*kmsg.JoinGroupResponse](t, n.addr, other); r.ErrorCode != kerr.InconsistentGroupProtocol.Code {
		t.Errorf("no shared protocol: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	// Static membership: a second member with the same instance id fences
	// the first.
	st := joinReq("g-static", "", 10*time.Second, 10*time.Second)
	inst := "instance-1"
	st.InstanceID = &inst
	first := request[*kmsg.JoinGroupResponse](t, cl, st)
	if first.ErrorCode != 0 {
		t.Fatalf("static join: %v", kerr.ErrorForCode(first.ErrorCode))
	}
	second := request[*kmsg.JoinGroupResponse](t, cl, st)
	if second.ErrorCode != 0 || second.MemberID == first.MemberID {
		t.Fatalf("static rejoin: %v, id %q", kerr.ErrorForCode(second.ErrorCode), second.MemberID)
	}
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.MemberID, hb.Generation, hb.InstanceID = "g-static", first.MemberID, second.Generation, &inst
	if r := request[*kmsg.HeartbeatResponse](t, cl, hb); r.ErrorCode != kerr.FencedInstanceID.Code {
		t.Errorf("fenced static member: %v", kerr.ErrorForCode(r.ErrorCode))
	}

	// FindCoordinator: this node for groups (v4 batch), an error for
	// transactions (tierlog has none).
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.Version, fc.CoordinatorKeys = 4, []string{"g", "h"}
	fr := rawRequest[*kmsg.FindCoordinatorResponse](t, n.addr, fc)
	if len(fr.Coordinators) != 2 || fr.Coordinators[1].Key != "h" || fr.Coordinators[1].ErrorCode != 0 || fr.Coordinators[1].Port != n.s.opts.AdvertisedPort {
		t.Errorf("find coordinator v4: %+v", fr)
	}
	fc.CoordinatorType = 1
	fr = rawRequest[*kmsg.FindCoordinatorResponse](t, n.addr, fc)
	if fr.Coordinators[0].ErrorCode != kerr.InvalidRequest.Code {
		t.Errorf("transaction coordinator: %v", kerr.ErrorForCode(fr.Coordinators[0].ErrorCode))
	}
	fc.Version, fc.CoordinatorType, fc.CoordinatorKey = 0, 0, "g"
	fr = rawRequest[*kmsg.FindCoordinatorResponse](t, n.addr, fc)
	if fr.ErrorCode != 0 || fr.Port != n.s.opts.AdvertisedPort || fr.Host != n.s.opts.AdvertisedHost {
		t.Errorf("find coordinator v0: %+v", fr)
	}
	_ = a
}
