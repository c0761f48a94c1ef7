package groups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// A commit accepted (queued for the log) before a topic is deleted must not
// survive the deletion: DropTopics promises that a topic created later under
// the name does not inherit the deleted topic's offsets. The commit here is
// queued, not yet fsynced (its wait not yet run: another commit's fsync is
// under way, or its goroutine is not scheduled yet), when the topic goes.
func TestDropTopicsDeletesQueuedCommit(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir, 0)
	wait := c.Commit(CommitRequest{Group: "g", Generation: -1, Offsets: []PartitionOffset{
		{Topic: "t", Partition: 0, Offset: Offset{Offset: 42, LeaderEpoch: -1}}}})
	if err := c.DropTopics(func(topic string) bool { return topic != "t" }); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if got := offsetOf(c, "g", 0); got != -1 {
		t.Errorf("offset of deleted topic t: %d after DropTopics returned, want none", got)
	}
	c.Close()
	c = openTest(t, dir, 0)
	defer c.Close()
	if got := offsetOf(c, "g", 0); got != -1 {
		t.Errorf("offset of deleted topic t: %d after reopen, want none", got)
	}
}

// The same for DeleteGroups: a commit queued before the deletion must be
// deleted by it (the deletion is after it in the log), not resurrect the
// group once its fsync completes.
func TestDeleteGroupDeletesQueuedCommit(t *testing.T) {
	c := openTest(t, t.TempDir(), 0)
	defer c.Close()
	commit(t, c, "g", 0, 10)
	wait := c.Commit(CommitRequest{Group: "g", Generation: -1, Offsets: []PartitionOffset{
		{Topic: "t", Partition: 1, Offset: Offset{Offset: 11, LeaderEpoch: -1}}}})
	if err := c.Delete("g")(); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if got := c.Offsets("g"); len(got) != 0 {
		t.Errorf("group g deleted, yet it has offsets %v", got)
	}
	if d := c.Describe("g"); d.State != Dead {
		t.Errorf("deleted group is %v, want Dead", d.State)
	}
}

// And for OffsetDelete: a commit queued before the deletion is deleted by
// it.
func TestDeleteOffsetsDeletesQueuedCommit(t *testing.T) {
	c := openTest(t, t.TempDir(), 0)
	defer c.Close()
	wait := c.Commit(CommitRequest{Group: "g", Generation: -1, Offsets: []PartitionOffset{
		{Topic: "t", Partition: 1, Offset: Offset{Offset: 11, LeaderEpoch: -1}}}})
	errs, del := c.DeleteOffsets("g", []PartitionOffset{{Topic: "t", Partition: 1}}, nil)
	if err := del(); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if got := offsetOf(c, "g", 1); got != -1 {
		t.Errorf("offset %d after its deletion", got)
	}
}

// A JoinGroup v4+ from a new member gets MEMBER_ID_REQUIRED and a pending
// member id. A client that never comes back (it died, or it probes random
// group ids) must not leave the group behind for ever: once the pending id's
// session timeout passes, nothing of the group remains.
func TestExpiredPendingMemberIDsDropTheirGroup(t *testing.T) {
	c, err := Open(Options{Dir: t.TempDir(), MinSessionTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 100 {
		res := <-c.Join(JoinRequest{Group: fmt.Sprint("probe-", i), ClientID: "c", ProtocolType: "consumer",
			Protocols: []Protocol{{Name: "range"}}, SessionTimeout: 10 * time.Millisecond, RequireKnownMemberID: true})
		if !errors.Is(res.Err, ErrMemberIDRequired) {
			t.Fatalf("join: %v", res.Err)
		}
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return len(c.List()) == 0 },
		"groups of expired pending members are still held: %d listed, e.g. %+v", len(c.List()), c.List()[0])
}

// A leader whose JoinGroup answer was lost joins again with its member id
// and unchanged protocols while the group awaits its assignment
// (CompletingRebalance). Kafka answers it as the leader of the current
// generation: with every member's metadata, which it needs to assign.
func TestLeaderRejoinInCompletingRebalanceGetsMembers(t *testing.T) {
	c := openTest(t, t.TempDir(), 0)
	defer c.Close()
	join := func(member string) <-chan JoinResult {
		return c.Join(JoinRequest{Group: "g", MemberID: member, ClientID: "c", ProtocolType: "consumer",
			Protocols:      []Protocol{{Name: "range", Metadata: []byte("sub")}},
			SessionTimeout: 10 * time.Second, RebalanceTimeout: 10 * time.Second})
	}
	a := <-join("") // gen 1: a alone
	if a.Err != nil {
		t.Fatal(a.Err)
	}
	bch := join("") // b joins: rebalance, a must join again
	ach := join(a.MemberID)
	a, b := <-ach, <-bch
	if a.Err != nil || b.Err != nil {
		t.Fatal(a.Err, b.Err)
	}
	leader := a
	if b.MemberID == a.Leader {
		leader = b
	}
	if len(leader.Members) != 2 {
		t.Fatalf("leader's first answer has %d members", len(leader.Members))
	}
	again := <-join(leader.MemberID) // the leader's answer was lost: it asks again
	if again.Err != nil {
		t.Fatal(again.Err)
	}
	if again.Leader != leader.MemberID || again.Generation != leader.Generation {
		t.Fatalf("rejoin: leader %s gen %d, want %s gen %d", again.Leader, again.Generation, leader.MemberID, leader.Generation)
	}
	if len(again.Members) != 2 {
		t.Errorf("the leader's repeated join lists %d members, want 2: it is told to lead but cannot assign", len(again.Members))
	}
}

// A follower waits in SyncGroup while the leader computes the assignment
// (longer than the session timeout; the rebalance timeout allows it). Once
// it has its assignment it heartbeats at the usual interval (a third of the
// session timeout): it must not be expired in between, as Kafka restarts a
// member's session when it answers its sync.
func TestFollowerSessionRestartsWithItsSyncAnswer(t *testing.T) {
	const session = time.Second
	c, err := Open(Options{Dir: t.TempDir(), MinSessionTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	join := func(member string) <-chan JoinResult {
		return c.Join(JoinRequest{Group: "g", MemberID: member, ClientID: "c", ProtocolType: "consumer",
			Protocols: []Protocol{{Name: "range"}}, SessionTimeout: session, RebalanceTimeout: time.Minute})
	}
	a := <-join("")
	if a.Err != nil {
		t.Fatal(a.Err)
	}
	followerJoined := time.Now() // the follower's session timer starts here
	bch := join("")
	a, b := <-join(a.MemberID), <-bch
	if a.Err != nil || b.Err != nil {
		t.Fatal(a.Err, b.Err)
	}
	if a.Leader != a.MemberID {
		t.Fatalf("leader %s, want the first member %s", a.Leader, a.MemberID)
	}
	sync := c.Sync(SyncRequest{Group: "g", MemberID: b.MemberID, Generation: b.Generation})
	// The leader heartbeats while it computes, and sends the assignment a
	// little before the follower's session timer next fires.
	assignAt := followerJoined.Add(3*session - 150*time.Millisecond)
	for time.Now().Before(assignAt) {
		if err := c.Heartbeat("g", a.MemberID, "", a.Generation); err != nil {
			t.Fatalf("leader heartbeat: %v", err)
		}
		time.Sleep(min(session/3, time.Until(assignAt)))
	}
	if r := <-c.Sync(SyncRequest{Group: "g", MemberID: a.MemberID, Generation: a.Generation,
		Assignments: map[string][]byte{a.MemberID: []byte("a"), b.MemberID: []byte("b")}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := <-sync; r.Err != nil || string(r.Assignment) != "b" {
		t.Fatalf("follower sync: %+v", r)
	}
	answered := time.Now()
	time.Sleep(session / 3) // the follower's heartbeat interval
	if err := c.Heartbeat("g", b.MemberID, "", b.Generation); err != nil {
		t.Errorf("follower's first heartbeat %v after its sync answer: %v (session timeout %v)",
			time.Since(answered).Round(time.Millisecond), err, session)
	}
}

// A crash mid-write tears the last frame. Its payload holds the
// committer's metadata, which can contain bytes that read as a whole
// frame: the open must still take the tear as a torn tail (the frame
// was never acknowledged), not refuse to start as if the log were corrupt
// in the middle.
func TestTornFrameWithFrameShapedMetadataIsRepaired(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir, 0)
	commit(t, c, "g", 0, 100)
	path := filepath.Join(dir, offsetsFile)
	before, _ := os.ReadFile(path)
	inner := appendFrame(nil, []entry{{group: "x", topic: "y", Offset: Offset{Offset: 1}}})
	if err := c.Commit(CommitRequest{Group: "g", Generation: -1, Offsets: []PartitionOffset{
		{Topic: "t", Partition: 1, Offset: Offset{Offset: 5, Metadata: string(inner) + "tail"}}}})(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	data, _ := os.ReadFile(path)
	// Torn after the metadata's frame-shaped bytes, before the frame's end.
	if err := os.WriteFile(path, data[:len(data)-2], 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("open after a torn last write (%d bytes valid before it): %v", len(before), err)
	}
	defer c.Close()
	if got := offsetOf(c, "g", 0); got != 100 {
		t.Errorf("acknowledged commit lost: %d", got)
	}
}

// Offsets of a group without members expire OffsetsRetention after the
// group became empty (or after their commit, if later), durably; a group
// with members keeps them, and a commit's own ExpireTime takes the place
// of the retention.
func TestOffsetRetention(t *testing.T) {
	dir := t.TempDir()
	const retention = 300 * time.Millisecond
	open := func() *Coordinator {
		c, err := Open(Options{Dir: dir, MinSessionTimeout: 10 * time.Millisecond,
			OffsetsRetention: retention, RetentionCheckInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	defer func() { c.Close() }()
	// "member": a group with a member that commits; "alone": offsets only.
	j := <-c.Join(JoinRequest{Group: "member", ClientID: "c", ProtocolType: "consumer",
		Protocols: []Protocol{{Name: "range"}}, SessionTimeout: 10 * time.Second})
	if j.Err != nil {
		t.Fatal(j.Err)
	}
	if s := <-c.Sync(SyncRequest{Group: "member", MemberID: j.MemberID, Generation: j.Generation}); s.Err != nil {
		t.Fatal(s.Err)
	}
	if err := c.Commit(CommitRequest{Group: "member", MemberID: j.MemberID, Generation: j.Generation, Offsets: []PartitionOffset{
		{Topic: "t", Partition: 0, Offset: Offset{Offset: 7, LeaderEpoch: -1}}}})(); err != nil {
		t.Fatal(err)
	}
	commit(t, c, "alone", 0, 1)
	if err := c.Commit(CommitRequest{Group: "short", Generation: -1, Offsets: []PartitionOffset{
		{Topic: "t", Partition: 0, Offset: Offset{Offset: 3, ExpireTime: time.Now().Add(20 * time.Millisecond)}}}})(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return offsetOf(c, "short", 0) == -1 },
		"offset with a 20 ms expiry kept")
	testutil.Eventually(t, 5*time.Second, func() bool { return offsetOf(c, "alone", 0) == -1 },
		"offset of a group without members kept past the retention")
	if got := offsetOf(c, "member", 0); got != 7 {
		t.Fatalf("offset of a group with a member: %d, want it kept", got)
	}
	left := time.Now()
	if _, err := c.Leave("member", []Leaver{{MemberID: j.MemberID}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return offsetOf(c, "member", 0) == -1 },
		"offset of a group left empty kept past the retention")
	if since := time.Since(left); since < retention {
		t.Errorf("offset expired %v after the group became empty, retention %v", since, retention)
	}
	if ls := c.List(); len(ls) != 0 {
		t.Errorf("groups after their offsets expired: %+v", ls)
	}
	c.Close()
	c = open()
	for _, g := range []string{"member", "alone", "short"} {
		if got := offsetOf(c, g, 0); got != -1 {
			t.Errorf("%s: expired offset %d back after reopen", g, got)
		}
	}
}

// KIP-345: a static member that restarts (same instance id, no member id,
// same protocols) while the group is Stable gets a new member id in place
// of the old one, keeps its leadership and assignment, and is answered at
// once with the current generation; the old id is fenced. With changed
// protocols the group rebalances.
func TestStaticMemberRestartKeepsItsPlace(t *testing.T) {
	c := openTest(t, t.TempDir(), 0)
	defer c.Close()
	join := func(member, instance, sub string) <-chan JoinResult {
		return c.Join(JoinRequest{Group: "g", MemberID: member, InstanceID: instance, ClientID: "c", ProtocolType: "consumer",
			Protocols: []Protocol{{Name: "range", Metadata: []byte(sub)}}, SessionTimeout: 10 * time.Second})
	}
	a := <-join("", "i-a", "s")
	bch := join("", "i-b", "s")
	a = <-join(a.MemberID, "i-a", "s")
	b := <-bch
	if a.Err != nil || b.Err != nil || a.Leader != a.MemberID {
		t.Fatalf("joins: %+v %+v", a, b)
	}
	bs := c.Sync(SyncRequest{Group: "g", MemberID: b.MemberID, InstanceID: "i-b", Generation: b.Generation})
	if s := <-c.Sync(SyncRequest{Group: "g", MemberID: a.MemberID, InstanceID: "i-a", Generation: a.Generation,
		Assignments: map[string][]byte{a.MemberID: []byte("pa"), b.MemberID: []byte("pb")}}); s.Err != nil {
		t.Fatal(s.Err)
	}
	<-bs
	// The leader restarts.
	a2 := <-join("", "i-a", "s")
	if a2.Err != nil || a2.Generation != a.Generation || a2.MemberID == a.MemberID {
		t.Fatalf("restarted leader: %+v (was %+v)", a2, a)
	}
	if a2.Leader == a2.MemberID || len(a2.Members) != 0 {
		t.Errorf("restarted leader told to assign in a Stable group: %+v", a2)
	}
	if s := <-c.Sync(SyncRequest{Group: "g", MemberID: a2.MemberID, InstanceID: "i-a", Generation: a2.Generation}); s.Err != nil || string(s.Assignment) != "pa" {
		t.Errorf("restarted leader's assignment: %+v", s)
	}
	if err := c.Heartbeat("g", a.MemberID, "i-a", a.Generation); !errors.Is(err, ErrFencedInstance) {
		t.Errorf("old member id's heartbeat: %v, want fenced", err)
	}
	if err := c.Heartbeat("g", b.MemberID, "i-b", b.Generation); err != nil {
		t.Errorf("undisturbed member: %v", err)
	}
	d := c.Describe("g")
	if d.State != Stable || len(d.Members) != 2 || d.Members[0].MemberID != a2.MemberID {
		t.Errorf("group after the restart: %+v", d)
	}
	// b restarts with another subscription: the group rebalances.
	b2ch := join("", "i-b", "other")
	if err := c.Heartbeat("g", a2.MemberID, "i-a", a2.Generation); !errors.Is(err, ErrRebalanceInProgress) {
		t.Errorf("after a static member changed its protocols: %v, want a rebalance", err)
	}
	a3 := <-join(a2.MemberID, "i-a", "s")
	b2 := <-b2ch
	if a3.Err != nil || b2.Err != nil || a3.Generation != a.Generation+1 || a3.Leader != a2.MemberID {
		t.Errorf("rebalance after the change: %+v %+v", a3, b2)
	}
}
