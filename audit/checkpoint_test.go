package audit_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/audit"
)

func TestCheckpointRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "signing.key")
	k, err := audit.LoadOrCreateKey(path, audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode())
	}
	if k.Name() != "tierlog-node-0" || !strings.HasPrefix(k.Public, "tierlog-node-0+") {
		t.Fatalf("key %s / %s", k.Name(), k.Public)
	}
	again, err := audit.LoadOrCreateKey(path, audit.KeyName(0))
	if err != nil || again.Public != k.Public {
		t.Fatalf("reloaded key differs: %v", err)
	}

	origin := audit.Origin("c-123", "audit", 3)
	if origin != "tierlog/c-123/audit/3" {
		t.Fatalf("origin %s", origin)
	}
	root := bytes.Repeat([]byte{7}, 32)
	signed, err := audit.Sign(k, origin, 4096, root)
	if err != nil {
		t.Fatal(err)
	}
	body := "tierlog/c-123/audit/3\n4096\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n"
	if !strings.HasPrefix(string(signed), body+"— tierlog-node-0 ") {
		t.Fatalf("signed note:\n%s", signed)
	}
	v, err := audit.NewVerifier(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	c, err := audit.Open(signed, origin, v)
	if err != nil {
		t.Fatal(err)
	}
	if c.Origin != origin || c.Size != 4096 || !bytes.Equal(c.Hash, root) {
		t.Fatalf("opened %+v", c)
	}
	if _, err := audit.Open(signed, "", v); err != nil {
		t.Fatalf("any origin: %v", err)
	}
	if _, err := audit.Open(signed, audit.Origin("c-123", "audit", 4), v); err == nil {
		t.Fatal("opened as another partition's checkpoint")
	}
	cl, topic, part, err := audit.ParseOrigin(c.Origin)
	if err != nil || cl != "c-123" || topic != "audit" || part != 3 {
		t.Fatalf("ParseOrigin: %s %s %d %v", cl, topic, part, err)
	}

	// Another key of the same name does not verify it.
	other, err := audit.LoadOrCreateKey(filepath.Join(dir, "other.key"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	ov, _ := audit.NewVerifier(other.Public)
	if _, err := audit.Open(signed, origin, ov); err == nil {
		t.Fatal("opened with another key")
	}
	// An altered body does not verify.
	altered := bytes.Replace(signed, []byte("\n4096\n"), []byte("\n4097\n"), 1)
	if _, err := audit.Open(altered, origin, v); err == nil {
		t.Fatal("opened an altered checkpoint")
	}
	// A checkpoint signed by another key only.
	forged, _ := audit.Sign(other, origin, 4096, root)
	if _, err := audit.Open(forged, origin, v); err == nil {
		t.Fatal("opened a checkpoint signed by another key")
	}
}

func TestCheckpointObjects(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	k, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), audit.KeyName(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.PutPublicKey(ctx, b, k); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Exists(ctx, "_tierlog/keys/tierlog-node-2.vkey"); !ok {
		t.Fatal("public key object missing")
	}
	v, err := audit.GetPublicKey(ctx, b, k.Name())
	if err != nil {
		t.Fatal(err)
	}
	origin := audit.Origin("c", "t", 0)
	for _, size := range []uint64{10, 300, 7} {
		signed, _ := audit.Sign(k, origin, size, make([]byte, 32))
		if err := audit.PutCheckpoint(ctx, b, prefix, size, signed); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := b.Exists(ctx, prefix+"tlog/checkpoints/00000000000000000300"); !ok {
		t.Fatal("numbered checkpoint missing")
	}
	latest, err := audit.GetCheckpoint(ctx, b, prefix, -1)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := audit.Open(latest, origin, v); err != nil || c.Size != 7 {
		t.Fatalf("latest: %v", err)
	}
	at, err := audit.GetCheckpoint(ctx, b, prefix, 300)
	if c, err2 := audit.Open(at, origin, v); err != nil || err2 != nil || c.Size != 300 {
		t.Fatalf("at 300: %v %v", err, err2)
	}
	sizes, err := audit.ListCheckpoints(ctx, b, prefix)
	if err != nil || !slices.Equal(sizes, []uint64{7, 10, 300}) {
		t.Fatalf("list: %v %v", sizes, err)
	}
}

// A key file keeps its own name whatever name a new key would get: a
// single node's key (node 0) goes on signing when the node joins a
// cluster as node 1.
func TestLoadOrCreateKeyKeepsItsName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	k0, err := audit.LoadOrCreateKey(path, audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	k1, err := audit.LoadOrCreateKey(path, audit.KeyName(1))
	if err != nil {
		t.Fatalf("the node's existing key refused under another id: %v", err)
	}
	if k1.Name() != audit.KeyName(0) || k1.Public != k0.Public {
		t.Fatalf("reloaded key %s (%s), want the first one %s", k1.Name(), k1.Public, k0.Public)
	}
}

// TestPutCheckpointNeverForks: writing a checkpoint of a size the bucket
// keeps succeeds if the root is the same (a retry) and fails with
// ErrForkedCheckpoint, writing nothing, if it is another.
func TestPutCheckpointNeverForks(t *testing.T) {
	ctx := context.Background()
	b := newFileBucket(t)
	k, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), audit.KeyName(0))
	if err != nil {
		t.Fatal(err)
	}
	origin := audit.Origin("c", "t", 0)
	root, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	first, _ := audit.Sign(k, origin, 10, root)
	for range 2 { // the second is a retry
		if err := audit.PutCheckpoint(ctx, b, prefix, 10, first); err != nil {
			t.Fatal(err)
		}
	}
	forked, _ := audit.Sign(k, origin, 10, other)
	if err := audit.PutCheckpoint(ctx, b, prefix, 10, forked); !errors.Is(err, audit.ErrForkedCheckpoint) {
		t.Fatalf("a checkpoint of a kept size with another root: %v, want ErrForkedCheckpoint", err)
	}
	for _, size := range []int64{10, -1} {
		if got, err := audit.GetCheckpoint(ctx, b, prefix, size); err != nil || !bytes.Equal(got, first) {
			t.Errorf("checkpoint %d after the refused fork: %q %v, want the first", size, got, err)
		}
	}
	wrong, _ := audit.Sign(k, origin, 11, root)
	if err := audit.PutCheckpoint(ctx, b, prefix, 12, wrong); err == nil {
		t.Error("a checkpoint of size 11 written as size 12")
	}
}
