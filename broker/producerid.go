package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// producerIDFile holds the end of the producer id block reserved last: no
// id at or above it has been handed out.
const producerIDFile = "producer-id-block"

// producerIDBlock is how many ids one fsynced write reserves, so an
// InitProducerId costs a file write once per thousand producers.
const producerIDBlock = 1000

// producerIDs hands out idempotent producers' ids, unique for the life of
// the data directory: an id is handed out only below a reserved end that
// is fsynced first, and a restart continues from that end (the unused
// rest of the block is skipped), so a crash never hands one out twice.
type producerIDs struct {
	path string
	// mu is held across the reservation's write and fsync: only
	// InitProducerId takes it, never an append or a fetch.
	mu       sync.Mutex
	next     int64
	reserved int64
}

func loadProducerIDs(dir string) (*producerIDs, error) {
	p := &producerIDs{path: filepath.Join(dir, producerIDFile)}
	data, err := os.ReadFile(p.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("broker: read %s: %w", producerIDFile, err)
	default:
		n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("broker: %s holds %q, not a producer id: restore it or set it above every producer id in use", p.path, strings.TrimSpace(string(data)))
		}
		p.next, p.reserved = n, n
	}
	return p, nil
}

func (p *producerIDs) allocate() (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next >= p.reserved {
		end := p.next + producerIDBlock
		if err := fileutil.WriteFileAtomic(p.path, []byte(strconv.FormatInt(end, 10)+"\n"), 0o644); err != nil {
			return 0, fmt.Errorf("broker: reserve producer ids: %w", err)
		}
		p.reserved = end
	}
	id := p.next
	p.next++
	return id, nil
}

// AllocateProducerID returns a producer id no producer of this data
// directory has had (Kafka's InitProducerId without a transactional id).
func (b *Broker) AllocateProducerID() (int64, error) {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return 0, ErrClosed
	}
	return b.pids.allocate()
}
