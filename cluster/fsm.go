package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// fsm is the raft.FSM over State. Raft calls Apply, Snapshot and Restore
// from one goroutine; readers take copies under mu.
type fsm struct {
	mu     sync.RWMutex
	state  *State
	groups groupOffsets // consumer groups' offsets (groups.go)
	notify func()       // called after every change, outside mu; must not block
	// view is a copy of state made after every change, shared by every
	// reader of View: reads on hot paths (a Kafka Metadata asks for each
	// partition's leader) cost no copy of the whole state.
	view atomic.Pointer[State]
}

func newFSM(notify func()) *fsm {
	f := &fsm{state: NewState(), groups: groupOffsets{}, notify: notify}
	f.view.Store(f.state.Clone())
	return f
}

// Apply applies one committed entry. Its result (nil or the refusal error)
// is what Node.Apply returns on the leader. A refused entry still advances
// Index: it was applied, with no effect, on every node alike.
func (f *fsm) Apply(l *raft.Log) any {
	cmd, err := DecodeCommand(l.Data)
	f.mu.Lock()
	if err == nil && cmd.CommitGroupOffsets != nil {
		// Beside the state: no copy of it, no signal to its watchers.
		err = f.groups.apply(cmd.CommitGroupOffsets)
		f.mu.Unlock()
		return err
	}
	if err == nil {
		err = f.state.Apply(cmd)
	}
	if err == nil && cmd.DeleteTopic != nil {
		f.groups.dropTopic(cmd.DeleteTopic.Name)
	}
	f.state.Index = l.Index
	f.view.Store(f.state.Clone())
	f.mu.Unlock()
	f.notify()
	return err
}

// Snapshot copies the state; Persist encodes the copy off raft's apply path.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{state: f.state.Clone(), groups: f.groups.list()}, nil
}

// Restore replaces the state with a snapshot's, after checking it.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s := NewState()
	file := snapshotFile{State: s}
	if err := json.NewDecoder(rc).Decode(&file); err != nil {
		return fmt.Errorf("cluster: decode snapshot: %w", err)
	}
	if file.V != commandVersion {
		return fmt.Errorf("%w: snapshot version %d", ErrUnknownCommand, file.V)
	}
	if s.Nodes == nil {
		s.Nodes = map[int32]NodeInfo{}
	}
	if s.Topics == nil {
		s.Topics = map[string]*Topic{}
	}
	if err := s.Check(); err != nil {
		return fmt.Errorf("cluster: snapshot breaks an invariant: %w", err)
	}
	groups := groupOffsets{}
	if err := groups.apply(&CommitGroupOffsets{Offsets: file.Groups}); err != nil {
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.groups = groups
	f.view.Store(s.Clone())
	f.mu.Unlock()
	f.notify()
	return nil
}

func (f *fsm) read() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// snapshotFile is the snapshot encoding: the state as JSON, versioned like
// the commands.
type snapshotFile struct {
	V      int           `json:"v"`
	State  *State        `json:"state"`
	Groups []GroupOffset `json:"groups,omitempty"`
}

type fsmSnapshot struct {
	state  *State
	groups []GroupOffset
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(snapshotFile{V: commandVersion, State: s.state, Groups: s.groups}); err != nil {
		sink.Cancel()
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
