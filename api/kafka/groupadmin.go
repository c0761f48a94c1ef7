package kafka

import (
	"context"
	"math"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker/groups"
)

// groupType is the type every tierlog group has (ListGroups v5): the
// classic protocol's.
const groupType = "classic"

// listGroups lists the groups with members or committed offsets, filtered
// by state (v4+) and type (v5+; every group is classic).
func (s *Server) listGroups(_ *clientConn, req *kmsg.ListGroupsRequest) reply {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	if s.notCoordinator() != nil {
		// Admin clients ask every broker and merge; like Kafka's, a node
		// that coordinates no group lists none (an error would fail the
		// whole listing).
		return reply{resp: resp}
	}
	if len(req.TypesFilter) > 0 && !slices.ContainsFunc(req.TypesFilter, func(t string) bool { return equalFold(t, groupType) }) {
		return reply{resp: resp}
	}
	for _, g := range s.b.Groups().List() {
		state := g.State.String()
		if len(req.StatesFilter) > 0 && !slices.ContainsFunc(req.StatesFilter, func(st string) bool { return equalFold(st, state) }) {
			continue
		}
		rg := kmsg.NewListGroupsResponseGroup()
		rg.Group, rg.ProtocolType, rg.GroupState, rg.GroupType = g.ID, g.ProtocolType, state, groupType
		resp.Groups = append(resp.Groups, rg)
	}
	return reply{resp: resp}
}

// describeGroups describes each group; an unknown one is Dead (as Kafka
// answers before v6).
func (s *Server) describeGroups(_ *clientConn, req *kmsg.DescribeGroupsRequest) reply {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, id := range req.Groups {
		rg := kmsg.NewDescribeGroupsResponseGroup()
		rg.Group = id
		rg.AuthorizedOperations = math.MinInt32 // not computed (no ACLs)
		if id == "" {
			rg.ErrorCode = errorCode(groups.ErrInvalidGroupID)
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		if err := s.notCoordinator(); err != nil {
			rg.ErrorCode = errorCode(err)
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		d := s.b.Groups().Describe(id)
		rg.State, rg.ProtocolType, rg.Protocol = d.State.String(), d.ProtocolType, d.Protocol
		for _, m := range d.Members {
			rm := kmsg.NewDescribeGroupsResponseGroupMember()
			rm.MemberID, rm.InstanceID, rm.ClientID, rm.ClientHost = m.MemberID, nilIfEmpty(m.InstanceID), m.ClientID, m.ClientHost
			rm.ProtocolMetadata, rm.MemberAssignment = m.Metadata, m.Assignment
			rg.Members = append(rg.Members, rm)
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return reply{resp: resp}
}

// deleteGroups deletes groups without members and their offsets; the
// answer means the deletion is fsynced.
func (s *Server) deleteGroups(_ *clientConn, req *kmsg.DeleteGroupsRequest) reply {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	waits := make([]func() error, len(req.Groups))
	for i, id := range req.Groups {
		if err := s.notCoordinator(); err != nil {
			waits[i] = func() error { return err }
			continue
		}
		waits[i] = s.b.Groups().Delete(id)
	}
	return reply{later: func(context.Context) kmsg.Response {
		for i, id := range req.Groups {
			rg := kmsg.NewDeleteGroupsResponseGroup()
			rg.Group, rg.ErrorCode = id, errorCode(waits[i]())
			resp.Groups = append(resp.Groups, rg)
		}
		return resp
	}}
}

func equalFold(a, b string) bool { return strings.EqualFold(a, b) }
