//go:build !linux && !darwin

package tiering

// DefaultLocalDiskMax is unknown where the file system's size cannot be
// asked: no ceiling unless one is set.
func DefaultLocalDiskMax(dir string) (int64, error) { return -1, nil }
