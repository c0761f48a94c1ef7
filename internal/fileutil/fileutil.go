// Package fileutil holds the few file-system moves that durability depends
// on: writing a small file atomically and making directory entries durable.
package fileutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// SyncDir fsyncs a directory so that file creations, renames and removals
// inside it survive a machine crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// WriteFileAtomic replaces path with data so that after a crash the file
// holds either the old or the new contents, never a mix: write a temporary
// file in the same directory, fsync it, rename it over path, fsync the
// directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return SyncDir(dir)
}

// MkdirAllDurable creates dir (and parents) and fsyncs the parent so the new
// entry is durable.
func MkdirAllDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(dir))
}
