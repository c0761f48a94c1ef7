package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
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

// refusals are the sentinels a command can be refused with, as a forwarded
// Propose returns them.
var refusals = []error{ErrUnknownCommand, ErrInvalidCommand, ErrUnknownNode, ErrTopicExists,
	ErrUnknownTopic, ErrUnknownPartition, ErrStaleEpoch, ErrNotInISR, ErrNotReplica,
	ErrOffsetBackwards, ErrNoEligibleLeader}

// ParseRefusal rebuilds, on the node that forwarded a command, the error the
// Raft leader refused it with, from its text (err.Error() sent over the
// wire): the result has msg as its text and errors.Is the first sentinel
// named in it, so callers keep mapping refusals (ErrTopicExists to Kafka's
// TOPIC_ALREADY_EXISTS, ...) the same on every node. A text naming no
// sentinel gives a plain error.
func ParseRefusal(msg string) error {
	var found error
	at := len(msg)
	for _, e := range refusals {
		if i := strings.Index(msg, e.Error()); i >= 0 && i < at {
			found, at = e, i
		}
	}
	if found == nil {
		return errors.New(msg)
	}
	return &refusal{msg: msg, err: found}
}

// IsRefusal says whether err is a refusal by the cluster state (one of
// the sentinels a command is refused with), as opposed to a failure to
// get an answer (no leader, a timeout, shutdown).
func IsRefusal(err error) bool {
	return slices.ContainsFunc(refusals, func(e error) bool { return errors.Is(err, e) })
}

type refusal struct {
	msg string
	err error
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.err }
