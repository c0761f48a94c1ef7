package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/internal/testutil"
)

// auditEvent is the i-th event a new user's application sends, as the
// key:value line `kcat -K:` takes (README "Try it with a Kafka client").
func auditEvent(i int) (key, value string) {
	key = fmt.Sprintf("user-%d", i%97)
	value = fmt.Sprintf(`{"seq":%d,"actor":"%s","action":"%s","object":"doc/%x","reason":"quarterly review"}`,
		i, key, []string{"read", "write", "delete", "share"}[i%4], i*2654435761)
	return key, value
}

const (
	auditRecords = 3000
	auditZstd    = 2000 // events from here on are sent zstd-compressed
	auditTarget  = 2222 // the record proved, and altered; in a zstd batch
)

// TestAuditNewUser is issue 10's "Done when", tried as a new user would,
// with the real binary, MinIO and kcat and the README's own commands:
// serve with a MinIO bucket, produce audit events, let them tier, prove a
// record and check the proof on a "machine" with nothing but the file and
// the public key (and with the independent Python verifier); then, as the
// bucket's administrator, alter one byte of that record with every
// checksum fixed up: on a plain bucket `tierlog verify` names the offset
// and the object; on an Object Lock bucket the S3 API refuses to alter or
// delete the version tierlog recorded, and verify stays clean - except
// MinIO's replication API, which rewrites it in place, and verify names
// the object.
func TestAuditNewUser(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	dir := t.TempDir()
	lockedURL := m.MinIOURL(m.NewLockedBucket(t), "tierlog")
	plainURL := m.MinIOURL(m.Bucket, "tierlog")

	// 1-2. One node per bucket (each with the default signing key in its
	// data directory); on the Object Lock bucket the topic is WORM as
	// README "WORM retention" creates it (1 day here).
	locked := startNode(t, filepath.Join(dir, "locked"), m.Env(), "--bucket", lockedURL)
	plain := startNode(t, filepath.Join(dir, "plain"), m.Env(), "--bucket", plainURL)
	createTiered(t, locked, "audit", lockConfig...)
	createTiered(t, plain, "audit")
	var plainLines, zstdLines strings.Builder
	for i := range auditRecords {
		k, v := auditEvent(i)
		w := &plainLines
		if i >= auditZstd {
			w = &zstdLines
		}
		fmt.Fprintf(w, "%s:%s\n", k, v)
	}
	// README "Try it with a Kafka client", with a header; batches of 100
	// events, so that the events span several segments.
	for _, n := range []*node{locked, plain} {
		produce := []string{"-b", n.kafkaAddr, "-t", "audit", "-P", "-K:", "-H", "source=hr-app", "-X", "batch.num.messages=100"}
		kcat(t, plainLines.String(), produce...)
		kcat(t, zstdLines.String(), append(produce, "-z", "zstd")...)
	}
	for _, n := range []*node{locked, plain} {
		waitTiered(t, n, "audit", []int64{auditRecords})
	}

	// 3. README "Auditing": the public key and a proof from the node...
	lockedKey := filepath.Join(dir, "node.vkey")
	writeFile(t, lockedKey, ok(t, locked, "", "checkpoint", "--public-key"))
	plainKey := filepath.Join(dir, "plain.vkey")
	writeFile(t, plainKey, ok(t, plain, "", "checkpoint", "--public-key"))
	proof := filepath.Join(dir, "proof.json")
	ok(t, locked, "", "prove", "audit", "0", fmt.Sprint(auditTarget), "-o", proof)
	var f audit.InclusionFile
	if err := json.Unmarshal([]byte(readFile(t, proof)), &f); err != nil {
		t.Fatal(err)
	}
	wantKey, wantValue := auditEvent(auditTarget)
	if f.Offset != auditTarget || string(f.Record.Key) != wantKey || string(f.Record.Value) != wantValue ||
		len(f.Record.Headers) != 1 || f.Record.Headers[0].Key != "source" || string(f.Record.Headers[0].Value) != "hr-app" {
		t.Fatalf("the proof holds offset %d key %q value %q headers %+v; want the event kcat sent", f.Offset, f.Record.Key, f.Record.Value, f.Record.Headers)
	}
	for _, n := range []*node{locked, plain} {
		if code := n.signal(syscall.SIGTERM); code != 0 {
			t.Fatalf("SIGTERM: exit %d", code)
		}
	}
	// ...handed to an auditor: a directory holding only the two files, no
	// server running, no bucket URL or credentials, no HOME.
	auditor := t.TempDir()
	writeFile(t, filepath.Join(auditor, "proof.json"), readFile(t, proof))
	writeFile(t, filepath.Join(auditor, "node.vkey"), readFile(t, lockedKey))
	r := auditorCLI(t, auditor, "verify-proof", "proof.json", "--public-key", "node.vkey")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("valid: offset %d of audit/0", auditTarget)) {
		t.Fatalf("verify-proof on the auditor's machine: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// The other node's key did not sign it: the same check can fail.
	writeFile(t, filepath.Join(auditor, "other.vkey"), readFile(t, plainKey))
	if r := auditorCLI(t, auditor, "verify-proof", "proof.json", "--public-key", "other.vkey"); r.code != 1 || !strings.Contains(r.stderr, "invalid proof") {
		t.Fatalf("verify-proof with another node's key: exit %d, stderr %q; want 1", r.code, r.stderr)
	}
	if code, out := pyVerify(t, filepath.Join(auditor, "proof.json"), strings.TrimSpace(readFile(t, lockedKey))); code != 0 {
		t.Fatalf("verify_proof.py on the auditor's copy: exit %d: %s", code, out)
	}

	// 4. The plain bucket: verified clean untouched; then one byte of the
	// record changed by its administrator, every CRC, chunk checksum and
	// the manifest's SHA-256 fixed up. The storage layer serves it; verify
	// names the offset and the object.
	verify := func(url, key string) result {
		return runCLI(t, m.Env(), "", "verify", "--bucket", url, "--public-key", key)
	}
	wantClean(t, verify(plainURL, plainKey))
	tp := (&auditArchive{url: plainURL, env: m.Env()}).tamper(t)
	s := segmentOf(t, tp.segments(), auditTarget)
	tp.rewriteSegment(s, flipValueBits(auditTarget, 2, 0x01))
	altered := []byte(wantValue)
	altered[2] ^= 0x01
	if got := recordAt(t, m.Env(), plainURL, auditTarget); got != string(altered) {
		t.Fatalf("bucket consume of the altered record: %q, want %q (served: every checksum fixed)", got, altered)
	}
	wantFinding(t, verify(plainURL, plainKey), auditTarget, s.Key, "is not the one signed")

	// 5. The Object Lock bucket: the same alteration, by its administrator
	// with a raw S3 client and MinIO's root credentials.
	wantClean(t, verify(lockedURL, lockedKey))
	lp := (&auditArchive{url: lockedURL, env: m.Env()}).tamper(t)
	s = segmentOf(t, lp.segments(), auditTarget)
	if s.VersionID == "" || s.RetainUntil.IsZero() {
		t.Fatalf("the manifest records segment %s with version %q, retained until %v; want both", s.Key, s.VersionID, s.RetainUntil)
	}
	obj, footer := lp.alteredSegment(s, flipValueBits(auditTarget, 2, 0x01))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, bucket, name := m.Client(), strings.Split(strings.TrimPrefix(lockedURL, "minio://"), "/")[1], "tierlog/"+s.Key
	put := func(opts minio.PutObjectOptions) (minio.UploadInfo, error) {
		return cl.PutObject(ctx, bucket, name, bytes.NewReader(obj), int64(len(obj)), opts)
	}
	recorded := func() string { // the SHA-256 of the version the manifest records
		rc, err := cl.GetObject(ctx, bucket, name, minio.GetObjectOptions{VersionID: s.VersionID})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	// The S3 API's ways to change or remove that version are refused
	// ("Object is WORM protected and cannot be overwritten"), root and a
	// governance bypass included: the mode is compliance.
	mode, sooner := minio.Governance, time.Now().Add(time.Minute)
	for _, c := range []struct {
		what string
		err  error
	}{
		{"delete the recorded version", cl.RemoveObject(ctx, bucket, name, minio.RemoveObjectOptions{VersionID: s.VersionID})},
		{"delete it, bypassing governance", cl.RemoveObject(ctx, bucket, name, minio.RemoveObjectOptions{VersionID: s.VersionID, GovernanceBypass: true})},
		{"shorten its retention", cl.PutObjectRetention(ctx, bucket, name,
			minio.PutObjectRetentionOptions{VersionID: s.VersionID, Mode: &mode, RetainUntilDate: &sooner, GovernanceBypass: true})},
		{"overwrite it (PUT ?versionId=)", func() error {
			_, err := put(minio.PutObjectOptions{Internal: minio.AdvancedPutOptions{SourceVersionID: s.VersionID}})
			return err
		}()},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), "WORM protected") {
			t.Errorf("%s on the Object Lock bucket: %v; want it refused as WORM protected", c.what, c.err)
		}
	}
	if got := recorded(); got != s.SHA256 {
		t.Fatalf("the recorded version's SHA-256 is %s after the refused attempts, the manifest's %s", got, s.SHA256)
	}
	// What the S3 API does allow: a plain PUT of the key adds a new
	// version, and a plain DELETE adds a delete marker above it. Neither
	// touches the recorded version, which tierlog reads by its id: the
	// replay serves the record as produced, verify stays clean.
	newer, err := put(minio.PutObjectOptions{})
	if err != nil || newer.VersionID == "" || newer.VersionID == s.VersionID {
		t.Fatalf("plain overwrite on the Object Lock bucket: version %q, %v; want a new version", newer.VersionID, err)
	}
	if got := recordAt(t, m.Env(), lockedURL, auditTarget); got != wantValue {
		t.Fatalf("bucket consume after a new version of %s: %q, want the recorded version's %q", s.Key, got, wantValue)
	}
	wantClean(t, verify(lockedURL, lockedKey))
	if err := cl.RemoveObject(ctx, bucket, name, minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("plain delete (a delete marker): %v", err)
	}
	if got := recordAt(t, m.Env(), lockedURL, auditTarget); got != wantValue {
		t.Fatalf("bucket consume under a delete marker: %q, want %q", got, wantValue)
	}
	wantClean(t, verify(lockedURL, lockedKey))

	// MinIO's replication API is the exception (the pinned server, as
	// found here): a PUT marked as a replica may name the version id, and
	// MinIO skips the Object Lock check for replicas, so a root user
	// (anyone allowed s3:ReplicateObject) rewrites the recorded version in
	// place, compliance mode or not. Reads then refuse the object (it is
	// not the size and digest the manifest records); with the unlocked
	// manifest fixed up as well, the replay serves the altered record, and
	// only the Merkle tree tells: verify names the offset and object.
	if _, err := put(minio.PutObjectOptions{Internal: minio.AdvancedPutOptions{
		SourceVersionID: s.VersionID, ReplicationStatus: minio.ReplicationStatusReplica, ReplicationRequest: true}}); err != nil {
		t.Fatalf("MinIO refused a replica PUT of the recorded version (%v): Object Lock now holds against it; update this test and README \"WORM retention\"", err)
	}
	if got := recorded(); got != hex.EncodeToString(footer.SHA256[:]) {
		t.Fatalf("after a replica PUT the recorded version's SHA-256 is %s, want the altered object's %x", got, footer.SHA256)
	}
	if r := runCLI(t, m.Env(), "", "bucket", "consume", "--bucket", lockedURL, "audit", "--from", fmt.Sprint(auditTarget), "--max", "1"); r.code != 1 || !strings.Contains(r.stderr, "corrupt remote segment "+s.Key) {
		t.Fatalf("bucket consume of the version rewritten in place: exit %d, stderr %q; want it refused as corrupt", r.code, r.stderr)
	}
	wantFinding(t, verify(lockedURL, lockedKey), s.BaseOffset, s.Key, "is not the one uploaded")
	lp.recordSegment(s, footer)
	if got := recordAt(t, m.Env(), lockedURL, auditTarget); got != string(altered) {
		t.Fatalf("bucket consume with the manifest fixed up: %q, want the altered %q", got, altered)
	}
	wantFinding(t, verify(lockedURL, lockedKey), auditTarget, s.Key, "is not the one signed")
}

// recordAt is the value of the record at offset, replayed from the bucket
// with no server (README "Replay a bucket with no server").
func recordAt(t *testing.T, env []string, url string, offset int64) string {
	t.Helper()
	out := bucketOK(t, env, "bucket", "consume", "--bucket", url, "audit", "--from", fmt.Sprint(offset), "--max", "1")
	return strings.TrimSuffix(out, "\n")
}

// auditorCLI runs the binary in dir with an environment that names no
// server, bucket or credentials and has an empty HOME.
func auditorCLI(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Dir, cmd.Env = dir, []string{"HOME="}
	return runCmd(t, cmd, "")
}
