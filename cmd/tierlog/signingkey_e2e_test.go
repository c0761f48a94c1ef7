package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/internal/testutil"
)

// `tierlog serve` creates its signing key on first start (mode 0600, at
// --signing-key or in the data directory), publishes its public key in the
// bucket, and keeps the same key across restarts.
func TestServeSigningKey(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	keyPath := filepath.Join(dir, "keys", "node.key")
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		t.Fatal(err)
	}
	vkeyPath := filepath.Join(dataDir, "bucket", "_tierlog", "keys", "tierlog-node-0.vkey")
	var public string
	for i := range 2 {
		n := startNode(t, dataDir, nil, "--signing-key", keyPath)
		fi, err := os.Stat(keyPath)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("start %d: key file: %v %v", i, err, fi)
		}
		k, err := audit.LoadOrCreateKey(keyPath, audit.KeyName(0))
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && k.Public != public {
			t.Fatal("the restart made a new key")
		}
		public = k.Public
		testutil.Eventually(t, 10*time.Second, func() bool {
			b, err := os.ReadFile(vkeyPath)
			return err == nil && strings.TrimSpace(string(b)) == public
		}, "public key %s in the bucket", public)
		n.signal(syscall.SIGTERM)
	}
	// The default: <data dir>/signing.key.
	other := filepath.Join(dir, "data2")
	n := startNode(t, other, nil)
	defer n.signal(syscall.SIGTERM)
	if _, err := audit.LoadOrCreateKey(filepath.Join(other, "signing.key"), audit.KeyName(0)); err != nil {
		t.Fatal(err)
	}
}
