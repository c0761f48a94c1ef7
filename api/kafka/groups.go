package kafka

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker/groups"
)

// The classic group protocol (JoinGroup, SyncGroup, Heartbeat,
// LeaveGroup) over the broker's coordinator. Each handler hands the
// coordinator its request in request order; a join or sync that must wait
// for the rest of the group waits in reply.later, so the connection goes
// on reading (a member's heartbeats may share it).

func (s *Server) joinGroup(c *clientConn, req *kmsg.JoinGroupRequest) reply {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	if err := s.notCoordinator(); err != nil {
		resp.ErrorCode, resp.Generation = errorCode(err), -1
		return reply{resp: resp}
	}
	r := groups.JoinRequest{Group: req.Group, MemberID: req.MemberID, InstanceID: deref(req.InstanceID),
		ClientID: c.clientID, ClientHost: c.clientHost(), ProtocolType: req.ProtocolType,
		SessionTimeout:   time.Duration(req.SessionTimeoutMillis) * time.Millisecond,
		RebalanceTimeout: time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond,
		// v4+: a new member learns its id first, then joins with it
		// (KIP-394), so a join whose answer is lost leaves no member.
		RequireKnownMemberID: req.Version >= 4}
	if req.Version == 0 {
		r.RebalanceTimeout = 0 // v0 has none: the session timeout applies
	}
	for _, p := range req.Protocols {
		r.Protocols = append(r.Protocols, groups.Protocol{Name: p.Name, Metadata: p.Metadata})
	}
	ch := s.b.Groups().Join(r)
	fill := func(res groups.JoinResult) kmsg.Response {
		resp.ErrorCode = errorCode(res.Err)
		resp.MemberID = res.MemberID
		resp.Generation = -1
		if res.Err != nil {
			return resp
		}
		resp.Generation = res.Generation
		resp.ProtocolType = &res.ProtocolType
		resp.Protocol = &res.Protocol
		resp.LeaderID = res.Leader
		for _, m := range res.Members {
			rm := kmsg.NewJoinGroupResponseMember()
			rm.MemberID, rm.InstanceID, rm.ProtocolMetadata = m.MemberID, nilIfEmpty(m.InstanceID), m.Metadata
			resp.Members = append(resp.Members, rm)
		}
		return resp
	}
	select {
	case res := <-ch:
		return reply{resp: fill(res)}
	default:
	}
	return reply{later: func(ctx context.Context) kmsg.Response {
		select {
		case res := <-ch:
			return fill(res)
		case <-ctx.Done():
			// The connection or server is closing: this answer is not sent.
			return fill(groups.JoinResult{Err: groups.ErrUnavailable, MemberID: req.MemberID})
		case <-s.drain:
			// Shutdown: the member rejoins once it reconnects.
			return fill(groups.JoinResult{Err: groups.ErrUnavailable, MemberID: req.MemberID})
		}
	}}
}

func (s *Server) syncGroup(_ *clientConn, req *kmsg.SyncGroupRequest) reply {
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	if err := s.notCoordinator(); err != nil {
		resp.ErrorCode = errorCode(err)
		return reply{resp: resp}
	}
	r := groups.SyncRequest{Group: req.Group, MemberID: req.MemberID, InstanceID: deref(req.InstanceID),
		Generation: req.Generation, ProtocolType: req.ProtocolType, Protocol: req.Protocol,
		Assignments: make(map[string][]byte, len(req.GroupAssignment))}
	for _, a := range req.GroupAssignment {
		r.Assignments[a.MemberID] = a.MemberAssignment
	}
	ch := s.b.Groups().Sync(r)
	fill := func(res groups.SyncResult) kmsg.Response {
		resp.ErrorCode = errorCode(res.Err)
		if res.Err == nil {
			resp.ProtocolType, resp.Protocol = &res.ProtocolType, &res.Protocol
			resp.MemberAssignment = res.Assignment
		}
		return resp
	}
	select {
	case res := <-ch:
		return reply{resp: fill(res)}
	default:
	}
	return reply{later: func(ctx context.Context) kmsg.Response {
		select {
		case res := <-ch:
			return fill(res)
		case <-ctx.Done():
			return fill(groups.SyncResult{Err: groups.ErrUnavailable})
		case <-s.drain:
			return fill(groups.SyncResult{Err: groups.ErrUnavailable})
		}
	}}
}

func (s *Server) heartbeat(_ *clientConn, req *kmsg.HeartbeatRequest) reply {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	if err := s.notCoordinator(); err != nil {
		resp.ErrorCode = errorCode(err)
		return reply{resp: resp}
	}
	resp.ErrorCode = errorCode(s.b.Groups().Heartbeat(req.Group, req.MemberID, deref(req.InstanceID), req.Generation))
	return reply{resp: resp}
}

// leaveGroup removes one member (v0-v2) or a batch of them, by member or
// static instance id (v3+, with an error per member).
func (s *Server) leaveGroup(_ *clientConn, req *kmsg.LeaveGroupRequest) reply {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	if err := s.notCoordinator(); err != nil {
		resp.ErrorCode = errorCode(err)
		return reply{resp: resp}
	}
	var leavers []groups.Leaver
	if req.Version < 3 {
		leavers = []groups.Leaver{{MemberID: req.MemberID}}
	}
	for _, m := range req.Members {
		leavers = append(leavers, groups.Leaver{MemberID: m.MemberID, InstanceID: deref(m.InstanceID)})
	}
	errs, err := s.b.Groups().Leave(req.Group, leavers)
	if err != nil {
		resp.ErrorCode = errorCode(err)
		return reply{resp: resp}
	}
	if req.Version < 3 {
		resp.ErrorCode = errorCode(errs[0])
		return reply{resp: resp}
	}
	for i, m := range req.Members {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID, rm.ErrorCode = m.MemberID, m.InstanceID, errorCode(errs[i])
		resp.Members = append(resp.Members, rm)
	}
	return reply{resp: resp}
}

// clientHost is the client's address as Kafka reports it ("/127.0.0.1").
func (c *clientConn) clientHost() string {
	host, _, err := net.SplitHostPort(c.nc.RemoteAddr().String())
	if err != nil {
		return ""
	}
	return "/" + host
}

// notCoordinator refuses group requests on a cluster node that does not
// coordinate the groups: the clients find the coordinator again.
func (s *Server) notCoordinator() error {
	if s.b.IsGroupCoordinator() {
		return nil
	}
	return groups.ErrNotCoordinator
}

// groupErrorCode maps the coordinator's errors.
func groupErrorCode(err error) (int16, bool) {
	for _, m := range []struct {
		err  error
		code int16
	}{
		{groups.ErrInvalidGroupID, kerr.InvalidGroupID.Code},
		{groups.ErrInvalidSessionTimeout, kerr.InvalidSessionTimeout.Code},
		{groups.ErrInconsistentProtocol, kerr.InconsistentGroupProtocol.Code},
		{groups.ErrUnknownMember, kerr.UnknownMemberID.Code},
		{groups.ErrMemberIDRequired, kerr.MemberIDRequired.Code},
		{groups.ErrIllegalGeneration, kerr.IllegalGeneration.Code},
		{groups.ErrRebalanceInProgress, kerr.RebalanceInProgress.Code},
		{groups.ErrFencedInstance, kerr.FencedInstanceID.Code},
		{groups.ErrGroupNotFound, kerr.GroupIDNotFound.Code},
		{groups.ErrNonEmptyGroup, kerr.NonEmptyGroup.Code},
		{groups.ErrSubscribed, kerr.GroupSubscribedToTopic.Code},
		{groups.ErrMetadataTooLarge, kerr.OffsetMetadataTooLarge.Code},
		// Retriable: clients look the coordinator up again and retry; a
		// restart replays the offset log.
		{groups.ErrUnavailable, kerr.CoordinatorNotAvailable.Code},
		{groups.ErrNotCoordinator, kerr.NotCoordinator.Code},
	} {
		if errors.Is(err, m.err) {
			return m.code, true
		}
	}
	return 0, false
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
