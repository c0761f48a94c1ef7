package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFileName is the data directory's lock file, as Kafka's ".lock" in
// each log directory: a second process on the same directory would append
// to the same logs and leave duplicate offsets behind.
const lockFileName = ".lock"

// dirLock is an exclusive flock on the data directory's lock file, held
// for the broker's life. The kernel drops it when the process dies, so a
// crash never leaves a stale lock; the pid written in the file only names
// the holder in the error a second process gets.
type dirLock struct{ f *os.File }

// lockDir takes the data directory's lock or fails with ErrDirLocked,
// naming the directory and the process that holds it.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("broker: lock data directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is in use by %s (lock file %s); stop that process or use another data directory",
				ErrDirLocked, dir, lockHolder(path), path)
		}
		return nil, fmt.Errorf("broker: lock data directory %s: %w", dir, err)
	}
	// Holding the lock, record who does; a failure here costs only the
	// pid in another process's error message.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// lockHolder describes the process recorded in the lock file.
func lockHolder(path string) string {
	raw, err := os.ReadFile(path)
	pid := strings.TrimSpace(string(raw))
	if err != nil || pid == "" {
		return "another process"
	}
	return "process " + pid
}

// release drops the lock; a second call does nothing.
func (l *dirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Close() // closing the descriptor releases the flock
	l.f = nil
}
