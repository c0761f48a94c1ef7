package cluster

import (
	"fmt"
	"maps"
	"slices"
	"sync"
)

// The controller's decisions as pure functions of the state, so they are
// tested without Raft and the Raft leader only turns their results into
// commands.

// AssignReplicas spreads partitions over nodes round-robin, rack-unaware:
// partition p gets nodes[(start+p+i) % len(nodes)] for i < rf, over the node
// ids sorted, so its preferred leaders (the first replicas) rotate over the
// nodes too. start lets a caller spread topics differently (e.g. the
// topic's partition count so far for AddPartitions, or a hash of its name).
func AssignReplicas(nodes []int32, partitions, rf, start int) ([][]int32, error) {
	if partitions < 1 || rf < 1 {
		return nil, fmt.Errorf("%w: %d partitions, replication factor %d", ErrInvalidCommand, partitions, rf)
	}
	ids := slices.Clone(nodes)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if rf > len(ids) {
		return nil, fmt.Errorf("%w: replication factor %d is more than the %d nodes", ErrInvalidCommand, rf, len(ids))
	}
	if start < 0 {
		start = -start
	}
	out := make([][]int32, partitions)
	for p := range out {
		out[p] = make([]int32, rf)
		for i := range rf {
			out[p][i] = ids[(start+p+i)%len(ids)]
		}
	}
	return out, nil
}

// ElectLeader picks the partition's next leader once alive says its current
// leader is not: the first replica in assignment order that is alive and in
// the ISR (so the preferred replica wins when it can). With no such replica
// it returns ErrNoEligibleLeader, unless unclean is set, in which case it
// returns the first alive replica and clean=false (records it lacks are
// lost). The result goes into a SetLeader with the partition's epoch.
func ElectLeader(p Partition, alive func(int32) bool, unclean bool) (leader int32, clean bool, err error) {
	for _, r := range p.Replicas {
		if slices.Contains(p.ISR, r) && alive(r) {
			return r, true, nil
		}
	}
	if unclean {
		for _, r := range p.Replicas {
			if alive(r) {
				return r, false, nil
			}
		}
	}
	return NoLeader, false, ErrNoEligibleLeader
}

// Failover returns the SetLeader commands that move every partition whose
// leader is dead (per alive) to a new leader, or to NoLeader when none is
// eligible (the partition is offline until an ISR member returns, unless
// unclean(topic): Kafka's unclean.leader.election.enable, per topic; nil is
// false). Partitions already without a leader get one as soon as an
// eligible replica is alive. Commands come in topic-name, partition order.
func Failover(s *State, alive func(int32) bool, unclean func(topic string) bool) []Command {
	names := make([]string, 0, len(s.Topics))
	for name := range s.Topics {
		names = append(names, name)
	}
	slices.Sort(names)
	var cmds []Command
	for _, name := range names {
		// Asked only for a partition that needs a leader: the callback
		// parses the topic's config.
		uncleanOK := sync.OnceValue(func() bool { return unclean != nil && unclean(name) })
		for i, p := range s.Topics[name].Partitions {
			if p.Leader != NoLeader && alive(p.Leader) {
				continue
			}
			leader, clean, err := ElectLeader(p, alive, uncleanOK())
			if err != nil && p.Leader == NoLeader {
				continue // still offline; no epoch bump for nothing
			}
			cmds = append(cmds, Command{SetLeader: &SetLeader{
				Topic: name, Partition: int32(i), LeaderEpoch: p.LeaderEpoch,
				Leader: leader, Unclean: err == nil && !clean,
			}})
		}
	}
	return cmds
}

// ShrinkDead returns the ShrinkISR commands that take dead replicas (per
// alive) out of the in-sync set of every partition whose leader is alive,
// as Kafka's controller does when it fences a broker: the leader then
// stops waiting for them, and acks=all (at min.insync.replicas) goes on at
// once instead of after replica.lag.time.max.ms. The leader itself is
// never removed (an offline partition keeps its ISR: see Failover).
func ShrinkDead(s *State, alive func(int32) bool) []Command {
	var cmds []Command
	for _, name := range slices.Sorted(maps.Keys(s.Topics)) {
		for i, p := range s.Topics[name].Partitions {
			if p.Leader == NoLeader || !alive(p.Leader) {
				continue
			}
			var dead []int32
			for _, r := range p.ISR {
				if r != p.Leader && !alive(r) {
					dead = append(dead, r)
				}
			}
			if len(dead) > 0 {
				cmds = append(cmds, Command{ShrinkISR: &ChangeISR{Topic: name, Partition: int32(i), LeaderEpoch: p.LeaderEpoch, Replicas: dead}})
			}
		}
	}
	return cmds
}
