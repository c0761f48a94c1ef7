package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tierlog/tierlog/internal/fileutil"
)

// producerIDFile holds the end of the producer id block reserved last: no
// id at or above it has been handed out.
const producerIDFile = "producer-id-block"

// producerIDBlock is how many ids one fsynced write reserves, so an
// InitProducerId costs a file write once per thousand producers.
const producerIDBlock = 1000

// producerIDsPerMilli scales the clock into the id space for a data
// directory without a producer-id-block (new, or restored from the bucket
// after its disk was lost): ids start at Unix ms × 1000, which stays far
// inside int64 (about 1.8e15 today, 9.2e18 is the limit).
const producerIDsPerMilli = 1000

// producerIDs hands out idempotent producers' ids. The promise: an id is
// handed out at most once, across restarts and across the loss of the
// data directory, as long as no earlier life of the node handed out more
// than 1000 ids per millisecond on average since it started.
//
//   - Within one data directory an id is handed out only below a reserved
//     end that is fsynced first, and a restart continues from that end
//     (the unused rest of the block is skipped), so a crash never hands
//     one out twice.
//   - A data directory without the file (its disk was lost and its topics
//     restored from the bucket, while producers of the old node may still
//     be producing with their ids) starts from the clock, Unix ms × 1000:
//     above every id a life started earlier handed out, under the rate
//     above.
//   - At open the start is also raised above the largest producer id any
//     partition's producer state holds (raiseAbove), in case the clock
//     was set back.
type producerIDs struct {
	path string
	// mu is held across the reservation's write and fsync: only
	// InitProducerId takes it, never an append or a fetch.
	mu       sync.Mutex
	next     int64
	reserved int64
}

func loadProducerIDs(dir string, now time.Time) (*producerIDs, error) {
	p := &producerIDs{path: filepath.Join(dir, producerIDFile)}
	data, err := os.ReadFile(p.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// Nothing reserved yet: the first allocate reserves (and fsyncs)
		// a block from here.
		p.next = max(now.UnixMilli(), 0) * producerIDsPerMilli
		p.reserved = p.next
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

// raiseAbove makes every id handed out from now on exceed id (the largest
// a partition knows). Called at open, before any allocate.
func (p *producerIDs) raiseAbove(id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id >= p.next {
		p.next = id + 1
		p.reserved = min(p.reserved, p.next) // the next allocate reserves from here
	}
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

// AllocateProducerID returns a producer id no other producer has had (see
// producerIDs for the promise; Kafka's InitProducerId without a
// transactional id).
func (b *Broker) AllocateProducerID() (int64, error) {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return 0, ErrClosed
	}
	n, err := b.pids.allocate()
	if err != nil || b.opts.Cluster == nil {
		return n, err
	}
	// In a cluster every node hands out ids: node i's are i modulo
	// clusterIDStride, so two nodes never hand out the same one.
	return n*clusterIDStride + int64(b.opts.Cluster.NodeID), nil
}

// clusterIDStride interleaves the nodes' producer ids (node ids are below
// it: see MaxNodeID). With ids starting at Unix ms × 1000 it stays within
// int64 until about the year 2250.
const clusterIDStride = 1024

// MaxNodeID is the largest node id a cluster takes.
const MaxNodeID = clusterIDStride - 1

// producerCounterAbove is the allocation counter value above every
// producer id a partition holds (the inverse of AllocateProducerID's
// mapping).
func (b *Broker) producerCounterAbove(id int64) int64 {
	if b.opts.Cluster == nil {
		return id
	}
	return id / clusterIDStride
}
