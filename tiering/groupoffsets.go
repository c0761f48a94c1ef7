package tiering

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tierlog/tierlog/cold"
)

// GroupOffsetsKey is the bucket's copy of the consumer groups' committed
// offsets (relative to the bucket URL's prefix): one object, replaced
// whole, holding a JSON header line and then the snapshot bytes
// (broker/groups.Coordinator.Snapshot).
const GroupOffsetsKey = "groups/offsets"

// groupOffsetsFormat is the version of the object's layout.
const groupOffsetsFormat = 1

// groupOffsetsHeader is the object's first line: who wrote the snapshot
// under which claim of the prefix, and a checksum of it.
type groupOffsetsHeader struct {
	Format     int       `json:"format"`
	NodeID     string    `json:"node_id"`
	OwnerEpoch int64     `json:"owner_epoch"`
	Written    time.Time `json:"written"`
	Bytes      int       `json:"bytes"`
	SHA256     string    `json:"sha256"`
}

// ErrBadGroupOffsets: the bucket's copy of the group offsets is not one
// this node can read (damaged, or of a newer format).
var ErrBadGroupOffsets = errors.New("tiering: unreadable copy of the group offsets")

// PutGroupOffsets replaces the bucket's copy of the group offsets with
// snapshot. Like every write of the Store it first checks that this node
// owns the prefix; it is also conditional (If-Match the copy's ETag as
// last seen), and a copy written under a later owner epoch is never
// replaced: a node fenced off after its ownership check passed cannot
// overwrite the new owner's copy with its older offsets.
func (s *Store) PutGroupOffsets(ctx context.Context, snapshot []byte) error {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	cu, ok := s.Bucket.(cold.ConditionalUploader)
	if !ok {
		return fmt.Errorf("tiering: bucket %s cannot upload conditionally", s.Bucket.Name())
	}
	me := ownerRecord{Epoch: 1}
	if s.owner != nil {
		me = s.owner.me
	}
	sum := sha256.Sum256(snapshot)
	hdr, _ := json.Marshal(groupOffsetsHeader{Format: groupOffsetsFormat, NodeID: me.NodeID, OwnerEpoch: me.Epoch,
		Written: time.Now().UTC(), Bytes: len(snapshot), SHA256: hex.EncodeToString(sum[:])})
	raw := append(append(hdr, '\n'), snapshot...)
	for range 5 {
		cond := cold.Condition{IfMatch: s.groupsETag}
		if s.groupsETag == "" {
			h, etag, found, err := readGroupOffsetsHeader(ctx, s.Bucket)
			switch {
			case err != nil && !errors.Is(err, ErrBadGroupOffsets):
				return err
			case found && err == nil && h.OwnerEpoch > me.Epoch:
				err := fmt.Errorf("the copy of the group offsets in the bucket was written by node %s at owner epoch %d, after this node's %d", h.NodeID, h.OwnerEpoch, me.Epoch)
				if s.owner != nil {
					return s.owner.fence("%v", err)
				}
				return fmt.Errorf("%w: %v", ErrFenced, err)
			case found:
				cond.IfMatch = etag // ours, an older owner's, or damaged: replaced
			default:
				cond.IfAbsent = true
			}
		}
		var attrs cold.Attributes
		err := retry(ctx, func() (err error) {
			attrs, err = cu.UploadIf(ctx, GroupOffsetsKey, bytes.NewReader(raw), int64(len(raw)), cond)
			return err
		})
		if errors.Is(err, cold.ErrPreconditionFailed) {
			s.groupsETag = "" // changed since we saw it (or our lost reply): read it again
			continue
		}
		if err != nil {
			return fmt.Errorf("tiering: copy the group offsets to %s: %w", s.Bucket.Name(), err)
		}
		s.groupsETag = attrs.ETag
		return nil
	}
	return fmt.Errorf("tiering: copy the group offsets to %s: %s kept changing under us; is another node writing it?", s.Bucket.Name(), GroupOffsetsKey)
}

// GroupOffsets reads the bucket's copy of the group offsets: the snapshot,
// checked against its header's length and checksum. found is false when
// the bucket holds none.
func (s *Store) GroupOffsets(ctx context.Context) (snapshot []byte, found bool, err error) {
	return ReadGroupOffsets(ctx, s.Bucket)
}

// ReadGroupOffsets is Store.GroupOffsets on a bucket of which this node
// claims nothing (for tools and tests).
func ReadGroupOffsets(ctx context.Context, b cold.Bucket) (snapshot []byte, found bool, err error) {
	var raw []byte
	err = retry(ctx, func() error {
		rc, err := b.Get(ctx, GroupOffsetsKey)
		if err != nil {
			return err
		}
		defer rc.Close()
		raw, err = io.ReadAll(rc)
		return err
	})
	if errors.Is(err, cold.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("tiering: read %s from %s: %w", GroupOffsetsKey, b.Name(), err)
	}
	line, body, _ := bytes.Cut(raw, []byte{'\n'})
	h, err := parseGroupOffsetsHeader(line)
	if err != nil {
		return nil, true, fmt.Errorf("%w: %s in %s: %v", ErrBadGroupOffsets, GroupOffsetsKey, b.Name(), err)
	}
	sum := sha256.Sum256(body)
	if len(body) != h.Bytes || hex.EncodeToString(sum[:]) != h.SHA256 {
		return nil, true, fmt.Errorf("%w: %s in %s: %d bytes with SHA-256 %x, the header says %d bytes with %s",
			ErrBadGroupOffsets, GroupOffsetsKey, b.Name(), len(body), sum, h.Bytes, h.SHA256)
	}
	return body, true, nil
}

// readGroupOffsetsHeader reads the header of the bucket's copy and the
// ETag of what it read (HEAD, then the first line: if the object changes
// in between, a write conditional on the ETag fails).
func readGroupOffsetsHeader(ctx context.Context, b cold.Bucket) (h groupOffsetsHeader, etag string, found bool, err error) {
	var attrs cold.Attributes
	err = retry(ctx, func() (err error) { attrs, err = b.Attributes(ctx, GroupOffsetsKey); return err })
	if errors.Is(err, cold.ErrNotFound) {
		return h, "", false, nil
	}
	if err != nil {
		return h, "", false, fmt.Errorf("tiering: read %s in %s: %w", GroupOffsetsKey, b.Name(), err)
	}
	var line []byte
	err = retry(ctx, func() error {
		rc, err := b.Get(ctx, GroupOffsetsKey)
		if err != nil {
			return err
		}
		defer rc.Close()
		line, err = bufio.NewReader(io.LimitReader(rc, 64<<10)).ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			err = nil // judged by the parse below
		}
		return err
	})
	if errors.Is(err, cold.ErrNotFound) {
		return h, "", false, nil // deleted in between: as if never there
	}
	if err != nil {
		return h, "", false, fmt.Errorf("tiering: read %s in %s: %w", GroupOffsetsKey, b.Name(), err)
	}
	h, err = parseGroupOffsetsHeader(bytes.TrimSuffix(line, []byte{'\n'}))
	if err != nil {
		return h, attrs.ETag, true, fmt.Errorf("%w: %v", ErrBadGroupOffsets, err)
	}
	return h, attrs.ETag, true, nil
}

func parseGroupOffsetsHeader(line []byte) (groupOffsetsHeader, error) {
	var h groupOffsetsHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return h, fmt.Errorf("bad header: %v", err)
	}
	if h.Format != groupOffsetsFormat {
		return h, fmt.Errorf("format %d, this node reads %d", h.Format, groupOffsetsFormat)
	}
	return h, nil
}
