package cluster

import (
	"errors"
	"fmt"
)

// Errors a command can be refused with. The FSM returns them as the result of
// an applied log entry, so every node refuses the same command the same way
// and the state is left as it was.
var (
	// ErrUnknownCommand: the entry's version or kind is not one this code
	// applies (written by a newer node); refused rather than half-applied.
	ErrUnknownCommand = errors.New("cluster: unknown command")
	// ErrInvalidCommand: the command is malformed (empty names, bad counts,
	// duplicate replicas).
	ErrInvalidCommand = errors.New("cluster: invalid command")
	// ErrUnknownNode: a replica or leader names a node never registered.
	ErrUnknownNode = errors.New("cluster: unknown node")
	// ErrTopicExists: CreateTopic for a name already in use.
	ErrTopicExists = errors.New("cluster: topic already exists")
	// ErrUnknownTopic: the topic is not in the state.
	ErrUnknownTopic = errors.New("cluster: unknown topic")
	// ErrUnknownPartition: the partition index is out of range.
	ErrUnknownPartition = errors.New("cluster: unknown partition")
	// ErrStaleEpoch: the command was made for a leader epoch that is no
	// longer the partition's (a deposed leader's ISR change, a race between
	// two elections). Refusing it is what keeps epochs only growing.
	ErrStaleEpoch = errors.New("cluster: stale leader epoch")
	// ErrNotInISR: a clean election named a replica outside the in-sync set,
	// or an ISR change would drop the leader from it.
	ErrNotInISR = errors.New("cluster: replica not in the in-sync set")
	// ErrNotReplica: the node is not in the partition's assignment.
	ErrNotReplica = errors.New("cluster: node is not a replica of the partition")
	// ErrOffsetBackwards: SetRemoteLogStart below the current remote log
	// start; the bucket never grows history back.
	ErrOffsetBackwards = errors.New("cluster: remote log start moves only forward")
	// ErrNoEligibleLeader: no alive in-sync replica, and unclean election
	// is off.
	ErrNoEligibleLeader = errors.New("cluster: no eligible leader")
	// ErrNotLeader: this node is not the Raft leader; the error is a
	// *NotLeaderError that names the leader when one is known.
	ErrNotLeader = errors.New("cluster: not the raft leader")
)

// NotLeaderError is returned by Node.Apply on a node that is not the Raft
// leader. LeaderID is -1 and LeaderAddr empty while no leader is known
// (an election is under way). errors.Is(err, ErrNotLeader) holds.
type NotLeaderError struct {
	LeaderID   int32
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID < 0 {
		return "cluster: not the raft leader; no leader known"
	}
	return fmt.Sprintf("cluster: not the raft leader; leader is node %d at %s", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
