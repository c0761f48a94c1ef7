package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/testutil"
)

// A leader whose JoinGroup answer was lost (connection cut) joins again
// with its member id and unchanged metadata while the group awaits its
// assignment. Kafka answers it as the leader, with every member: kgo,
// told it leads with no members, would sync an empty plan and leave the
// whole group consuming nothing.
func TestLeaderRejoinInCompletingRebalanceOverTCP(t *testing.T) {
	n := startGroupsNode(t)
	cl := n.client()
	const g = "rv-leader"
	sess, reb := 10*time.Second, 10*time.Second
	a, ja := newMember(t, cl, g, sess, reb)
	recvJoin(t, ja)
	_, jb := newMember(t, cl, g, sess, reb)
	testutil.Eventually(t, 5*time.Second, func() bool { return describe(t, cl, g).State == "PreparingRebalance" }, "rebalance starts")
	ra := recvJoin(t, rejoin(t, cl, g, a, sess, reb))
	recvJoin(t, jb)
	if ra.LeaderID != a || len(ra.Members) != 2 {
		t.Fatalf("leader's answer: leader %s, %d members", ra.LeaderID, len(ra.Members))
	}
	// The answer "was lost": the leader asks again, nothing changed.
	again := recvJoin(t, rejoin(t, cl, g, a, sess, reb))
	if again.LeaderID != a || again.Generation != ra.Generation {
		t.Fatalf("repeated join: leader %s generation %d", again.LeaderID, again.Generation)
	}
	if len(again.Members) != 2 {
		t.Errorf("repeated join of the leader %s (generation %d) lists %d members, want 2", a, again.Generation, len(again.Members))
	}
}

// A static member (group.instance.id) that restarts joins with a new
// connection and no member id. KIP-345: with its protocols unchanged, the
// group stays Stable; the other members go on undisturbed (no rebalance,
// no revocation) and the restarted one is answered at once with the
// current generation.
func TestStaticMemberRestartDoesNotRebalance(t *testing.T) {
	n := startGroupsNode(t)
	cl := n.client()
	const g = "rv-static"
	sess, reb := 10*time.Second, 10*time.Second
	static := func(member, instance string) <-chan *kmsg.JoinGroupResponse {
		req := joinReq(g, member, sess, reb)
		req.InstanceID = &instance
		req.Protocols[0].Metadata = []byte("sub")
		ch := make(chan *kmsg.JoinGroupResponse, 1)
		go func() { // not request: it may still wait when the test ends
			resp, err := cl.Request(context.Background(), req)
			if err == nil {
				ch <- resp.(*kmsg.JoinGroupResponse)
			}
		}()
		return ch
	}
	ra := recvJoin(t, static("", "i-a"))
	jb := static("", "i-b")
	testutil.Eventually(t, 5*time.Second, func() bool { return describe(t, cl, g).State == "PreparingRebalance" }, "rebalance starts")
	ra = recvJoin(t, static(ra.MemberID, "i-a"))
	rb := recvJoin(t, jb)
	sb := make(chan *kmsg.SyncGroupResponse, 1)
	go func() { sb <- request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, rb.MemberID, rb.Generation, nil)) }()
	testutil.Eventually(t, 5*time.Second, func() bool { return describe(t, cl, g).State == "CompletingRebalance" }, "join completes")
	request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, ra.MemberID, ra.Generation,
		map[string]string{ra.MemberID: "p0", rb.MemberID: "p1"}))
	if s := <-sb; s.ErrorCode != 0 {
		t.Fatalf("follower sync: %v", kerr.ErrorForCode(s.ErrorCode))
	}

	// b restarts: same instance id, no member id, same subscription.
	jb2 := static("", "i-b")
	select {
	case r := <-jb2:
		if r.ErrorCode != 0 || r.Generation != rb.Generation {
			t.Errorf("restarted static member: %v, generation %d (was %d)", kerr.ErrorForCode(r.ErrorCode), r.Generation, rb.Generation)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("restarted static member's join not answered in 3s: the group rebalances (state %s)", describe(t, cl, g).State)
	}
	if code := heartbeat(t, cl, g, ra.MemberID, ra.Generation); code != 0 {
		t.Errorf("undisturbed member a's heartbeat after b's restart: %v", kerr.ErrorForCode(code))
	}
}

// OffsetCommit v2-v4 carry a retention time (kafka-python 2.0.2 sends v2):
// a group with no members loses its offsets once it passes (else after
// offsets_retention_minutes), so a client that cycles through group ids
// does not grow the offset log and memory without bound.
func TestOffsetCommitRetentionTimeExpiresOffsets(t *testing.T) {
	n := startGroupsNode(t)
	n.createTopic("rv-ret", 1)
	commit := kmsg.NewPtrOffsetCommitRequest()
	commit.Version = 2
	commit.Group, commit.Generation, commit.RetentionTimeMillis = "rv-ret-g", -1, 200
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "rv-ret"
	cp := kmsg.NewOffsetCommitRequestTopicPartition()
	cp.Partition, cp.Offset = 0, 5
	ct.Partitions = append(ct.Partitions, cp)
	commit.Topics = append(commit.Topics, ct)
	if r := rawRequest[*kmsg.OffsetCommitResponse](t, n.addr, commit); r.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("commit: %v", kerr.ErrorForCode(r.Topics[0].Partitions[0].ErrorCode))
	}
	fetched := func() int64 {
		f := kmsg.NewPtrOffsetFetchRequest()
		f.Version = 1
		f.Group = "rv-ret-g"
		ft := kmsg.NewOffsetFetchRequestTopic()
		ft.Topic, ft.Partitions = "rv-ret", []int32{0}
		f.Topics = append(f.Topics, ft)
		return rawRequest[*kmsg.OffsetFetchResponse](t, n.addr, f).Topics[0].Partitions[0].Offset
	}
	if got := fetched(); got != 5 {
		t.Fatalf("fetched %d right after the commit", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return fetched() == -1 },
		"offset committed with a 200 ms retention still returned: %d", fetched())
}

// A member whose connection closes while its JoinGroup waits does not
// wedge the group: the rebalance completes, the vanished member's session
// then ends, and the group goes on without it (goleak checks the waiter).
func TestConnectionClosedMidJoin(t *testing.T) {
	n := startGroupsNode(t)
	cl := n.client()
	const g = "rv-midjoin"
	sess := 10 * time.Second
	a, ja := newMember(t, cl, g, sess, sess)
	recvJoin(t, ja)
	request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, a, 1, nil))

	raw := dialRaw(t, n.addr)
	jr := joinReq(g, "", 300*time.Millisecond, sess)
	jr.Version = 9
	first := raw.roundTrip(jr).(*kmsg.JoinGroupResponse)
	if first.ErrorCode != kerr.MemberIDRequired.Code {
		t.Fatalf("first join: %v", kerr.ErrorForCode(first.ErrorCode))
	}
	jr = joinReq(g, first.MemberID, 300*time.Millisecond, sess)
	jr.Version = 9
	raw.send(jr)
	testutil.Eventually(t, 5*time.Second, func() bool { return describe(t, cl, g).State == "PreparingRebalance" }, "b's join arrives")
	raw.c.Close()

	r := recvJoin(t, rejoin(t, cl, g, a, sess, sess))
	request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, a, r.Generation, nil))
	testutil.Eventually(t, 10*time.Second, func() bool {
		return heartbeat(t, cl, g, a, r.Generation) == kerr.RebalanceInProgress.Code
	}, "the vanished member's session ends")
	r = recvJoin(t, rejoin(t, cl, g, a, sess, sess))
	if len(r.Members) != 1 || r.Members[0].MemberID != a {
		t.Fatalf("after the vanished member: %+v", r)
	}
}
