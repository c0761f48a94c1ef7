package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// SetForwarder sets how Propose reaches the Raft leader from another node:
// f sends cmd to the leader (its registered NodeInfo, or just its id and
// Raft address while it is not registered yet), which runs its own
// Propose, and returns the leader's error. Give the call a deadline: a
// request that meets a leadership change is forwarded again.
func (c *Controller) SetForwarder(f func(ctx context.Context, leader NodeInfo, cmd Command) error) {
	c.mu.Lock()
	c.forward = f
	c.mu.Unlock()
}

// Propose carries cmd out on the Raft leader: here if this node leads,
// otherwise through the forwarder. It returns the leader's result: nil once
// the command is committed and applied there, its refusal
// (ErrTopicExists, ErrStaleEpoch, ...), or a *NotLeaderError when no
// leader is known or no forwarder is set.
//
// Besides state changes, the leader carries out requests only it can
// decide, because they need its liveness view: a CreateTopic with no
// Assignment (Partitions set) or an AddPartitions with no Assignment
// (Total set) gets its replicas assigned over the alive registered nodes,
// and a RetireNode is a controlled shutdown (see Retire).
func (c *Controller) Propose(ctx context.Context, cmd Command) error {
	if c.n.IsLeader() {
		err := c.lead(ctx, cmd)
		if !errors.Is(err, ErrNotLeader) {
			return err
		}
		// Leadership moved while we worked: go to the new leader.
	}
	id, addr := c.n.Leader()
	c.mu.Lock()
	fwd := c.forward
	c.mu.Unlock()
	if id < 0 || id == c.o.Self.ID || fwd == nil {
		return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
	}
	info, ok := c.n.View().Nodes[id]
	if !ok {
		info = NodeInfo{ID: id, RaftAddr: addr}
	}
	return fwd(ctx, info, cmd)
}

// lead carries out cmd on this node, the Raft leader.
func (c *Controller) lead(ctx context.Context, cmd Command) error {
	if cmd.count() != 1 {
		return fmt.Errorf("%w: %d kinds set, want 1", ErrInvalidCommand, cmd.count())
	}
	switch {
	case cmd.RetireNode != nil:
		return c.retire(ctx, cmd.RetireNode.ID)
	case cmd.CreateTopic != nil && len(cmd.CreateTopic.Assignment) == 0 && cmd.CreateTopic.Partitions > 0:
		return c.assignAndApply(ctx, cmd)
	case cmd.AddPartitions != nil && len(cmd.AddPartitions.Assignment) == 0 && cmd.AddPartitions.Total > 0:
		return c.assignAndApply(ctx, cmd)
	}
	return c.n.Apply(ctx, cmd)
}

// CreateTopic creates a topic of partitions partitions with replication
// factor rf, its replicas assigned on the Raft leader over the registered
// nodes it sees alive (ErrInvalidCommand when fewer than rf are). id is
// the Kafka topic id (may be empty).
func (c *Controller) CreateTopic(ctx context.Context, name, id string, partitions int32, rf int, config map[string]string) error {
	if partitions < 1 || rf < 1 {
		return fmt.Errorf("%w: %d partitions, replication factor %d", ErrInvalidCommand, partitions, rf)
	}
	return c.Propose(ctx, Command{CreateTopic: &CreateTopic{Name: name, ID: id, ReplicationFactor: rf,
		Config: config, Partitions: partitions}})
}

// AddPartitions grows topic name to total partitions, the new ones assigned
// on the Raft leader like CreateTopic's. A total not above the topic's
// current count is refused with ErrInvalidCommand.
func (c *Controller) AddPartitions(ctx context.Context, name string, total int32) error {
	if total < 1 {
		return fmt.Errorf("%w: %d partitions", ErrInvalidCommand, total)
	}
	return c.Propose(ctx, Command{AddPartitions: &AddPartitions{Name: name, Total: total}})
}

// assignAndApply fills in the assignment of a CreateTopic or AddPartitions
// request and applies it. assignMu makes the count read and the apply one
// step, so two concurrent requests to grow a topic cannot both add.
func (c *Controller) assignAndApply(ctx context.Context, cmd Command) error {
	c.assignMu.Lock()
	defer c.assignMu.Unlock()
	s := c.n.View()
	alive := c.aliveAt(time.Now())
	var nodes []int32
	for id := range s.Nodes {
		if alive(id) {
			nodes = append(nodes, id)
		}
	}
	// Partition p of a topic starts at hash(name)+p, so a topic's added
	// partitions continue its rotation and topics start on different nodes.
	h := fnv.New32a()
	var (
		name  string
		count int
		rf    int
		start int
	)
	if ct := cmd.CreateTopic; ct != nil {
		name, count, rf = ct.Name, int(ct.Partitions), ct.ReplicationFactor
		if _, ok := s.Topics[name]; ok {
			return fmt.Errorf("%w: %q", ErrTopicExists, name)
		}
	} else {
		ap := cmd.AddPartitions
		name = ap.Name
		t, ok := s.Topics[name]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownTopic, name)
		}
		if int(ap.Total) <= len(t.Partitions) {
			return fmt.Errorf("%w: topic %q has %d partitions; asked for %d", ErrInvalidCommand, name, len(t.Partitions), ap.Total)
		}
		count, rf, start = int(ap.Total)-len(t.Partitions), t.ReplicationFactor, len(t.Partitions)
	}
	h.Write([]byte(name))
	start += int(h.Sum32() % 1024)
	if rf > len(nodes) {
		return fmt.Errorf("%w: replication factor %d is more than the %d alive registered nodes", ErrInvalidCommand, rf, len(nodes))
	}
	a, err := AssignReplicas(nodes, count, rf, start)
	if err != nil {
		return err
	}
	if ct := cmd.CreateTopic; ct != nil {
		c2 := *ct
		c2.Assignment, c2.Partitions = a, 0
		return c.n.Apply(ctx, Command{CreateTopic: &c2})
	}
	return c.n.Apply(ctx, Command{AddPartitions: &AddPartitions{Name: name, Assignment: a}})
}

// Retire is a controlled shutdown of node id, done on the Raft leader: it
// moves the leadership of every partition id leads to another alive
// in-sync replica (never unclean), so a clean stop has no failover gap, and
// the leader takes id for dead until it heartbeats again - so its
// heartbeats must stop first. Partitions with no other eligible replica
// keep id as leader (they fail over, or go offline, once it is gone); the
// error then wraps ErrNoEligibleLeader and names them.
func (c *Controller) Retire(ctx context.Context, id int32) error {
	return c.Propose(ctx, Command{RetireNode: &RetireNode{ID: id}})
}

func (c *Controller) retire(ctx context.Context, id int32) error {
	c.mu.Lock()
	c.retired[id] = true
	c.mu.Unlock()
	c.log.Info("retiring node", "node", id)
	// A round can meet a failover or ISR change of the same partition
	// (ErrStaleEpoch); it is decided again from the new state.
	for range 10 {
		s := c.n.View()
		alive := c.aliveAt(time.Now())
		var stuck []string
		again := false
		names := make([]string, 0, len(s.Topics))
		for name := range s.Topics {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			for i, p := range s.Topics[name].Partitions {
				if p.Leader != id {
					continue
				}
				to, _, err := ElectLeader(p, alive, false)
				if err != nil {
					stuck = append(stuck, fmt.Sprintf("%s/%d", name, i))
					continue
				}
				err = c.n.Apply(ctx, Command{SetLeader: &SetLeader{Topic: name, Partition: int32(i), LeaderEpoch: p.LeaderEpoch, Leader: to}})
				if errors.Is(err, ErrStaleEpoch) {
					again = true
					continue
				}
				if err != nil {
					return fmt.Errorf("retire node %d: %s/%d: %w", id, name, i, err)
				}
				c.leaderChanges.WithLabelValues("retire").Inc()
				c.log.Info("partition leader changed", "topic", name, "partition", i, "from", id, "to", to,
					"epoch", p.LeaderEpoch+1, "kind", "retire")
			}
		}
		if !again {
			if len(stuck) > 0 {
				return fmt.Errorf("retire node %d: %w for %s", id, ErrNoEligibleLeader, strings.Join(stuck, ", "))
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("retire node %d: partitions kept changing under it: %w", id, ErrStaleEpoch)
}
