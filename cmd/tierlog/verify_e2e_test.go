package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

// TestVerifyTampering: `tierlog verify` on an archive a real node wrote to
// a file bucket verifies clean, and every way an administrator with write
// access can change history - fixing every checksum they can - is found,
// with the first offset and object that disagree and exit code 1. Each
// case tampers with its own copy of the archive.
func TestVerifyTampering(t *testing.T) {
	t.Parallel()
	bucket := filepath.Join(t.TempDir(), "bucket")
	orig := writeAuditArchive(t, nil, "file://"+bucket, 3000, true)
	wantClean(t, orig.verify(t))
	wantClean(t, orig.verify(t, "audit"))
	wantClean(t, orig.verify(t, "audit", "0"))
	// Retention deleted the start of short: what is left verifies, and the
	// report says what could not be recomputed.
	r := orig.verify(t, "short")
	wantClean(t, r)
	for _, want := range []string{"deleted by retention", "below the archive's start: signature and consistency only"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("verify short: the report does not say %q:\n%s", want, r.stdout)
		}
	}

	t.Run("record value changed, checksums fixed", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		const target = 1234
		s := segmentOf(t, tp.segments(), target)
		tp.rewriteSegment(s, flipValueBits(target, 7, 0x01))
		// The storage layer sees nothing wrong: the replay reads it.
		if r := runCLI(t, nil, "", "bucket", "consume", "--bucket", a.url, "audit", "--from", fmt.Sprint(target), "--max", "1"); r.code != 0 || r.stdout == joinLines(tierLines(3000)[target:target+1]) {
			t.Fatalf("bucket consume of the altered record: exit %d, %q (want it served, altered)", r.code, r.stdout)
		}
		wantFinding(t, a.verify(t), target, s.Key, "is not the one signed", "inclusion proof")
	})

	t.Run("two records swapped", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		const first = 2101 // in a zstd batch
		s := segmentOf(t, tp.segments(), first)
		tp.rewriteSegment(s, func(recs []batch.Record) []batch.Record {
			for i := range recs {
				if recs[i].Offset == first {
					recs[i].Value, recs[i+1].Value = recs[i+1].Value, recs[i].Value
				}
			}
			return recs
		})
		wantFinding(t, a.verify(t), first, s.Key, "is not the one signed")
	})

	t.Run("segment deleted", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		s := tp.segments()[2]
		tp.del(s.Key)
		wantFinding(t, a.verify(t), s.BaseOffset, s.Key, "missing")
	})

	t.Run("segment deleted and dropped from the manifest", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		s := tp.segments()[1]
		tp.del(s.Key)
		tp.editManifests(func(m *tiering.Manifest) {
			for i := range m.Segments {
				if m.Segments[i].Key == s.Key {
					m.Segments = append(m.Segments[:i], m.Segments[i+1:]...)
					break
				}
			}
		})
		wantFinding(t, a.verify(t), s.BaseOffset, fmt.Sprintf("(no segment: the manifest %s names none for offsets %d to %d)", mustNewest(tp), s.BaseOffset, s.NextOffset-1),
			"is not the one signed")
	})

	t.Run("segment replaced by an earlier, shorter copy", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		s := tp.segments()[1]
		// The copy a re-upload of an earlier state of the log would give:
		// its last batch is not there yet. The manifest is made to match.
		log := tp.segmentLog(s.Key)
		var lastBase int64
		for pos := 0; pos < len(log); {
			h, _ := batch.Peek(log[pos:])
			lastBase, pos = h.BaseOffset, pos+h.Size()
		}
		tp.rewriteSegment(s, func(recs []batch.Record) []batch.Record {
			if recs[0].Offset == lastBase {
				return nil
			}
			return recs
		})
		wantFinding(t, a.verify(t), lastBase, fmt.Sprintf("(no segment: the manifest %s names none for offsets %d to %d)", mustNewest(tp), lastBase, s.NextOffset-1),
			"is not the one signed")
	})

	t.Run("fork: a checkpoint for another tree of the same size", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		sizes := tp.checkpointSizes()
		size := sizes[2]
		k, err := audit.LoadOrCreateKey(a.keyPath, audit.KeyName(0))
		if err != nil {
			t.Fatal(err)
		}
		// Signed with the node's own key: only the records can refute it.
		fake := bytes.Repeat([]byte{0xab}, audit.HashSize)
		text, err := audit.Sign(k, audit.Origin(clusterIDOf(t, tp), "audit", 0), size, fake)
		if err != nil {
			t.Fatal(err)
		}
		key := audit.CheckpointKey(tp.prefix, size)
		tp.put(key, text)
		wantFinding(t, a.verify(t), int64(sizes[1]), key, "fork")
	})

	t.Run("checkpoint signed by another key", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		sizes := tp.checkpointSizes()
		size := sizes[1]
		// Same name as the node's key, another key: the checkpoint states
		// the true root, but the node did not sign it.
		skey, _, err := note.GenerateKey(rand.Reader, audit.KeyName(0))
		if err != nil {
			t.Fatal(err)
		}
		other, err := audit.ParseKey(skey)
		if err != nil {
			t.Fatal(err)
		}
		key := audit.CheckpointKey(tp.prefix, size)
		c, err := audit.Open(tp.get(key), "", mustVerifier(t, a.public))
		if err != nil {
			t.Fatal(err)
		}
		text, err := audit.Sign(other, c.Origin, c.Size, c.Hash)
		if err != nil {
			t.Fatal(err)
		}
		tp.put(key, text)
		wantFinding(t, a.verify(t), int64(sizes[0]), key, "not valid", "none of them a key given")
		// With the other key given as well, that checkpoint is accepted.
		keys := filepath.Join(t.TempDir(), "keys")
		writeFile(t, keys, "# the node and a second signer\n"+a.public+"\n"+other.Public+"\n")
		wantClean(t, runCLI(t, nil, "", "verify", "--bucket", a.url, "--public-key", keys))
	})

	t.Run("tile changed", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		key := audit.TileKey(tp.prefix, 0, 3, audit.TileWidth)
		tile := tp.get(key)
		const entry = 17
		tile[entry*audit.HashSize+5] ^= 0x80
		tp.put(key, tile)
		wantFinding(t, a.verify(t), 3*audit.TileWidth+entry, key, "the tile differs")
	})

	t.Run("rollback: newest segments removed", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		segs := tp.segments()
		keep := segs[:len(segs)-2]
		for _, s := range segs[len(keep):] {
			tp.del(s.Key)
		}
		last := keep[len(keep)-1]
		tp.editManifests(func(m *tiering.Manifest) {
			var out []tiering.RemoteSegment
			for _, s := range m.Segments {
				if s.BaseOffset < last.NextOffset {
					out = append(out, s)
				}
			}
			m.Segments = out
		})
		end := last.NextOffset
		wantFinding(t, a.verify(t), end, last.Key, "rolled back", fmt.Sprintf("offsets %d to %d are missing", end, a.records-1))

		// With the newer checkpoints deleted too, the bucket alone cannot
		// tell; a checkpoint the auditor kept from before can.
		kept := filepath.Join(t.TempDir(), "checkpoint")
		writeFile(t, kept, tp.get(audit.LatestCheckpointKey(tp.prefix)))
		for _, size := range tp.checkpointSizes() {
			if int64(size) > end {
				tp.del(audit.CheckpointKey(tp.prefix, size))
			}
		}
		tp.put(audit.LatestCheckpointKey(tp.prefix), tp.get(audit.CheckpointKey(tp.prefix, uint64(end))))
		// The manifest's own record of the tree still names the size
		// rolled back...
		wantFinding(t, a.verify(t), end, mustNewest(tp), fmt.Sprintf("the manifest records tree size %d", a.records), "checkpoints were removed")
		// ...until it is rewritten too.
		tp.editManifests(func(m *tiering.Manifest) { m.TreeSize, m.TreeRoot = last.TreeSize, last.TreeRoot })
		wantClean(t, a.verify(t))
		wantFinding(t, a.verify(t, "--checkpoint", kept), end, last.Key, "rolled back", kept)
	})

	t.Run("latest checkpoint rolled back", func(t *testing.T) {
		a := orig.copyTo(t)
		tp := a.tamper(t)
		sizes := tp.checkpointSizes()
		latest := audit.LatestCheckpointKey(tp.prefix)
		tp.put(latest, tp.get(audit.CheckpointKey(tp.prefix, sizes[1])))
		wantFinding(t, a.verify(t), int64(sizes[1]), latest, "rolled back")
	})
}

// TestVerifyMinIO: on MinIO, an untouched archive verifies clean and one
// byte of one record changed with every checksum fixed up is found.
func TestVerifyMinIO(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	a := writeAuditArchive(t, m.Env(), m.MinIOURL(m.Bucket, "tierlog"), 3000, false)
	wantClean(t, a.verify(t))
	tp := a.tamper(t)
	const target = 777
	s := segmentOf(t, tp.segments(), target)
	tp.rewriteSegment(s, flipValueBits(target, 0, 0x20))
	wantFinding(t, a.verify(t), target, s.Key, "is not the one signed")
	// The same bucket through the s3:// backend.
	r := runCLI(t, m.Env(), "", "verify", "--bucket", m.S3URL(m.Bucket, "tierlog"), "--public-key", a.public, "audit")
	wantFinding(t, r, target, s.Key, "is not the one signed")
}

// TestVerifyUsage: usage errors and a bucket that cannot be read exit 2
// (nothing concluded), never 1.
func TestVerifyUsage(t *testing.T) {
	t.Parallel()
	missing := "file://" + filepath.Join(t.TempDir(), "nothing")
	skey, _, _ := note.GenerateKey(rand.Reader, "k")
	k, _ := audit.ParseKey(skey)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", "--public-key", k.Public}, "--bucket is required"},
		{[]string{"verify", "--bucket", missing}, "--public-key is required"},
		{[]string{"verify", "--bucket", missing, "--public-key", "not-a-key"}, "neither a key"},
		{[]string{"verify", "--bucket", missing, "--public-key", k.Public, "audit", "x"}, "PARTITION"},
		{[]string{"verify", "--bucket", missing, "--public-key", k.Public}, "open bucket"},
	} {
		r := runCLI(t, nil, "", c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("tierlog %v: exit %d, stderr %q; want exit 2 saying %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := audit.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustNewest(tp *tamper) string {
	key, _ := tp.manifest()
	return key
}

// clusterIDOf reads the cluster id a checkpoint origin names from any
// kept checkpoint.
func clusterIDOf(t *testing.T, tp *tamper) string {
	t.Helper()
	text := tp.get(audit.LatestCheckpointKey(tp.prefix))
	origin, _, _ := strings.Cut(string(text), "\n")
	id, _, _, err := audit.ParseOrigin(origin)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
