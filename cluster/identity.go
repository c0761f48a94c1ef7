package cluster

// The Raft group's identity, and the guard it allows.
//
// Raft cannot recover a lost majority: two wiped nodes of three that find
// no state among the peers that answer bootstrap a new group
// (admission.go). When the third, with the old history, comes back, the
// two logs share index 1 (each bootstrap's configuration at term 1), and
// raft would reconcile them as one: the node with the higher term wins and
// the other side's committed entries are overwritten, or replayed under
// it - state machines that differ at the same index, silently.
//
// So every group names itself: its first leader proposes SetRaftID with a
// random id (set once, in the log, so every node of the group applies the
// same one), and each node keeps the applied id in raft.db's stable store,
// so it knows it from the moment it opens. A node dialing a Raft peer
// sends its id first (groupByte, length, id); a node refuses (closes) a
// connection carrying an id other than its own, and says so at Error.
// Both sides of two groups refuse each other, so their histories never
// mix. A node without an id yet (a group whose first leader has not
// committed one, a wiped node being re-admitted) neither sends nor checks
// one: the guard protects groups once they are named, the first heartbeat
// or so of a new group's life.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// raftIDKey is where a node keeps its group's id in raft.db's stable
// store, beside the term and vote.
var raftIDKey = []byte("tierlog_raft_id")

// groupByte starts a Raft connection whose dialer names its group; raft's
// own connections start with an rpcType byte (0 to 4 in v1.7), the
// admission probe with probeByte.
const groupByte = 'G'

// raftID returns the group's id as this node knows it ("" if none yet).
func (n *Node) raftID() string {
	if p := n.id.Load(); p != nil {
		return *p
	}
	return ""
}

// loadRaftID reads the id the node kept (Open).
func (n *Node) loadRaftID() error {
	b, err := n.store.Get(raftIDKey)
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return fmt.Errorf("read raft id: %w", err)
	}
	if len(b) > 0 {
		id := string(b)
		n.id.Store(&id)
	}
	return nil
}

// keepRaftID stores the id the state names once it is applied (raft's FSM
// goroutine calls it after every change, before the watchers hear of it).
func (n *Node) keepRaftID() {
	id := n.fsm.view.Load().RaftID
	switch have := n.raftID(); {
	case id == "" || id == have:
	case have != "":
		n.log.Error("the raft group's applied id differs from the one this node kept: it holds another group's history", "kept", have, "applied", id)
	default:
		if err := n.store.Set(raftIDKey, []byte(id)); err != nil {
			n.log.Error("keep the raft group's id", "err", err)
			return
		}
		n.id.Store(&id)
		n.log.Info("raft group named", "raft_id", id)
	}
}

// nameGroup, on the Raft leader of a group with no id yet, proposes one.
// It returns at once; Close waits for the proposal.
func (n *Node) nameGroup() {
	if n.raftID() != "" || n.raft.State() != raft.Leader || !n.naming.CompareAndSwap(false, true) {
		return
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		defer n.naming.Store(false)
		// The id may be committed and not applied here yet: apply
		// everything first (a second one would be refused anyway).
		if n.raft.Barrier(10*time.Second).Error() != nil || n.View().RaftID != "" {
			return
		}
		data, err := Command{SetRaftID: &SetRaftID{ID: newClusterID()}}.Encode()
		if err != nil {
			return
		}
		if err := n.raft.Apply(data, 10*time.Second).Error(); err != nil {
			n.log.Debug("name the raft group", "err", err)
		}
	}()
}

// foreignLog rate-limits the Error a refused connection logs: raft dials
// again and again.
type foreignLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// refuseForeign logs a Raft connection refused because its dialer belongs
// to another group.
func (n *Node) refuseForeign(remote net.Addr, theirs, mine string) {
	n.foreign.mu.Lock()
	defer n.foreign.mu.Unlock()
	if time.Since(n.foreign.last[theirs]) < waitLogEvery {
		return
	}
	if n.foreign.last == nil {
		n.foreign.last = map[string]time.Time{}
	}
	n.foreign.last[theirs] = time.Now()
	n.log.Error("refused a Raft connection from a node of another Raft group: two clusters were formed from the same peers (a lost majority bootstrapped anew?); their histories are not merged - see README, \"A node whose disk was wiped\"",
		"remote", remote.String(), "remote_raft_id", theirs, "raft_id", mine)
}

// writeGroup sends the dialer's group id at the start of a Raft connection.
func writeGroup(c net.Conn, id string, timeout time.Duration) error {
	if len(id) > 255 {
		return fmt.Errorf("raft id %q too long", id)
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	defer c.SetWriteDeadline(time.Time{})
	_, err := c.Write(append([]byte{groupByte, byte(len(id))}, id...))
	return err
}

// readGroup reads the id after a connection's groupByte.
func readGroup(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}
