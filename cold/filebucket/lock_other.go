//go:build !unix

package filebucket

import (
	"io/fs"
	"sync"
)

// Without flock, uploads are serialised within this process only: two
// processes sharing a filesystem bucket on such a platform are not
// excluded from each other.
var processLock sync.Mutex

func lockFile(string) (unlock func(), err error) {
	processLock.Lock()
	return processLock.Unlock, nil
}

func inode(fs.FileInfo) uint64 { return 0 }
