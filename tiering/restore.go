package tiering

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/tierlog/tierlog/cold"
)

// restore builds the manifest of a partition that has none on local disk
// (a node that lost its disk) from the bucket: the newest manifest copy,
// extended by verified segment objects that continue it. Such an object is
// one whose upload finished but whose commit did not reach the bucket (a
// crash in between); its records were acknowledged and are nowhere else
// now, so it is adopted instead of being swept as an orphan. ok is false
// when the bucket holds nothing of the partition. next is the first offset
// the hot log may use: past every offset a segment object in the bucket
// holds, so a restore never gives an offset to a second record.
func (p *Partition) restore(ctx context.Context) (m *Manifest, next int64, ok bool, err error) {
	m, ok, err = p.store.latestManifest(ctx, p.topic, p.partition)
	if err != nil {
		return nil, 0, false, err
	}
	if !ok {
		m = &Manifest{Format: ManifestFormat, Topic: p.topic, Partition: p.partition}
	}
	// An attempt the copy still calls copy_started (a pass copied the
	// manifest while a crash's attempt waited to be withdrawn) may have a
	// whole object of acknowledged records: judge its object like any
	// other the manifest does not commit.
	m.Segments = slices.DeleteFunc(m.Segments, func(s RemoteSegment) bool { return s.State == CopyStarted })
	named := map[string]bool{}
	for _, s := range m.Segments {
		named[s.Key] = true
	}
	byBase := map[int64][]string{} // unnamed segment objects by base offset
	err = p.store.Bucket.Iter(ctx, PartitionPrefix(p.topic, p.partition), func(key string) error {
		if base, _, isSeg := parseSegmentKey(key); isSeg && !named[key] {
			byBase[base] = append(byBase[base], key)
		}
		return nil
	})
	if err != nil {
		return nil, 0, false, err
	}
	end := m.uploadedUpTo()
	adopted := 0
	for len(byBase[end]) > 0 {
		keys := byBase[end]
		slices.Sort(keys)
		var seg RemoteSegment
		found := false
		for _, key := range keys {
			if seg, err = p.inspect(ctx, key); err != nil {
				if !unusable(err) {
					// The bucket failed, not the object: carrying on would
					// give the object's offsets to new records.
					return nil, 0, false, err
				}
				p.logger.Warn("restore: segment object past the manifest does not verify; not adopted", "key", key, "err", err)
				continue
			}
			if seg.BaseOffset == end && seg.NextOffset > end {
				found = true
				break
			}
		}
		if !found {
			break // the objects stay in byBase: new offsets start past them
		}
		delete(byBase, end)
		m.Segments = append(m.Segments, seg)
		end = seg.NextOffset
		adopted++
		ok = true
		p.logger.Warn("restore: adopted a segment uploaded but not committed before the crash",
			"key", seg.Key, "base_offset", seg.BaseOffset, "next_offset", seg.NextOffset)
	}
	next = end
	for base, keys := range byBase {
		if base < end {
			continue // a withdrawn attempt at offsets the manifest holds
		}
		ok = true
		for _, key := range keys {
			seen := base + 1
			seg, err := p.inspect(ctx, key)
			switch {
			case err == nil:
				seen = max(seen, seg.NextOffset)
			case !unusable(err):
				return nil, 0, false, err
			}
			next = max(next, seen)
		}
	}
	if next > end {
		p.logger.Warn("restore: the bucket holds segment objects that do not continue the manifest; new records start after them, leaving a gap",
			"remote_end", end, "first_new_offset", next)
	}
	if adopted > 0 {
		m.Version++
		if err := p.putManifestCopy(ctx, m); err != nil {
			return nil, 0, false, err
		}
	}
	return m, next, ok, nil
}

// unusable reports whether inspect failed on the object itself (corrupt,
// not a segment of this key, gone) rather than on the bucket: only then may
// a restore go on without it.
func unusable(err error) bool {
	return errors.Is(err, cold.ErrCorruptObject) || errors.Is(err, cold.ErrNotFound)
}

// inspect reads a segment object's footer and digest, checks the footer
// matches the key, and returns it as a committed manifest entry. It reads
// the version Attributes names, and records that version and its Object
// Lock retain-until date as an upload does: reads and deletes then name
// the version, and remote retention leaves it alone until its date.
func (p *Partition) inspect(ctx context.Context, key string) (RemoteSegment, error) {
	base, id, _ := parseSegmentKey(key)
	var a cold.Attributes
	if err := retry(ctx, func() (err error) { a, err = p.store.Bucket.Attributes(ctx, key); return err }); err != nil {
		return RemoteSegment{}, err
	}
	ref := cold.SegmentRef{Key: key, Size: a.Size, VersionID: a.VersionID}
	var f *cold.Footer
	if err := retry(ctx, func() (err error) { f, err = cold.ReadFooter(ctx, p.store.Bucket, ref); return err }); err != nil {
		return RemoteSegment{}, err
	}
	if f.BaseOffset != base {
		return RemoteSegment{}, fmt.Errorf("tiering: %s: footer says base offset %d, the key %d: %w", key, f.BaseOffset, base, cold.ErrCorruptObject)
	}
	h := sha256.New()
	err := retry(ctx, func() error {
		h.Reset()
		rc, err := cold.GetRangeVersion(ctx, p.store.Bucket, key, a.VersionID, 0, a.Size)
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err := io.Copy(h, rc)
		if err == nil && n != a.Size {
			err = fmt.Errorf("tiering: %s: read %d bytes of %d", key, n, a.Size)
		}
		return err
	})
	if err != nil {
		return RemoteSegment{}, err
	}
	return RemoteSegment{BaseOffset: f.BaseOffset, NextOffset: f.NextOffset, ID: id, Key: key, State: CopyFinished,
		Size: a.Size, RawSize: f.RawSize, Chunks: len(f.Chunks), SHA256: hex.EncodeToString(h.Sum(nil)),
		ETag: a.ETag, VersionID: a.VersionID, RetainUntil: a.RetainUntil.UTC(),
		FirstTimestamp: f.FirstTimestamp, MaxTimestamp: f.MaxTimestamp, Epochs: segmentEpochs(f),
		UploadedAt: a.LastModified.UTC()}, nil
}

// parseSegmentKey returns the base offset and attempt id of a segment
// object's key (<prefix><20-digit base>-<epoch>-<id>.seg).
func parseSegmentKey(key string) (base int64, id string, ok bool) {
	name, ok := strings.CutSuffix(key[strings.LastIndexByte(key, '/')+1:], ".seg")
	if !ok {
		return 0, "", false
	}
	parts := strings.Split(name, "-")
	if len(parts) != 3 {
		return 0, "", false
	}
	base, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || base < 0 {
		return 0, "", false
	}
	return base, parts[2], true
}
