package tiering

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// forgeSegment returns an object of exactly s.Size bytes, a valid segment
// of s's offsets in which one byte of the value of offset s.BaseOffset is
// changed (batch CRC fixed up, footer CRCs made by WriteSegment): what an
// administrator with write access could put over the key.
func forgeSegment(t *testing.T, p *Partition, s RemoteSegment) []byte {
	t.Helper()
	var raw []byte
	for off := s.BaseOffset; off < s.NextOffset; {
		res, err := p.Read(context.Background(), off, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		data := res.Records
		for len(data) > 0 && off < s.NextOffset {
			h, err := batch.Peek(data)
			if err != nil {
				t.Fatal(err)
			}
			if h.BaseOffset >= off {
				raw = append(raw, data[:h.Size()]...)
				off = h.NextOffset()
			}
			data = data[h.Size():]
		}
	}
	want := testutil.Value(s.BaseOffset, valueSize)
	i := bytes.Index(raw, want)
	if i < 0 {
		t.Fatal("value of the first offset not found in its batch")
	}
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	for pos := 0; pos < len(want); pos++ {
		for _, c := range []byte("!#%&*+-/=?@^_~") {
			forged := bytes.Clone(raw)
			if forged[i+pos] == c {
				continue
			}
			forged[i+pos] = c
			h, _ := batch.Peek(forged)
			b := forged[:h.Size()]
			binary.BigEndian.PutUint32(b[17:21], crc32.Checksum(b[21:], castagnoli))
			var obj bytes.Buffer
			if _, err := cold.WriteSegment(&obj, bytes.NewReader(forged), cold.SegmentOptions{ChunkBytes: 16 << 10}); err != nil {
				t.Fatal(err)
			}
			if int64(obj.Len()) == s.Size {
				return obj.Bytes()
			}
		}
	}
	t.Fatal("no forged object of the same size")
	return nil
}

// TestReview10a_CatchUpReadsOverwrittenVersion: on a versioned (Object
// Lock) bucket the manifest records each segment's version id and reads
// use it, so an object overwritten behind tierlog's back is still read as
// written (TestLockedTopicRetention checks this for a running node). But
// the Merkle tree's catch-up over segments uploaded without a tree
// (tiering/tree.go remoteLeaves) reads them with a SegmentRef without the
// VersionID: it reads the overwritten bytes, and - since the cold reader
// caches footers by key+size and chunks by key, not by version - the
// normal read path of the same node then serves the forged bytes too,
// and the checkpoint signs a tree over them.
func TestReview10a_CatchUpReadsOverwrittenVersion(t *testing.T) {
	ctx := context.Background()
	e := newLockedEnv(t, "minio")
	lock := ObjectLock{Mode: cold.LockGovernance, Period: time.Hour}
	p := e.openLocked("audit", lock)
	produce(t, p, 150)
	e.settle(p)
	segs := p.Manifest().committed()
	first := segs[0]
	if first.VersionID == "" {
		t.Fatalf("no version id recorded: %+v", first)
	}
	forged := forgeSegment(t, p, first)
	p.Close()
	e.daemon.Remove(p)

	// An administrator overwrites the first segment's key (a new version;
	// the locked one stays and the manifest names it).
	if _, err := e.m.Client().PutObject(ctx, e.bucket, lockedPrefix+first.Key, bytes.NewReader(forged), int64(len(forged)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	// The node restarts with a signing key: the tree catches up over the
	// committed segments, then normal reads.
	e2 := newEnv(t, e.env.bucket, e.dataDir)
	e2.signWith(filepath.Join(t.TempDir(), "signing.key")) // without it (no catch-up) the reads below are right
	p2, err := OpenPartition(ctx, PartitionOptions{
		Dir: filepath.Join(e.dataDir, "audit", "0"), Topic: "audit", Hot: hotConfig(),
		Store: e2.store, Reader: e2.reader, Remote: true, Retention: Retention{Bytes: -1}, ObjectLock: lock,
	})
	if err != nil {
		t.Fatal(err)
	}
	e2.daemon.Add(p2)
	defer p2.Close()
	produce(t, p2, 20)
	e2.settle(p2)
	// The read path must serve the recorded (locked) version.
	for _, r := range readAll(t, p2, 0) {
		if want := testutil.Value(r.Offset, valueSize); !bytes.Equal(r.Value, want) {
			t.Fatalf("offset %d: the read path serves %q, the producer wrote (and the manifest's version %s holds) %q", r.Offset, r.Value, first.VersionID, want)
		}
	}
}

// TestReview10a_AdoptedLockedSegmentLosesRetainUntil: a crash after a
// locked segment's upload and before its commit leaves a copy_started
// attempt whose object is whole; the restart's sweep adopts it
// (adoptFinished, from the object's attributes), but the entry it commits
// has no retain_until. Remote retention then takes the object for
// unlocked: it starts the deletion (the log start moves past offsets the
// bucket must keep, which stop being readable) instead of leaving the
// segment copy_finished until its date, as tiering/lock.go promises for
// every locked segment ("Remote retention never deletes a locked object
// early ... it stays copy_finished and keeps serving reads").
func TestReview10a_AdoptedLockedSegmentLosesRetainUntil(t *testing.T) {
	ctx := context.Background()
	e := newLockedEnv(t, "minio")
	lock := ObjectLock{Mode: cold.LockGovernance, Period: time.Hour}
	p := e.openLocked("audit", lock)
	produce(t, p, 100)
	p.Log().Roll()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(e.daemon.pending(p)) > 0 }, "a segment sealed")
	b := built{s: e.daemon.pending(p)[0], id: newID()}
	var err error
	if b.obj, err = e.daemon.build(p, b.s, b.id); err != nil {
		t.Fatal(err)
	}
	defer b.discard()
	entry := RemoteSegment{BaseOffset: b.s.BaseOffset, NextOffset: b.s.NextOffset, ID: b.id,
		Key: segmentKey(p.topic, p.partition, b.s.BaseOffset, 0, b.id), State: CopyStarted}
	p.tierMu.Lock()
	err = p.commit(func(m *Manifest) { m.Segments = append(m.Segments, entry) })
	p.tierMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := e.daemon.putObject(ctx, p, entry.Key, b.obj) // as upload does: locked
	if err != nil || attrs.RetainUntil.IsZero() {
		t.Fatalf("locked upload: %+v %v", attrs, err)
	}
	// The crash: no commit. The restart's sweep adopts the attempt.
	if err := e.daemon.cleanup(ctx, p); err != nil {
		t.Fatal(err)
	}
	segs := p.Manifest().committed()
	if len(segs) != 1 || segs[0].Key != entry.Key {
		t.Fatalf("not adopted: %+v", p.Manifest().Segments)
	}
	t.Logf("adopted entry: version %q retain_until %v (the bucket keeps it until %v)", segs[0].VersionID, segs[0].RetainUntil, attrs.RetainUntil)

	setRetention(p, Retention{Age: time.Millisecond, Bytes: -1})
	for range 3 {
		e.daemon.pass(ctx)
	}
	// The passes may upload the segments sealed after it; the adopted one
	// must still be committed, and the log start where it was.
	m := p.Manifest()
	if c := m.committed(); m.LogStartOffset != 0 || len(c) == 0 || c[0].Key != entry.Key {
		t.Fatalf("retention started deleting a segment locked until %v: log start %d, segments %+v", attrs.RetainUntil, m.LogStartOffset, m.Segments)
	}
}

// TestReview10a_LegalHoldOffLeavesOldVersionsHeld: under a topic's legal
// hold every checkpoint is uploaded held, and each one overwrites
// tlog/checkpoint (a new version each time on the versioned bucket Object
// Lock needs). Lifting the hold (applyLegalHold) releases only the
// current version of each tlog/ key: every earlier version of
// tlog/checkpoint written under the hold stays held for good - nothing
// tierlog does ever releases or deletes them.
func TestReview10a_LegalHoldOffLeavesOldVersionsHeld(t *testing.T) {
	ctx := context.Background()
	e := newLockedEnv(t, "minio")
	e.signWith(filepath.Join(t.TempDir(), "signing.key"))
	p := e.openLocked("held", ObjectLock{LegalHold: true})
	for range 3 {
		produce(t, p, 60)
		e.settle(p)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { e.daemon.pass(ctx); return p.Manifest().LegalHold }, "legal hold not recorded")
	p.SetObjectLock(ObjectLock{})
	testutil.Eventually(t, 10*time.Second, func() bool { e.daemon.pass(ctx); return !p.Manifest().LegalHold }, "legal hold not lifted")

	cl := e.m.Client()
	var held []string
	versions := 0
	for o := range cl.ListObjects(ctx, e.bucket, minio.ListObjectsOptions{Prefix: lockedPrefix + PartitionPrefix("held", 0) + "tlog/", Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if o.IsDeleteMarker {
			continue
		}
		versions++
		st, err := cl.GetObjectLegalHold(ctx, e.bucket, o.Key, minio.GetObjectLegalHoldOptions{VersionID: o.VersionID})
		if minio.ToErrorResponse(err).Code == "NoSuchObjectLockConfiguration" {
			continue // uploaded without a lock (tlog/checkpoint): not held
		}
		if err != nil {
			t.Fatal(err)
		}
		if st != nil && *st == minio.LegalHoldEnabled {
			held = append(held, o.Key+"@"+o.VersionID)
		}
	}
	if len(held) > 0 {
		t.Fatalf("after the topic's legal hold was lifted, %d of %d tlog/ object versions are still held: %v", len(held), versions, held)
	}
}

// TestReview10a_ForkAfterAdoptedSegmentRetained: a crash after a
// segment's checkpoint (size N) was written and before the manifest
// committed it; the restart adopts the attempt (adoptFinished: the entry
// has no tree size), and remote retention deletes it before another
// segment is uploaded. The manifest's tree size is still that of the
// segment before (S < N), so the next upload appends ABSENT leaves for
// [S, N) - the records the checkpoint of N signed - rewriting their
// tiles: the new checkpoint does not extend the signed checkpoint of N (a
// fork), and no consistency proof between them exists.
func TestReview10a_ForkAfterAdoptedSegmentRetained(t *testing.T) { adoptRetainExtend(t, true) }

// adoptRetainExtend: a crash between a segment's checkpoint and its
// commit; a restart (with the same signing key or another) adopts the
// attempt; remote retention deletes every segment before a new one is
// sealed; then new records are tiered. The tree must extend the
// checkpoint signed before the crash.
func adoptRetainExtend(t *testing.T, sameKey bool) {
	ctx := context.Background()
	bucket := newFileBucket(t)
	dataDir := t.TempDir()
	keyPath := filepath.Join(t.TempDir(), "signing.key")
	e := newEnv(t, bucket, dataDir)
	e.signWith(keyPath)
	p := e.open("audit", 0, true)
	produce(t, p, 100)
	e.settle(p)
	produce(t, p, 50) // one segment
	p.Log().Roll()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(e.daemon.pending(p)) > 0 }, "a segment sealed")

	n := crashAfterCheckpoint(t, e, p)
	signedN, err := audit.GetCheckpoint(ctx, bucket, PartitionPrefix("audit", 0), n)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	e.daemon.Remove(p)

	e2 := newEnv(t, bucket, dataDir)
	if !sameKey {
		keyPath = filepath.Join(t.TempDir(), "other.key")
	}
	e2.signWith(keyPath)
	p2 := e2.open("audit", 0, true)
	defer p2.Close()
	e2.daemon.cleanupAll(ctx)
	if got := p2.UploadedEnd(); got != n {
		t.Fatalf("the attempt was not adopted: uploaded end %d, want %d", got, n)
	}
	setRetention(p2, Retention{Age: time.Millisecond, Bytes: -1})
	testutil.Eventually(t, 10*time.Second, func() bool {
		e2.daemon.pass(ctx)
		return len(p2.Manifest().Segments) == 0
	}, "retention did not delete the segments")
	if got := p2.Manifest().TreeSize; got != n {
		t.Fatalf("retention deleted every segment with the tree at %d, want it at their end %d", got, n)
	}
	setRetention(p2, Retention{Bytes: -1})
	produce(t, p2, 50)
	e2.settle(p2)

	pr, err := p2.Prover()
	if err != nil {
		t.Fatal(err)
	}
	old, _ := audit.PeekCheckpoint(signedN)
	if _, err := pr.Consistency(ctx, uint64(n), 0); err != nil {
		t.Fatalf("the tree at %d does not extend the checkpoint signed at %d (root %x): %v", pr.TreeSize(), n, old.Hash, err)
	}
	root, err := audit.RootAt(ctx, bucket, PartitionPrefix("audit", 0), uint64(n))
	if err != nil || !bytes.Equal(root, old.Hash) {
		t.Fatalf("root at %d: %x %v, the checkpoint signed %x", n, root, err, old.Hash)
	}
}

// crashAfterCheckpoint runs upload() on p's one sealed segment up to its
// checkpoint, then stops as a crash would: no commit (the entry stays
// copy_started). It returns the segment's end, the checkpoint's size.
func crashAfterCheckpoint(t *testing.T, e *env, p *Partition) int64 {
	t.Helper()
	ctx := context.Background()
	if n := len(e.daemon.pending(p)); n != 1 {
		t.Fatalf("%d pending segments, want 1", n)
	}
	b := built{s: e.daemon.pending(p)[0], id: newID()}
	var err error
	if b.obj, err = e.daemon.build(p, b.s, b.id); err != nil {
		t.Fatal(err)
	}
	defer b.discard()
	entry := RemoteSegment{BaseOffset: b.s.BaseOffset, NextOffset: b.s.NextOffset, ID: b.id,
		Key: segmentKey(p.topic, p.partition, b.s.BaseOffset, 0, b.id), State: CopyStarted}
	p.tierMu.Lock()
	err = p.commit(func(m *Manifest) { m.Segments = append(m.Segments, entry) })
	if err == nil {
		_, err = e.daemon.putObject(ctx, p, entry.Key, b.obj)
	}
	if err == nil {
		err = e.daemon.appendTree(ctx, p, b.obj.leaves)
	}
	if err == nil {
		err = e.daemon.checkpoint(ctx, p, &entry)
	}
	p.tierMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return entry.NextOffset
}
