package kafka

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func commitReq(group, member string, gen int32, topic string, offsets map[int32]int64) *kmsg.OffsetCommitRequest {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.MemberID, req.Generation = group, member, gen
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	for p, o := range offsets {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset, rp.LeaderEpoch = p, o, 3
		md := "md-" + topic
		rp.Metadata = &md
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

func commitCodes(resp *kmsg.OffsetCommitResponse) map[int32]int16 {
	out := map[int32]int16{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			out[p.Partition] = p.ErrorCode
		}
	}
	return out
}

// Committed offsets, their metadata and leader epochs survive a restart
// of the node on the same data directory; the fetch is asked for at an
// old version (kafka-python's v1) and the newest (v8, several groups).
func TestOffsetsSurviveRestart(t *testing.T) {
	n := startGroupsNode(t)
	n.createTopic("t", 3)
	cl := n.client()
	resp := request[*kmsg.OffsetCommitResponse](t, cl, commitReq("g", "", -1, "t", map[int32]int64{0: 10, 2: 30}))
	if codes := commitCodes(resp); codes[0] != 0 || codes[2] != 0 {
		t.Fatalf("commit: %v", codes)
	}
	// A later commit replaces an earlier one.
	request[*kmsg.OffsetCommitResponse](t, cl, commitReq("g", "", -1, "t", map[int32]int64{2: 31}))
	request[*kmsg.OffsetCommitResponse](t, cl, commitReq("other", "", -1, "t", map[int32]int64{1: 5}))

	n.restart()
	cl = n.client()
	v1 := kmsg.NewPtrOffsetFetchRequest()
	v1.Version, v1.Group = 1, "g"
	ft := kmsg.NewOffsetFetchRequestTopic()
	ft.Topic, ft.Partitions = "t", []int32{0, 1, 2}
	v1.Topics = append(v1.Topics, ft)
	old := rawRequest[*kmsg.OffsetFetchResponse](t, n.addr, v1)
	got := map[int32]int64{}
	for _, p := range old.Topics[0].Partitions {
		got[p.Partition] = p.Offset
		if p.ErrorCode != 0 {
			t.Fatalf("fetch v1 partition %d: %v", p.Partition, kerr.ErrorForCode(p.ErrorCode))
		}
	}
	if got[0] != 10 || got[1] != -1 || got[2] != 31 {
		t.Fatalf("after restart (v1): %v", got)
	}

	v8 := kmsg.NewPtrOffsetFetchRequest()
	v8.Version = 8
	for _, g := range []string{"g", "other", "never"} {
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = g // null topics: every committed partition
		v8.Groups = append(v8.Groups, rg)
	}
	fr := rawRequest[*kmsg.OffsetFetchResponse](t, n.addr, v8)
	if len(fr.Groups) != 3 || len(fr.Groups[2].Topics) != 0 || len(fr.Groups[1].Topics) != 1 {
		t.Fatalf("fetch v8: %+v", fr.Groups)
	}
	ps := fr.Groups[0].Topics[0].Partitions
	if len(ps) != 2 || ps[1].Partition != 2 || ps[1].Offset != 31 || ps[1].LeaderEpoch != 3 || *ps[1].Metadata != "md-t" {
		t.Fatalf("fetch v8 group g: %+v", ps)
	}
}

// Commits follow the group's generation; a partition the broker does not
// have and oversized metadata are refused per partition, the rest is
// committed.
func TestOffsetCommitErrors(t *testing.T) {
	n := startGroupsNode(t)
	n.createTopic("t", 1)
	cl := n.client()
	const g = "g-commit"
	a, ja := newMember(t, cl, g, 10*time.Second, 10*time.Second)
	recvJoin(t, ja)

	// Generation 1 is CompletingRebalance until the leader syncs.
	if c := commitCodes(request[*kmsg.OffsetCommitResponse](t, cl, commitReq(g, a, 1, "t", map[int32]int64{0: 1}))); c[0] != kerr.RebalanceInProgress.Code {
		t.Errorf("commit before sync: %v", kerr.ErrorForCode(c[0]))
	}
	request[*kmsg.SyncGroupResponse](t, cl, syncReq(g, a, 1, nil))
	for _, tc := range []struct {
		name   string
		member string
		gen    int32
		want   int16
	}{
		{"member of the generation", a, 1, 0},
		{"stale generation", a, 0, kerr.IllegalGeneration.Code},
		{"unknown member", "nobody", 1, kerr.UnknownMemberID.Code},
		{"outside the group while it has members", "", -1, kerr.UnknownMemberID.Code},
	} {
		c := commitCodes(request[*kmsg.OffsetCommitResponse](t, cl, commitReq(g, tc.member, tc.gen, "t", map[int32]int64{0: 7})))
		if c[0] != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, kerr.ErrorForCode(c[0]), kerr.ErrorForCode(tc.want))
		}
	}
	if c := commitCodes(request[*kmsg.OffsetCommitResponse](t, cl, commitReq("no-such-group", "", 4, "t", map[int32]int64{0: 1}))); c[0] != kerr.IllegalGeneration.Code {
		t.Errorf("generation of a group that has none: %v", kerr.ErrorForCode(c[0]))
	}

	req := commitReq("solo", "", -1, "t", map[int32]int64{0: 5, 9: 5})
	big := strings.Repeat("m", 4097)
	bad := kmsg.NewOffsetCommitRequestTopicPartition()
	bad.Partition, bad.Offset, bad.Metadata = 0, 6, &big
	missing := kmsg.NewOffsetCommitRequestTopic()
	missing.Topic = "missing"
	missing.Partitions = []kmsg.OffsetCommitRequestTopicPartition{bad}
	req.Topics = append(req.Topics, missing)
	resp := request[*kmsg.OffsetCommitResponse](t, cl, req)
	c := commitCodes(&kmsg.OffsetCommitResponse{Topics: resp.Topics[:1]})
	if c[0] != 0 || c[9] != kerr.UnknownTopicOrPartition.Code || resp.Topics[1].Partitions[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("per-partition errors: %+v", resp.Topics)
	}
	req = commitReq("solo", "", -1, "t", nil)
	bad.Partition = 0
	req.Topics[0].Partitions = []kmsg.OffsetCommitRequestTopicPartition{bad}
	if c := commitCodes(request[*kmsg.OffsetCommitResponse](t, cl, req)); c[0] != kerr.OffsetMetadataTooLarge.Code {
		t.Errorf("oversized metadata: %v", kerr.ErrorForCode(c[0]))
	}
	offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), "solo")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup("t", 0); o.At != 5 {
		t.Errorf("solo's offset: %d, want 5 (the refused commit changed nothing)", o.At)
	}
}

// A deleted topic's offsets are dropped: not listed, and not offered to a
// topic created later under its name, also after a restart.
func TestOffsetsOfDeletedTopic(t *testing.T) {
	n := startGroupsNode(t)
	n.createTopic("gone", 1)
	n.createTopic("kept", 1)
	cl := n.client()
	request[*kmsg.OffsetCommitResponse](t, cl, commitReq("g", "", -1, "gone", map[int32]int64{0: 42}))
	request[*kmsg.OffsetCommitResponse](t, cl, commitReq("g", "", -1, "kept", map[int32]int64{0: 1}))
	if err := n.b.DeleteTopic("gone"); err != nil {
		t.Fatal(err)
	}
	n.createTopic("gone", 1)
	n.restart()
	adm := kadm.NewClient(n.client())
	offs, err := adm.FetchOffsets(context.Background(), "g")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := offs.Lookup("gone", 0); ok {
		t.Errorf("offset of the deleted topic still listed: %+v", offs)
	}
	if o, ok := offs.Lookup("kept", 0); !ok || o.At != 1 {
		t.Errorf("offset of the kept topic: %+v", o)
	}
}

// kadm's group calls: list, describe, fetch offsets, delete (refused for a
// group with members, then done once it is empty), delete offsets.
func TestKadmGroups(t *testing.T) {
	n := startGroupsNode(t)
	n.createTopic("t", 2)
	cl := n.client()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	sub := kmsg.NewConsumerMemberMetadata()
	sub.Topics = []string{"t"}
	a, ja := newMember(t, cl, "live", 10*time.Second, 10*time.Second, sub.AppendTo(nil))
	recvJoin(t, ja)
	request[*kmsg.SyncGroupResponse](t, cl, syncReq("live", a, 1, map[string]string{a: "x"}))
	request[*kmsg.OffsetCommitResponse](t, cl, commitReq("live", a, 1, "t", map[int32]int64{0: 3}))
	request[*kmsg.OffsetCommitResponse](t, cl, commitReq("idle", "", -1, "t", map[int32]int64{0: 8, 1: 9}))

	listed, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := listed["live"]; l.State != "Stable" || l.ProtocolType != "consumer" {
		t.Errorf("list live: %+v", l)
	}
	if l := listed["idle"]; l.State != "Empty" || len(listed) != 2 {
		t.Errorf("list: %+v", listed)
	}
	described, err := adm.DescribeGroups(ctx, "live", "idle", "none")
	if err != nil {
		t.Fatal(err)
	}
	if d := described["live"]; d.State != "Stable" || len(d.Members) != 1 || d.Members[0].MemberID != a || d.Protocol != "range" {
		t.Errorf("describe live: %+v", d)
	}
	if d := described["idle"]; d.State != "Empty" || d.Err != nil {
		t.Errorf("describe idle: %+v", d)
	}
	if d := described["none"]; d.State != "Dead" {
		t.Errorf("describe unknown: %+v", d)
	}
	offs, err := adm.FetchOffsets(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup("t", 1); o.At != 9 || o.Metadata != "md-t" {
		t.Errorf("fetch offsets: %+v", o)
	}

	del, err := adm.DeleteGroups(ctx, "live", "idle", "none")
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(del["live"].Err, kerr.NonEmptyGroup) || del["idle"].Err != nil || !errors.Is(del["none"].Err, kerr.GroupIDNotFound) {
		t.Errorf("delete groups: %+v", del)
	}
	// Offsets of a topic the group consumes stay; the group decides.
	dels := kadm.TopicsSet{"t": {0: {}}}
	res, err := adm.DeleteOffsets(ctx, "live", dels)
	if err != nil || !errors.Is(res.Error(), kerr.GroupSubscribedToTopic) {
		t.Errorf("delete offsets of a consumed topic: %v, %v", err, res.Error())
	}

	n.restart()
	adm = kadm.NewClient(n.client())
	listed, err = adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := listed["idle"]; ok {
		t.Errorf("deleted group listed after a restart: %+v", listed)
	}
	if l := listed["live"]; l.State != "Empty" {
		t.Errorf("group whose members went with the restart: %+v", l)
	}
	offs, err = adm.FetchOffsets(ctx, "live")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup("t", 0); o.At != 3 {
		t.Errorf("live's offset after a restart: %+v", o)
	}
	if res, err := adm.DeleteOffsets(ctx, "live", dels); err != nil || res.Error() != nil {
		t.Fatalf("delete offsets of an empty group: %v, %v", err, res.Error())
	}
	offs, _ = adm.FetchOffsets(ctx, "live")
	if _, ok := offs.Lookup("t", 0); ok {
		t.Errorf("deleted offset still fetched: %+v", offs)
	}
}
