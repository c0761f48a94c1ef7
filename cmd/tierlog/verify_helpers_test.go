package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/cold/bucketurl"
	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/tiering"
)

// auditArchive is a bucket a real node wrote: topic "audit", one
// partition of several segments, half of its batches zstd-compressed by
// the producer, and the node's signing key file.
type auditArchive struct {
	url     string
	env     []string
	keyPath string // the node's private signing key
	public  string // its public key
	records int64
}

// writeAuditArchive runs a node on bucketURL, produces n records to
// "audit" (and, if short, to "short", whose start remote retention
// deletes), waits until every one is tiered and stops the node.
func writeAuditArchive(t *testing.T, env []string, bucketURL string, n int, short bool) *auditArchive {
	t.Helper()
	dir := t.TempDir()
	a := &auditArchive{url: bucketURL, env: env, keyPath: filepath.Join(dir, "signing.key"), records: int64(n)}
	nd := startNode(t, filepath.Join(dir, "data"), env, "--bucket", bucketURL, "--signing-key", a.keyPath)
	createTiered(t, nd, "audit")
	lines := tierLines(n)
	ok(t, nd, joinLines(lines[:n/2]), "produce", "audit", "--batch", "100", "--quiet")
	ok(t, nd, joinLines(lines[n/2:]), "produce", "audit", "--batch", "100", "--quiet", "--compression", "zstd")
	waitTiered(t, nd, "audit", []int64{int64(n)})
	if short {
		shortTopic(t, nd)
	}
	if code := nd.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	k, err := audit.LoadOrCreateKey(a.keyPath, audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	a.public = k.Public
	return a
}

// copyTo copies a file bucket's archive to a new directory.
func (a *auditArchive) copyTo(t *testing.T) *auditArchive {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bucket")
	if out, err := exec.Command("cp", "-a", strings.TrimPrefix(a.url, "file://"), dst).CombinedOutput(); err != nil {
		t.Fatalf("copy the bucket: %v\n%s", err, out)
	}
	c := *a
	c.url = "file://" + dst
	return &c
}

func (a *auditArchive) verify(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, a.env, "", append([]string{"verify", "--bucket", a.url, "--public-key", a.public}, args...)...)
}

// tamper is the bucket as its administrator sees it: write access to every
// object, no signing key.
type tamper struct {
	t      *testing.T
	ctx    context.Context
	b      cold.Bucket
	prefix string
}

func (a *auditArchive) tamper(t *testing.T) *tamper {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	b, err := bucketurl.Open(ctx, a.url, cold.Options{Credentials: credsFromEnv(a.env)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &tamper{t: t, ctx: ctx, b: b, prefix: tiering.PartitionPrefix("audit", 0)}
}

func credsFromEnv(env []string) *cold.Credentials {
	var c cold.Credentials
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "MINIO_ACCESS_KEY":
			c.AccessKeyID = v
		case "MINIO_SECRET_KEY":
			c.SecretAccessKey = v
		}
	}
	if c.AccessKeyID == "" {
		return nil
	}
	return &c
}

func (tp *tamper) get(key string) []byte {
	tp.t.Helper()
	rc, err := tp.b.Get(tp.ctx, key)
	if err != nil {
		tp.t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		tp.t.Fatal(err)
	}
	return data
}

func (tp *tamper) put(key string, data []byte) {
	tp.t.Helper()
	if _, err := tp.b.Upload(tp.ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *tamper) del(key string) {
	tp.t.Helper()
	if err := tp.b.Delete(tp.ctx, key); err != nil {
		tp.t.Fatal(err)
	}
}

// manifests returns the keys of the partition's manifest copies, oldest
// first (a single node's prefix keeps versioned copies; the newest is the
// one a reader uses).
func (tp *tamper) manifests() []string {
	tp.t.Helper()
	var keys []string
	err := tp.b.Iter(tp.ctx, tp.prefix, func(key string) error {
		if name := key[strings.LastIndexByte(key, '/')+1:]; strings.HasPrefix(name, "manifest") && strings.HasSuffix(name, ".json") {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		tp.t.Fatalf("manifests under %s: %v %v", tp.prefix, keys, err)
	}
	sort.Strings(keys)
	return keys
}

// manifest is the newest manifest.
func (tp *tamper) manifest() (string, *tiering.Manifest) {
	tp.t.Helper()
	keys := tp.manifests()
	var m tiering.Manifest
	if err := json.Unmarshal(tp.get(keys[len(keys)-1]), &m); err != nil {
		tp.t.Fatal(err)
	}
	return keys[len(keys)-1], &m
}

// segments are the committed segments of the newest manifest.
func (tp *tamper) segments() []tiering.RemoteSegment {
	_, m := tp.manifest()
	var out []tiering.RemoteSegment
	for _, s := range m.Segments {
		if s.State == tiering.CopyFinished {
			out = append(out, s)
		}
	}
	if len(out) < 4 {
		tp.t.Fatalf("%d segments, the tests need 4 or more", len(out))
	}
	return out
}

// editManifests applies edit to every manifest copy.
func (tp *tamper) editManifests(edit func(m *tiering.Manifest)) {
	tp.t.Helper()
	for _, key := range tp.manifests() {
		var m tiering.Manifest
		if err := json.Unmarshal(tp.get(key), &m); err != nil {
			tp.t.Fatal(err)
		}
		edit(&m)
		raw, _ := json.MarshalIndent(&m, "", "  ")
		tp.put(key, raw)
	}
}

// segmentLog returns the batches (the original .log bytes) of a segment
// object, read with the cold package's own decoder.
func (tp *tamper) segmentLog(key string) []byte {
	tp.t.Helper()
	data := tp.get(key)
	f, err := cold.ParseFooter(data, int64(len(data)))
	if err != nil {
		tp.t.Fatal(err)
	}
	var log []byte
	for _, c := range f.Chunks {
		raw, err := cold.DecodeChunk(data[c.StoredPos:c.StoredPos+c.StoredSize], c)
		if err != nil {
			tp.t.Fatal(err)
		}
		log = append(log, raw...)
	}
	return log
}

// flipValueBits is an edit for rewriteSegment and alteredSegment: byte i
// of the value of the record at offset gets XORed with mask.
func flipValueBits(offset int64, i int, mask byte) func(recs []batch.Record) []batch.Record {
	return func(recs []batch.Record) []batch.Record {
		for k := range recs {
			if recs[k].Offset == offset {
				recs[k].Value[i] ^= mask
			}
		}
		return recs
	}
}

// rewriteSegment rewrites segment s as an administrator who knows the
// formats could: the object alteredSegment makes is written under the
// same key, and every manifest copy gets the new size, SHA-256 and
// offsets. Only the Merkle tree can tell.
func (tp *tamper) rewriteSegment(s tiering.RemoteSegment, edit func(recs []batch.Record) []batch.Record) {
	tp.t.Helper()
	obj, f := tp.alteredSegment(s, edit)
	tp.put(s.Key, obj)
	tp.recordSegment(s, f)
}

// recordSegment gives segment s's entry in every manifest copy the size,
// SHA-256 and offsets of the object whose footer is f.
func (tp *tamper) recordSegment(s tiering.RemoteSegment, f *cold.Footer) {
	tp.t.Helper()
	tp.editManifests(func(m *tiering.Manifest) {
		for i := range m.Segments {
			if e := &m.Segments[i]; e.Key == s.Key {
				e.Size, e.RawSize, e.Chunks, e.SHA256 = f.ObjectSize, f.RawSize, len(f.Chunks), hex.EncodeToString(f.SHA256[:])
				e.NextOffset = f.NextOffset
			}
		}
	})
}

// alteredSegment is segment s's object as an administrator who knows the
// formats could make it: edit changes the records of each batch (nil
// drops the batch), every batch changed is framed again with a valid
// CRC-32C, and the object is written again by the cold package's segment
// writer (chunk checksums, footer). It returns the object and its footer.
func (tp *tamper) alteredSegment(s tiering.RemoteSegment, edit func(recs []batch.Record) []batch.Record) ([]byte, *cold.Footer) {
	tp.t.Helper()
	log := tp.segmentLog(s.Key)
	var out []byte
	for pos := 0; pos < len(log); {
		h, err := batch.Peek(log[pos:])
		if err != nil {
			tp.t.Fatal(err)
		}
		b := log[pos : pos+h.Size()]
		pos += h.Size()
		_, recs, err := batch.Decode(b)
		if err != nil {
			tp.t.Fatal(err)
		}
		before := fmt.Sprint(recs)
		recs = edit(recs)
		if recs == nil {
			continue
		}
		if fmt.Sprint(recs) == before {
			out = append(out, b...)
			continue
		}
		nb, err := batch.Build(recs, batch.BuildOptions{Codec: h.Codec(), BaseOffset: h.BaseOffset})
		if err != nil {
			tp.t.Fatal(err)
		}
		batch.SetLeaderEpoch(nb, h.PartitionLeaderEpoch)
		if _, err := batch.Validate(nb); err != nil {
			tp.t.Fatalf("the rewritten batch does not validate: %v", err)
		}
		out = append(out, nb...)
	}
	var obj bytes.Buffer
	f, err := cold.WriteSegment(&obj, bytes.NewReader(out), cold.SegmentOptions{})
	if err != nil {
		tp.t.Fatal(err)
	}
	return obj.Bytes(), f
}

// checkpointSizes are the tree sizes of the kept checkpoints.
func (tp *tamper) checkpointSizes() []uint64 {
	tp.t.Helper()
	sizes, err := audit.ListCheckpoints(tp.ctx, tp.b, tp.prefix)
	if err != nil || len(sizes) < 4 {
		tp.t.Fatalf("checkpoints: %v %v", sizes, err)
	}
	return sizes
}

// wantFinding checks that verify found a disagreement, naming first the
// offset and object given and saying what (every one of says).
func wantFinding(t *testing.T, r result, offset int64, object string, says ...string) {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("verify: exit %d, want 1 (a finding)\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	first := fmt.Sprintf("FIRST DISAGREEMENT: offset %d, object %s: ", offset, object)
	i := strings.Index(r.stdout, first)
	if i < 0 {
		t.Fatalf("verify: want %q in the report:\n%s", first, r.stdout)
	}
	line, _, _ := strings.Cut(r.stdout[i:], "\n")
	for _, s := range says {
		if !strings.Contains(line, s) {
			t.Errorf("verify: the finding %q does not say %q", line, s)
		}
	}
	if !strings.Contains(r.stderr, "disagree with their signed history") {
		t.Errorf("verify: stderr %q, want the summary of the failure", r.stderr)
	}
}

func wantClean(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 || !strings.Contains(r.stdout, "OK") || strings.Contains(r.stdout, "DISAGREEMENT") {
		t.Fatalf("verify of an untouched archive: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// segmentOf returns the segment holding offset o.
func segmentOf(t *testing.T, segs []tiering.RemoteSegment, o int64) tiering.RemoteSegment {
	t.Helper()
	for _, s := range segs {
		if s.BaseOffset <= o && o < s.NextOffset {
			return s
		}
	}
	t.Fatalf("no segment holds offset %d", o)
	return tiering.RemoteSegment{}
}
