package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/internal/testutil"
)

// TestProveVerifyProof is the auditor's tour against a real node, with a
// MinIO bucket and a file bucket: prove records (the first, one in a
// middle segment, a keyed record with a header in a compressed batch, the
// last tiered), check each proof with verify-proof and with the
// independent Python verifier (testdata/verify_proof.py), get the same
// file from the bucket with no server, and see every alteration of a
// proof, a proof of an offset not in the log and a wrong key refused by
// both; then prove that the history extends a checkpoint kept from
// before, and refuse a forked one.
func TestProveVerifyProof(t *testing.T) {
	t.Parallel()
	m := testutil.StartMinIO(t)
	fileBucket := filepath.Join(t.TempDir(), "bucket")
	if err := os.MkdirAll(fileBucket, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, url string }{
		{"minio", m.MinIOURL(m.Bucket, "tierlog")},
		{"file", "file://" + fileBucket},
	} {
		t.Run(tc.name, func(t *testing.T) { proveTour(t, m.Env(), tc.url) })
	}
}

func proveTour(t *testing.T, env []string, bucketURL string) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "node.key")
	n := startNode(t, filepath.Join(dir, "data"), env, "--bucket", bucketURL, "--signing-key", keyPath)
	createTiered(t, n, "audit")
	lines := tierLines(3000)
	ok(t, n, joinLines(lines[:1500]), "produce", "audit", "--batch", "100", "--quiet")
	waitTiered(t, n, "audit", []int64{1500})
	// The checkpoint an auditor keeps at 1500 records.
	kept := filepath.Join(dir, "checkpoint-1500")
	writeFile(t, kept, ok(t, n, "", "checkpoint", "audit", "0"))
	var keyed []string
	for i := 1500; i < 3000; i++ {
		keyed = append(keyed, fmt.Sprintf("k%d|%s", i, lines[i]))
	}
	ok(t, n, joinLines(keyed), "produce", "audit", "--batch", "100", "--quiet", "--key-separator", "|",
		"--header", "source=e2e", "--compression", "zstd")
	waitTiered(t, n, "audit", []int64{3000})

	vkey := strings.TrimSpace(ok(t, n, "", "checkpoint", "--public-key"))
	if local := strings.TrimSpace(ok(t, nil, "", "checkpoint", "--public-key", "--signing-key", keyPath)); local != vkey {
		t.Fatalf("public key from the key file %q, from the server %q", local, vkey)
	}
	other, err := audit.LoadOrCreateKey(filepath.Join(dir, "other.key"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	writeFile(t, keys, other.Public+"\n"+vkey+"\n")

	verify := func(file, key string) result { return cli(t, nil, "", "verify-proof", file, "--public-key", key) }
	for _, off := range []int{0, 1234, 1600, 2999} {
		file := filepath.Join(dir, fmt.Sprintf("proof-%d.json", off))
		ok(t, n, "", "prove", "audit", "0", fmt.Sprint(off), "-o", file)
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var f audit.InclusionFile
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		wantKey, wantValue := []byte(nil), lines[off]
		if off >= 1500 {
			wantKey = []byte(fmt.Sprintf("k%d", off))
		}
		if f.Offset != int64(off) || f.TreeSize != 3000 || string(f.Record.Value) != wantValue || !bytes.Equal(f.Record.Key, wantKey) {
			t.Fatalf("proof of offset %d: offset %d, tree size %d, key %q, value %q; want the record as produced, against the tree of 3000",
				off, f.Offset, f.TreeSize, f.Record.Key, f.Record.Value)
		}
		if off >= 1500 && (len(f.Record.Headers) != 1 || f.Record.Headers[0].Key != "source" || string(f.Record.Headers[0].Value) != "e2e") {
			t.Fatalf("proof of offset %d: headers %+v", off, f.Record.Headers)
		}
		for _, key := range []string{vkey, keys} {
			if r := verify(file, key); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("valid: offset %d of audit/0", off)) {
				t.Fatalf("verify-proof %s --public-key %s: exit %d\n%s%s", file, key, r.code, r.stdout, r.stderr)
			}
		}
		if code, out := pyVerify(t, file, vkey); code != 0 {
			t.Fatalf("verify_proof.py on the proof of offset %d: exit %d: %s", off, code, out)
		}
		// The same file from the bucket, with no server.
		if got := bucketOK(t, env, "prove", "--bucket", bucketURL, "audit", "0", fmt.Sprint(off)); got != string(raw) {
			t.Fatalf("proof of offset %d from --bucket differs from the server's:\n%s\nserver:\n%s", off, got, raw)
		}
	}

	// Altered copies of the proof of 1600, and a wrong key: both
	// verifiers refuse each.
	good := filepath.Join(dir, "proof-1600.json")
	var zeroRoot = base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, c := range []struct {
		name  string
		alter func(f *audit.InclusionFile)
		key   string
		want  string
	}{
		{"a value byte", func(f *audit.InclusionFile) { f.Record.Value[7] ^= 1 }, vkey, "not the canonical encoding"},
		{"a value byte, leaf re-encoded", func(f *audit.InclusionFile) {
			f.Record.Value[7] ^= 1
			f.Leaf = audit.EncodeLeaf(nil, f.Record)
		}, vkey, "not in the tree"},
		{"the record moved to another offset", func(f *audit.InclusionFile) {
			f.Offset, f.Record.Offset = 1601, 1601
			f.Leaf = audit.EncodeLeaf(nil, f.Record)
		}, vkey, "not in the tree"},
		{"an offset not in the log", func(f *audit.InclusionFile) {
			f.Offset, f.Record.Offset = 3000, 3000
			f.Leaf = audit.EncodeLeaf(nil, f.Record)
		}, vkey, "not a leaf of a tree of size 3000"},
		{"an offset not in the log, tree size raised", func(f *audit.InclusionFile) {
			f.Offset, f.Record.Offset, f.TreeSize = 3000, 3000, 3001
			f.Leaf = audit.EncodeLeaf(nil, f.Record)
		}, vkey, "tree size 3000, the proof of size 3001"},
		{"a proof hash", func(f *audit.InclusionFile) { f.InclusionProof[2][9] ^= 1 }, vkey, "not in the tree"},
		{"the checkpoint root", func(f *audit.InclusionFile) {
			body := strings.SplitN(f.Checkpoint, "\n", 4)
			f.Checkpoint = body[0] + "\n" + body[1] + "\n" + zeroRoot + "\n" + body[3]
		}, vkey, "signature"},
		{"another key", func(*audit.InclusionFile) {}, other.Public, "none of them a key given"},
	} {
		file := alterProof(t, good, c.alter)
		r := verify(file, c.key)
		if r.code != 1 || !strings.Contains(r.stderr, "invalid proof") || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: verify-proof exit %d, stderr %q; want exit 1 saying %q", c.name, r.code, r.stderr, c.want)
		}
		code, out := pyVerify(t, file, c.key)
		if code != 1 {
			t.Errorf("%s: verify_proof.py exit %d (%s), want 1", c.name, code, out)
		}
		t.Logf("%s: verify-proof: %s  verify_proof.py: %s", c.name, strings.TrimSpace(r.stderr), strings.TrimSpace(out))
	}

	// Offsets the log does not hold cannot be proved.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"prove", "audit", "0", "3000"}, "outside the log, which holds offsets 0 to 2999"},
		{[]string{"prove", "--bucket", bucketURL, "audit", "0", "3000"}, "offset 3000 of audit/0 is not in the tree yet: the tree ends at 3000"},
		{[]string{"prove", "audit", "1", "0"}, "partition"},
		{[]string{"prove", "--bucket", bucketURL, "audit", "1", "0"}, "topic audit has 1 partitions (0 to 0) in "},
	} {
		r := runCLI(t, append(env, "TIERLOG_SERVER="+n.grpcAddr), "", c.args...)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, c.want) {
			t.Errorf("tierlog %v: exit %d, stderr %q; want exit 1 saying %q", c.args, r.code, r.stderr, c.want)
		}
	}

	// Consistency: the log at 3000 extends the checkpoint kept at 1500,
	// from the server and from the bucket alike.
	cons := filepath.Join(dir, "consistency.json")
	ok(t, n, "", "prove-consistency", "audit", "0", "--from-checkpoint", kept, "-o", cons)
	raw, err := os.ReadFile(cons)
	if err != nil {
		t.Fatal(err)
	}
	if got := bucketOK(t, env, "prove-consistency", "--bucket", bucketURL, "audit", "0", "--from-checkpoint", kept); got != string(raw) {
		t.Fatalf("consistency proof from --bucket differs from the server's:\n%s\nserver:\n%s", got, raw)
	}
	if r := verify(cons, vkey); r.code != 0 || !strings.Contains(r.stdout, "at 3000 records extends its log at 1500 records") {
		t.Fatalf("verify-proof %s: exit %d\n%s%s", cons, r.code, r.stdout, r.stderr)
	}
	if r := verify(cons, other.Public); r.code != 1 || !strings.Contains(r.stderr, "old checkpoint") {
		t.Errorf("consistency with another key: exit %d, %s", r.code, r.stderr)
	}
	bySize := ok(t, n, "", "prove-consistency", "audit", "0", "--from", "1500", "--to", "3000")
	if bySize != string(raw) {
		t.Errorf("--from 1500 --to 3000 differs from --from-checkpoint:\n%s", bySize)
	}
	if r := cli(t, n, "", "prove-consistency", "audit", "0", "--from", "1501"); r.code != 1 || !strings.Contains(r.stderr, "no checkpoint at tree size 1501") ||
		!strings.Contains(r.stderr, "nearest") {
		t.Errorf("--from 1501: exit %d, %s", r.code, r.stderr)
	}
	// A fork: a checkpoint of 1500 records with another root, signed with
	// the node's own key, is not extended by the log.
	signer, err := audit.LoadOrCreateKey(keyPath, audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	c, err := audit.PeekCheckpoint([]byte(readFile(t, kept)))
	if err != nil {
		t.Fatal(err)
	}
	forked, err := audit.Sign(signer, c.Origin, 1500, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	forkFile := filepath.Join(dir, "forked-1500")
	writeFile(t, forkFile, forked)
	if r := cli(t, n, "", "prove-consistency", "audit", "0", "--from-checkpoint", forkFile); r.code != 1 || !strings.Contains(r.stderr, "does not extend the checkpoint in") {
		t.Errorf("prove-consistency from a forked checkpoint: exit %d, %s", r.code, r.stderr)
	}
	var cf audit.ConsistencyFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		t.Fatal(err)
	}
	cf.OldCheckpoint = string(forked)
	forkProof := filepath.Join(dir, "consistency-fork.json")
	writeJSON(t, forkProof, &cf)
	if r := verify(forkProof, vkey); r.code != 1 || !strings.Contains(r.stderr, "does not extend the log at size 1500") {
		t.Errorf("verify-proof of a consistency proof from a forked checkpoint: exit %d, %s", r.code, r.stderr)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, raw)
}

// alterProof writes a copy of the proof file at path changed by alter.
func alterProof(t *testing.T, path string, alter func(f *audit.InclusionFile)) string {
	t.Helper()
	var f audit.InclusionFile
	if err := json.Unmarshal([]byte(readFile(t, path)), &f); err != nil {
		t.Fatal(err)
	}
	alter(&f)
	out := filepath.Join(t.TempDir(), "altered.json")
	writeJSON(t, out, &f)
	return out
}

// pyVerify runs the independent verifier on a proof file with a public
// key: its exit code and output.
func pyVerify(t *testing.T, file, vkey string) (int, string) {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", "testdata/verify_proof.py", file, vkey)
	out, err := cmd.CombinedOutput()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("run verify_proof.py: %v", err)
	}
	if bytes.Contains(out, []byte("No module named 'nacl'")) {
		t.Fatalf("verify_proof.py needs Debian's python3-nacl ('make test' installs it): %s", out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}
