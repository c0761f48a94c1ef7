package tiering

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// SegmentState is where a remote segment is in its life. Every transition is
// written to the manifest (fsynced) before the action it announces, so a
// crash at any point leaves a manifest that says what to finish or undo.
type SegmentState string

const (
	// CopyStarted: an upload under Key began. If the node restarts in this
	// state the object (whole, partial or absent) is deleted and the segment
	// is uploaded again under a new key: every attempt has its own name.
	CopyStarted SegmentState = "copy_started"
	// CopyFinished: the object is uploaded and verified; the segment is
	// committed. Reads may use it and the local copy may be deleted.
	CopyFinished SegmentState = "copy_finished"
	// DeleteStarted: retention is deleting the object. Reads no longer use
	// it (LogStartOffset has moved past it).
	DeleteStarted SegmentState = "delete_started"
)

// ManifestFormat is the version of the manifest's JSON layout.
const ManifestFormat = 1

// RemoteSegment is one manifest entry.
type RemoteSegment struct {
	BaseOffset int64 `json:"base_offset"`
	NextOffset int64 `json:"next_offset"`
	// LeaderEpoch is the epoch of the leader that uploaded it (0 on a
	// single node's prefix); Epochs the leader epochs its batches carry,
	// from the object's footer.
	LeaderEpoch int32          `json:"leader_epoch"`
	Epochs      []SegmentEpoch `json:"epochs,omitempty"`
	ID          string         `json:"id"`  // unique per upload attempt
	Key         string         `json:"key"` // object key
	State       SegmentState   `json:"state"`

	Size      int64  `json:"size,omitempty"`     // object bytes
	RawSize   int64  `json:"raw_size,omitempty"` // segment bytes before compression
	Chunks    int    `json:"chunks,omitempty"`
	SHA256    string `json:"sha256,omitempty"` // of the whole object
	ETag      string `json:"etag,omitempty"`
	VersionID string `json:"version_id,omitempty"` // S3 object version: reads and deletes name it
	// RetainUntil is the Object Lock retain-until date the object was
	// uploaded with (zero: none), so retention knows without asking the
	// bucket that it cannot delete the object before then.
	RetainUntil    time.Time `json:"retain_until,omitzero"`
	FirstTimestamp int64     `json:"first_timestamp,omitempty"`
	MaxTimestamp   int64     `json:"max_timestamp,omitempty"`
	UploadedAt     time.Time `json:"uploaded_at,omitzero"`

	// Room for the audit log's Merkle tree: its size and root after this
	// segment (see DESIGN.md, "Audit-grade history").
	TreeSize int64  `json:"tree_size,omitempty"`
	TreeRoot string `json:"tree_root,omitempty"`
}

// Manifest lists a partition's remote segments. Version grows by one with
// every change; the bucket keeps a copy of recent versions.
type Manifest struct {
	Format    int    `json:"format"`
	Version   int64  `json:"version"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// LogStartOffset is the first offset the remote tier still serves
	// (raised by retention before it deletes).
	LogStartOffset int64           `json:"log_start_offset"`
	Segments       []RemoteSegment `json:"segments"`
	// LeaderEpoch is the leader epoch of the manifest's last writer on a
	// shared prefix (see shared.go); 0 on a single node's.
	LeaderEpoch int32 `json:"leader_epoch,omitempty"`
	// TreeSize and TreeRoot are the partition's Merkle tree after the
	// newest committed segment. The segments record it too, but remote
	// retention removes segments, and the tree (like the signed history)
	// goes on from where it was, not from the oldest segment left.
	TreeSize int64  `json:"tree_size,omitempty"`
	TreeRoot string `json:"tree_root,omitempty"`
	// LegalHold is the Object Lock legal hold every object of the
	// partition carries (its segments' recorded versions and its tlog/
	// objects): a change of the topic's remote.object.lock.legal.hold is
	// applied to them all before it is recorded here (see lock.go).
	LegalHold bool `json:"legal_hold,omitempty"`
}

// ref names the segment's object for the cold reader: its recorded
// version, so a later overwrite of the key is not what is read.
func (s RemoteSegment) ref() cold.SegmentRef {
	return cold.SegmentRef{Key: s.Key, Size: s.Size, VersionID: s.VersionID}
}

// SegmentEpoch says that from StartOffset on, a segment's batches carry
// leader epoch Epoch (cold.EpochStart, as the manifest records it).
type SegmentEpoch struct {
	Epoch       int32 `json:"epoch"`
	StartOffset int64 `json:"start_offset"`
}

func segmentEpochs(f *cold.Footer) []SegmentEpoch {
	out := make([]SegmentEpoch, len(f.Epochs))
	for i, e := range f.Epochs {
		out[i] = SegmentEpoch{Epoch: e.Epoch, StartOffset: e.StartOffset}
	}
	return out
}

// committed returns the segments that serve reads, in offset order.
func (m *Manifest) committed() []RemoteSegment {
	var out []RemoteSegment
	for _, s := range m.Segments {
		if s.State == CopyFinished && s.NextOffset > m.LogStartOffset {
			out = append(out, s)
		}
	}
	return out
}

// findSegment returns the segment of committed (in offset order, as
// committed() returns them) that contains offset.
func findSegment(committed []RemoteSegment, offset int64) (RemoteSegment, bool) {
	i := sort.Search(len(committed), func(i int) bool { return committed[i].NextOffset > offset })
	if i < len(committed) && committed[i].BaseOffset <= offset {
		return committed[i], true
	}
	return RemoteSegment{}, false
}

// uploadedUpTo is the offset after the last committed segment (or the
// remote log start if none): local segments below it are in the bucket.
// An attempt still in copy_started does not count: it may never finish.
func (m *Manifest) uploadedUpTo() int64 {
	end := m.LogStartOffset
	for _, s := range m.Segments {
		if s.State == CopyFinished || s.State == DeleteStarted {
			end = max(end, s.NextOffset)
		}
	}
	return end
}

// remoteStart is the first offset served remotely, or -1 if none is.
func (m *Manifest) remoteStart() int64 {
	c := m.committed()
	if len(c) == 0 {
		return -1
	}
	return max(c[0].BaseOffset, m.LogStartOffset)
}

func (m *Manifest) clone() *Manifest {
	c := *m
	c.Segments = slices.Clone(m.Segments)
	return &c
}

func (m *Manifest) validate() error {
	if m.Format != ManifestFormat {
		return &manifestError{offset: -1, err: fmt.Errorf("manifest format %d, this build reads %d", m.Format, ManifestFormat)}
	}
	// Committed segments must be in offset order and not overlap;
	// attempts in flight may repeat a range (a retry after a withdrawal
	// that did not land).
	c := m.committed()
	for i := 1; i < len(c); i++ {
		if c[i].BaseOffset < c[i-1].NextOffset {
			return &manifestError{offset: c[i].BaseOffset, err: fmt.Errorf("manifest segments overlap at offset %d (%s after %s, which ends at offset %d)",
				c[i].BaseOffset, c[i].Key, c[i-1].Key, c[i-1].NextOffset)}
		}
	}
	return nil
}

// manifestError is a manifest that does not decode or validate: the bucket
// (or disk) answered with bytes that are not a valid manifest. offset is
// the first offset it concerns (-1: none), key the manifest's key once
// known.
type manifestError struct {
	key    string
	offset int64
	err    error
}

func (e *manifestError) Error() string {
	if e.key != "" {
		return fmt.Sprintf("%s: tiering: manifest: %v", e.key, e.err)
	}
	return fmt.Sprintf("tiering: manifest: %v", e.err)
}

func (e *manifestError) Unwrap() error { return e.err }

func decodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, &manifestError{offset: -1, err: err}
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// decodeManifestAt is decodeManifest of the manifest stored under key.
func decodeManifestAt(b []byte, key string) (*Manifest, error) {
	m, err := decodeManifest(b)
	var me *manifestError
	if errors.As(err, &me) {
		me.key = key
	}
	return m, err
}

func (m *Manifest) encode() []byte {
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

const localManifestFile = "remote-manifest.json"

// loadLocalManifest reads the partition's manifest; ok is false if there
// is none yet.
func loadLocalManifest(path string) (*Manifest, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	m, err := decodeManifest(b)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return m, true, nil
}

// saveLocalManifest writes the manifest atomically and durably: the
// manifest on local disk is the partition's source of truth.
func saveLocalManifest(path string, m *Manifest) error {
	return fileutil.WriteFileAtomic(path, m.encode(), 0o644)
}
