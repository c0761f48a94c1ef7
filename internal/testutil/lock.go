package testutil

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Exclusive holds a cross-process lock named name (an flock on a file in
// os.TempDir()) until the test ends, waiting for any other holder. Tests
// that need a fixed resource of the machine - the default Kafka port 9092 a
// new user's client connects to - take it, so no two test binaries (go test
// runs packages in parallel) use it at once.
func Exclusive(t testing.TB, name string) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "tierlog-test-"+name+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("lock %s: %v", path, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() }) // closing the descriptor releases the flock
}
