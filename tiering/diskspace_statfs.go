//go:build linux || darwin

package tiering

import (
	"fmt"
	"syscall"
)

// DefaultLocalDiskMax is the local-disk ceiling used when none is set: 90%
// of the size of the file system holding dir, so producers are refused
// (retriably) before the disk is full and the log fails on ENOSPC, with
// room left for index files, checkpoints and objects being built.
func DefaultLocalDiskMax(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("tiering: size of the file system holding %s: %w", dir, err)
	}
	return int64(st.Blocks) * int64(st.Bsize) / 10 * 9, nil //nolint:unconvert // field types differ by OS
}
