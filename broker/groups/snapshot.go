package groups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// A snapshot is the committed offsets as a whole offset log in the
// current format (magic, then one frame per group, each with its
// checksums): what the broker copies to the bucket, so a node that loses
// its data directory gets the groups' offsets back with their topics.

// Snapshot returns the durable committed offsets of every group as a
// snapshot, and the number of durable changes (commits, deletions,
// expiries) it reflects: a caller that copied the snapshot of changes n
// need not copy again while Snapshot still says n. Offsets still on their
// way to the log are not in it.
func (c *Coordinator) Snapshot() (data []byte, changes uint64) {
	c.store.mu.Lock()
	defer c.store.mu.Unlock()
	data, _, changes = c.store.snapshot()
	return data, changes
}

// Changes is the number of durable changes Snapshot would say now,
// without encoding one: a copier checks it first.
func (c *Coordinator) Changes() uint64 {
	c.store.mu.Lock()
	defer c.store.mu.Unlock()
	return c.store.synced
}

// DecodeSnapshot reads a snapshot: offsets by group, topic and partition.
// Anything but whole, valid frames to its end is an error (a snapshot is
// written whole, so even a torn end is damage).
func DecodeSnapshot(data []byte) (map[string]map[string]map[int32]Offset, error) {
	s := &store{offsets: map[string]map[tp]Offset{}}
	good, err := s.replay(data, false)
	if err == nil && good != len(data) {
		err = &CorruptionError{Position: good, Reason: "a bad frame at the end"}
	}
	if err != nil {
		return nil, fmt.Errorf("groups: offset snapshot: %w", err)
	}
	out := map[string]map[string]map[int32]Offset{}
	for g, ps := range s.offsets {
		out[g] = map[string]map[int32]Offset{}
		for k, o := range ps {
			if out[g][k.topic] == nil {
				out[g][k.topic] = map[int32]Offset{}
			}
			out[g][k.topic][k.partition] = o
		}
	}
	return out, nil
}

// HasLog reports whether dir holds a committed-offset log: a node that
// has one never takes a snapshot's offsets in its place.
func HasLog(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, offsetsFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// RestoreSnapshot makes a snapshot the committed-offset log of dir, which
// must have none (Open then replays it). The snapshot is checked whole
// first, and written atomically (temporary file, fsync, rename, fsync the
// directory): a crash leaves either no log, and the restore runs again, or
// the whole snapshot.
func RestoreSnapshot(dir string, data []byte) error {
	if _, err := DecodeSnapshot(data); err != nil {
		return err
	}
	if has, err := HasLog(dir); err != nil || has {
		return errors.Join(err, fmt.Errorf("groups: %s already holds a committed-offset log", dir))
	}
	if err := fileutil.MkdirAllDurable(dir); err != nil {
		return fmt.Errorf("groups: directory %s: %w", dir, err)
	}
	return fileutil.WriteFileAtomic(filepath.Join(dir, offsetsFile), data, 0o644)
}
