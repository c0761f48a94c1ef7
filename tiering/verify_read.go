package tiering

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
)

// The segments a verifier recomputes the tree from are read on a
// goroutine of their own, ahead of the tree: it GETs each object once,
// checks and decompresses its chunks and starts hashing their records,
// while the verifier adds the leaves of earlier chunks to the tree,
// compares roots and waits for tile comparisons. Reading the next
// segment overlaps with the end of the current one. With two cores the
// GET and zstd of one chunk run beside the hashing of the others.
const (
	// hashAhead is how many chunks' leaves are hashed at once: each holds
	// its decompressed chunk (4 MiB by default) until hashed.
	hashAhead = 2
	// readAhead is how many hashed chunks a segment keeps ready for the
	// tree: the leaf hashes of a 4 MiB chunk of 500-byte records are
	// about 400 KiB.
	readAhead = 8
)

// minRecordBytes is about the least a record takes in a batch (its
// length, attributes, deltas, key and value lengths, header count).
const minRecordBytes = 8

// chunkLeaves are the leaf hashes of one chunk's records, computed by
// hashChunk on its own goroutine (done closes when they are).
type chunkLeaves struct {
	// attempt counts the GETs of the object before the one the chunk
	// was read by: a retried read starts from the object's first chunk.
	attempt int
	offsets []int64
	hashes  []byte // audit.HashSize per offset
	sizes   []int  // batch bytes, counted at a batch's first record
	err     error
	done    chan struct{}
}

func hashChunk(c cold.ChunkInfo, raw []byte, attempt int, finished func()) *chunkLeaves {
	// Room for a leaf per offset the chunk spans (compaction leaves fewer),
	// within what its bytes can hold: the footer is not trusted yet.
	n := int(max(min(c.NextOffset-c.FirstOffset, int64(len(raw))/minRecordBytes), 0))
	cl := &chunkLeaves{attempt: attempt, done: make(chan struct{}),
		offsets: make([]int64, 0, n), hashes: make([]byte, 0, n*audit.HashSize), sizes: make([]int, 0, n)}
	go func() {
		defer finished()
		defer close(cl.done)
		err := forEachLeaf(raw, func(o int64, h []byte, n int) error {
			cl.offsets = append(cl.offsets, o)
			cl.hashes = append(cl.hashes, h...)
			cl.sizes = append(cl.sizes, n)
			return nil
		})
		if err != nil {
			cl.err = &recordProblem{offset: c.FirstOffset, msg: fmt.Sprintf("the batches of chunk %d (offsets %d to %d) do not decode: %v", c.Index, c.FirstOffset, c.NextOffset-1, err)}
		}
	}()
	return cl
}

// apply waits for the hashes and calls fn with each leaf, in order.
func (cl *chunkLeaves) apply(fn func(offset int64, leafHash []byte, batchBytes int) error) error {
	<-cl.done
	for i, o := range cl.offsets {
		if err := fn(o, cl.hashes[i*audit.HashSize:(i+1)*audit.HashSize], cl.sizes[i]); err != nil {
			return err
		}
	}
	return cl.err
}

// segmentRead is one segment as the reader reads it: its chunks in
// order, then (once chunks is closed) the object's SHA-256 and the error
// that ended the read, if any.
type segmentRead struct {
	chunks chan *chunkLeaves
	// stop ends the read early: the verifier gave up on the segment.
	stop context.CancelFunc
	sum  [sha256.Size]byte
	err  error
}

// segmentReader reads a recomputation's segments in order (see above).
type segmentReader struct {
	reads   chan *segmentRead
	cancel  context.CancelFunc
	done    chan struct{}
	hashing sync.WaitGroup
}

// readSegments starts reading segs; next returns them in order, close
// stops the reader.
func (v *verifier) readSegments(segs []RemoteSegment) *segmentReader {
	ctx, cancel := context.WithCancel(v.ctx)
	r := &segmentReader{reads: make(chan *segmentRead, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer close(r.reads)
		tokens := make(chan struct{}, hashAhead)
		for _, s := range segs {
			sctx, stop := context.WithCancel(ctx)
			sr := &segmentRead{chunks: make(chan *chunkLeaves, readAhead), stop: stop}
			select {
			case r.reads <- sr:
			case <-ctx.Done():
				stop()
				return
			}
			sr.sum, sr.err = r.read(sctx, v.b, s, sr.chunks, tokens)
			stop()
			close(sr.chunks)
		}
	}()
	return r
}

// read reads segment s: its footer, then the whole object with one GET
// (its SHA-256 and its records come from the same bytes), sending each
// chunk to chunks as its hashing starts; at most cap(tokens) chunks are
// hashed at once.
func (r *segmentReader) read(ctx context.Context, b cold.Bucket, s RemoteSegment, chunks chan<- *chunkLeaves, tokens chan struct{}) (sum [sha256.Size]byte, err error) {
	var f *cold.Footer
	err = retry(ctx, func() (err error) { f, err = cold.ReadFooter(ctx, b, s.ref()); return err })
	if err == nil && (f.BaseOffset != s.BaseOffset || f.NextOffset != s.NextOffset) {
		err = &recordProblem{offset: s.BaseOffset, msg: fmt.Sprintf("the object holds offsets %d to %d, the manifest names it for offsets %d to %d",
			f.BaseOffset, f.NextOffset-1, s.BaseOffset, s.NextOffset-1)}
	}
	if err != nil {
		return sum, err
	}
	attempt := -1
	err = retry(ctx, func() (err error) {
		attempt++
		sum, err = cold.ScanObject(ctx, b, s.ref(), f, func(c cold.ChunkInfo, raw []byte) error {
			if c.Codec == cold.ChunkRaw {
				raw = bytes.Clone(raw) // it aliases the scan's buffer
			}
			select {
			case tokens <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			r.hashing.Add(1)
			cl := hashChunk(c, raw, attempt, func() { <-tokens; r.hashing.Done() })
			select {
			case chunks <- cl:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		return err
	})
	return sum, err
}

// next returns the next segment's read (nil once all were returned).
func (r *segmentReader) next() *segmentRead { return <-r.reads }

// close stops reading and waits for the reader and its hashing to end.
func (r *segmentReader) close() {
	r.cancel()
	<-r.done
	r.hashing.Wait()
}
