package cold

import (
	"hash/crc32"
	"runtime"
	"sync"
)

// chunkJob is one chunk on its way from the segment to the object: it is
// checksummed and compressed off the reading goroutine.
type chunkJob struct {
	info   ChunkInfo
	raw    []byte
	comp   []byte
	stored []byte // raw or comp
	err    error
	done   chan struct{}
}

// compressWorkers is how many chunks compress at once: one per core.
func compressWorkers() int { return max(1, runtime.GOMAXPROCS(0)) }

// submit starts the job once a worker slot is free.
func (sw *segWriter) submit(j *chunkJob) {
	sw.jobs = append(sw.jobs, j)
	sw.sem <- struct{}{}
	go func() {
		defer func() { <-sw.sem; close(j.done) }()
		j.run(sw.opts)
	}()
}

// run checksums the raw chunk and compresses it, keeping it raw if zstd does
// not shrink it.
func (j *chunkJob) run(o SegmentOptions) {
	c := &j.info
	c.RawCRC = crc32.Checksum(j.raw, castagnoli)
	j.stored, c.Codec, c.StoredCRC = j.raw, ChunkRaw, c.RawCRC
	if o.NoCompression {
		return
	}
	enc, err := getEncoder(o.Level)
	if err != nil {
		j.err = err
		return
	}
	j.comp = enc.EncodeAll(j.raw, getBuf(len(j.raw))[:0])
	encoderPools[o.Level].Put(enc)
	if len(j.comp) < len(j.raw) {
		j.stored, c.Codec = j.comp, ChunkZstd
		c.StoredCRC = crc32.Checksum(j.comp, castagnoli)
	}
}

// writeDone writes finished jobs at the head of the queue, in chunk order;
// with wait it first waits for the head job.
func (sw *segWriter) writeDone(wait bool) error {
	for len(sw.jobs) > 0 {
		j := sw.jobs[0]
		if wait {
			<-j.done
			wait = false
		} else {
			select {
			case <-j.done:
			default:
				return nil
			}
		}
		sw.jobs = sw.jobs[1:]
		if j.err != nil {
			j.recycle()
			return j.err
		}
		c := j.info
		c.StoredPos, c.StoredSize = sw.out.n, int64(len(j.stored))
		err := sw.out.write(j.stored)
		j.recycle()
		if err != nil {
			return err
		}
		sw.footer.Chunks = append(sw.footer.Chunks, c)
		sw.footer.RawSize += c.RawSize
	}
	return nil
}

// release waits for jobs still running (after an error) and returns every
// buffer to the pool.
func (sw *segWriter) release() {
	for _, j := range sw.jobs {
		<-j.done
		j.recycle()
	}
	sw.jobs = nil
	putBuf(sw.chunk)
	sw.chunk = nil
}

func (j *chunkJob) recycle() {
	putBuf(j.raw)
	putBuf(j.comp)
	j.raw, j.comp, j.stored = nil, nil, nil
}

// bufPool recycles chunk-sized buffers across chunks and segments: growing
// them by appends would copy each chunk several times, and a fresh 4 MiB
// buffer per chunk costs page faults.
var bufPool sync.Pool

func getBuf(n int) []byte {
	if b, ok := bufPool.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	return make([]byte, 0, n)
}

func putBuf(b []byte) {
	if b == nil || cap(b) > 2*DefaultChunkBytes {
		return // a huge single batch: do not keep its buffer
	}
	b = b[:0]
	bufPool.Put(&b)
}
