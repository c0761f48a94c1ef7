package cold

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// storedBufs pools scratch buffers for compressed chunk bytes.
var storedBufs sync.Pool

// rateChunk is the most bytes read from a body between two rate limiter
// waits; also the smallest limiter burst.
const rateChunk = 256 << 10

// object returns the segment's footer and reader state, fetching the footer
// (one download for concurrent callers) if it is not in memory. The
// download runs under the Reader's context, so one caller giving up does not
// fail the others.
func (r *Reader) object(ctx context.Context, seg SegmentRef) (*object, error) {
	if r.ctx.Err() != nil {
		return nil, ErrReaderClosed
	}
	if o := r.footers.get(seg); o != nil {
		return o, nil
	}
	if !r.track() {
		return nil, ErrReaderClosed
	}
	type result struct {
		o   *object
		err error
	}
	res := make(chan result, 1)
	go func() {
		defer r.wg.Done()
		v, err, _ := r.sf.Do(objectID(seg)+"\x00"+strconv.FormatInt(seg.Size, 10), func() (any, error) {
			var f *Footer
			err := r.retry(r.ctx, seg, func() error {
				var err error
				f, _, err = readFooter(r.ctx, r.b, seg, r.countGet("footer"))
				return err
			})
			if err != nil {
				return nil, err
			}
			o := &object{key: seg.Key, version: seg.VersionID, ckey: r.prefix + objectID(seg), size: seg.Size, footer: f, lastRead: -1}
			return r.footers.add(o), nil
		})
		o, _ := v.(*object)
		res <- result{o, err}
	}()
	select {
	case v := <-res:
		return v.o, v.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// countGet returns a callback that counts one GET of kind and the bytes it
// returned.
func (r *Reader) countGet(kind string) func(n int) {
	return func(n int) {
		r.gets.Add(1)
		r.m.getRequests.WithLabelValues(kind).Inc()
		r.m.getBytes.Add(float64(n))
	}
}

// plan records a read of chunk i and returns the chunks [from, to) to
// prefetch. A read is sequential when it starts the segment or follows (or
// repeats) the previous chunk read; a sequential reader is kept
// PrefetchBytes ahead, refilled once less than half of that remains, so
// each refill is one GET of several chunks rather than one GET per chunk.
func (r *Reader) plan(o *object, i int) (from, to int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seq := i == 0 || i == o.lastRead || i == o.lastRead+1
	o.lastRead = i
	if !seq || r.opts.PrefetchBytes < 0 {
		o.aheadTo = i + 1
		return 0, 0
	}
	o.aheadTo = max(o.aheadTo, i+1)
	cs := o.footer.Chunks
	ahead := int64(0)
	for k := i + 1; k < o.aheadTo; k++ {
		ahead += cs[k].RawSize
	}
	if ahead >= r.opts.PrefetchBytes/2 || o.aheadTo >= len(cs) {
		return 0, 0
	}
	from, to = o.aheadTo, o.aheadTo
	for to < len(cs) && ahead < r.opts.PrefetchBytes {
		ahead += cs[to].RawSize
		to++
	}
	o.aheadTo = to
	return from, to
}

// chunk returns chunk i's decompressed bytes, waiting for its download if
// needed, and keeps a sequential reader's prefetch going.
func (r *Reader) chunk(ctx context.Context, o *object, i int) ([]byte, error) {
	from, to := r.plan(o, i)
	k := chunkKey{o.ckey, i}
	cs := o.footer.Chunks
	for {
		data, e := r.cache.lookup(k)
		if data != nil {
			r.cache.hit()
			r.prefetch(o, from, to)
			return data, nil
		}
		if e != nil {
			r.cache.hit() // joins a download in flight
			r.prefetch(o, from, to)
		} else {
			// A miss: fetch chunk i, with the prefetch in the same GET
			// when it starts right after i.
			end := i + 1
			if from == i+1 {
				end = to
			}
			runs := r.cache.reserve(o.ckey, cs[i:end], true)
			if len(runs) == 0 || runs[0][0].key != k {
				r.startRuns(o, runs, nil)
				continue // someone else started it: join theirs
			}
			r.cache.miss()
			e = runs[0][0]
			r.startRuns(o, runs, e)
			if from != i+1 {
				r.prefetch(o, from, to)
			}
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err != nil {
			return nil, e.err
		}
		return e.data, nil
	}
}

// chunkIfReady returns chunk i if it is in memory, without waiting; if it
// is not, it makes sure a download is under way for the next Read.
func (r *Reader) chunkIfReady(o *object, i int) []byte {
	from, to := r.plan(o, i)
	data, e := r.cache.lookup(chunkKey{o.ckey, i})
	if data != nil {
		r.cache.hit()
	} else if e == nil && r.opts.PrefetchBytes >= 0 {
		r.prefetch(o, i, max(to, i+1))
		return nil
	}
	r.prefetch(o, from, to)
	return data
}

// prefetch downloads the chunks [from, to) that are neither in memory nor
// in flight, as far as the cache window has room.
func (r *Reader) prefetch(o *object, from, to int) {
	if from >= to {
		return
	}
	runs := r.cache.reserve(o.ckey, o.footer.Chunks[from:to], false)
	r.startRuns(o, runs, nil)
}

// startRuns starts one download per run of adjacent chunks, split so that
// no GET asks for more than MaxRangeBytes (a single larger chunk excepted).
// Every chunk but demand (the one a reader asked for, if any) counts as
// prefetched.
func (r *Reader) startRuns(o *object, runs [][]*entry, demand *entry) {
	for _, run := range runs {
		for _, e := range run {
			if e != demand {
				r.m.prefetched.Inc()
			}
		}
		for len(run) > 0 {
			n, size := 1, run[0].info.StoredSize
			for n < len(run) && size+run[n].info.StoredSize <= r.opts.MaxRangeBytes {
				size += run[n].info.StoredSize
				n++
			}
			part := run[:n]
			run = run[n:]
			if !r.track() {
				for _, e := range part {
					r.cache.complete(e, nil, ErrReaderClosed)
				}
				continue
			}
			go func() {
				defer r.wg.Done()
				r.fetchRun(o, part, false)
			}()
		}
	}
}

// fetchRun downloads a run of adjacent chunks with one ranged GET. Each
// chunk is handed to a decoder as soon as its stored bytes have arrived, so
// a reader waiting for the first chunk does not wait for the last, and the
// chunks of a run decompress in parallel while the rest of the body is
// still arriving. A GET that fails resumes from the first chunk whose bytes
// did not all arrive. retried says the run is the one retry of a chunk that
// failed its checksum.
func (r *Reader) fetchRun(o *object, run []*entry, retried bool) {
	fail := func(from int, err error) {
		for _, e := range run[from:] {
			r.cache.complete(e, nil, err)
		}
	}
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-r.ctx.Done():
		fail(0, ErrReaderClosed)
		return
	}
	next, attempt := 0, 0
	delay := r.opts.RetryBase
	for next < len(run) {
		attempt++
		before := next
		err := r.getRun(o, run, &next, retried)
		if err == nil {
			return
		}
		if next > before {
			attempt, delay = 1, r.opts.RetryBase
		}
		if r.ctx.Err() != nil {
			fail(next, ErrReaderClosed)
			return
		}
		truncated := errors.Is(err, ErrCorruptObject) && errors.Is(err, io.ErrUnexpectedEOF)
		retry := attempt < r.opts.GetAttempts && (truncated || IsRetryable(err))
		if (truncated && attempt == 1) || !retry {
			// A short body or a refused range may mean the object is not
			// the size the manifest says: that is corruption, not bad luck.
			if serr := r.checkSize(o.key, o.size, run[next].info.Index); serr != nil {
				err, retry = serr, false
			}
		}
		if !retry {
			r.opts.Logger.Error("cold: chunk download failed", "key", o.key, "chunk", run[next].info.Index, "attempts", attempt, "err", err)
			fail(next, err)
			return
		}
		r.m.getRetries.Inc()
		r.opts.Logger.Warn("cold: retrying chunk download", "key", o.key, "chunk", run[next].info.Index, "attempt", attempt, "err", err)
		if !r.sleep(&delay) {
			fail(next, ErrReaderClosed)
			return
		}
	}
}

// getRun sends one GET for run[*next:] and reads the chunks' stored bytes
// in order, passing each to decode and advancing *next past it.
func (r *Reader) getRun(o *object, run []*entry, next *int, retried bool) error {
	first, last := run[*next].info, run[len(run)-1].info
	off, length := first.StoredPos, last.StoredPos+last.StoredSize-first.StoredPos
	count := r.countGet("chunks")
	rc, err := GetRangeVersion(r.ctx, r.b, o.key, o.version, off, length)
	if err != nil {
		count(0)
		return fmt.Errorf("cold: get %s chunks %d-%d: %w", o.key, first.Index, last.Index, err)
	}
	defer rc.Close()
	var body io.Reader = rc
	if r.limiter != nil {
		body = &limitedReader{ctx: r.ctx, r: rc, l: r.limiter}
	}
	got := 0
	defer func() { count(got) }()
	for *next < len(run) {
		e := run[*next]
		// A raw chunk's buffer becomes the cached chunk; compressed bytes
		// are dead once decoded, so their buffers are pooled.
		var buf []byte
		var pooled *[]byte
		if e.info.Codec == ChunkRaw {
			buf = make([]byte, e.info.StoredSize)
		} else {
			pooled, _ = storedBufs.Get().(*[]byte)
			if pooled == nil || int64(cap(*pooled)) < e.info.StoredSize {
				b := make([]byte, e.info.StoredSize)
				pooled = &b
			}
			buf = (*pooled)[:e.info.StoredSize]
		}
		n, err := io.ReadFull(body, buf)
		got += n
		if err != nil {
			if pooled != nil {
				storedBufs.Put(pooled)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return &CorruptObjectError{Key: o.key, Chunk: e.info.Index, Err: io.ErrUnexpectedEOF,
					Reason: fmt.Sprintf("response ends after %d of the chunk's %d bytes (truncated object or body)", n, e.info.StoredSize)}
			}
			return fmt.Errorf("cold: get %s chunk %d: %w", o.key, e.info.Index, err)
		}
		*next++
		r.decode(o, e, buf, pooled, retried)
	}
	return nil
}

// decode verifies and decompresses a chunk's stored bytes on a decoder
// goroutine (at most DecodeConcurrency at a time: when all are busy, the
// download waits, which bounds the memory of bytes not yet decoded) and
// completes its entry. A chunk that fails its checksum is downloaded once
// more on its own (a body cut or garbled in transit can look corrupt) and
// then reported.
func (r *Reader) decode(o *object, e *entry, buf []byte, pooled *[]byte, retried bool) {
	r.decodeSem <- struct{}{}
	if !r.track() {
		<-r.decodeSem
		r.cache.complete(e, nil, ErrReaderClosed)
		return
	}
	go func() {
		defer r.wg.Done()
		defer func() { <-r.decodeSem }()
		start := time.Now()
		data, err := DecodeChunk(buf, e.info)
		r.m.decompress.Observe(time.Since(start).Seconds())
		if pooled != nil {
			storedBufs.Put(pooled)
		}
		if err == nil {
			r.cache.complete(e, data, nil)
			return
		}
		err = withKey(err, o.key)
		r.m.checksumFailures.Inc()
		if retried || r.ctx.Err() != nil || !r.track() {
			r.opts.Logger.Error("cold: corrupt remote segment", "key", o.key, "chunk", e.info.Index, "err", err)
			r.cache.complete(e, nil, err)
			return
		}
		r.m.getRetries.Inc()
		r.opts.Logger.Warn("cold: chunk failed its checksum, downloading it again", "key", o.key, "chunk", e.info.Index, "err", err)
		go func() {
			defer r.wg.Done()
			r.fetchRun(o, []*entry{e}, true)
		}()
	}()
}

// retry runs f until it succeeds, fails for good, or the attempts run out:
// retryable errors (IsRetryable) and truncated bodies get GetAttempts
// tries, a checksum mismatch one more.
func (r *Reader) retry(ctx context.Context, seg SegmentRef, f func() error) error {
	delay := r.opts.RetryBase
	checksumRetried := false
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		var ce *CorruptObjectError
		truncated := errors.As(err, &ce) && errors.Is(err, io.ErrUnexpectedEOF)
		retry := attempt < r.opts.GetAttempts && ctx.Err() == nil
		switch {
		case ce != nil && !truncated:
			retry = retry && !checksumRetried
			checksumRetried = true
		case truncated:
		default:
			retry = retry && IsRetryable(err)
		}
		if (truncated && attempt == 1) || (!retry && ce == nil) {
			if serr := r.checkSize(seg.Key, seg.Size, -1); serr != nil {
				return serr
			}
		}
		if !retry {
			if ctx.Err() != nil && r.ctx.Err() != nil {
				return ErrReaderClosed
			}
			return err
		}
		r.m.getRetries.Inc()
		r.opts.Logger.Warn("cold: retrying footer download", "key", seg.Key, "attempt", attempt, "err", err)
		if !r.sleep(&delay) {
			return ErrReaderClosed
		}
	}
}

// checkSize returns a *CorruptObjectError if the object's size in the
// bucket is not want (nil if it is, or if the bucket cannot say).
func (r *Reader) checkSize(key string, want int64, chunk int) error {
	a, err := r.b.Attributes(r.ctx, key)
	if err != nil || a.Size == want {
		return nil
	}
	return &CorruptObjectError{Key: key, Chunk: chunk,
		Reason: fmt.Sprintf("object is %d bytes, the manifest says %d (truncated or replaced)", a.Size, want)}
}

// sleep waits a random time up to *delay (full jitter, so readers that
// failed together do not retry together), doubles *delay up to RetryMax,
// and reports false if the Reader closed meanwhile.
func (r *Reader) sleep(delay *time.Duration) bool {
	d := time.Duration(rand.Int64N(int64(*delay) + 1))
	*delay = min(*delay*2, r.opts.RetryMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// limitedReader paces reads from a response body to the Reader's byte
// rate.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *rate.Limiter
}

func (lr *limitedReader) Read(p []byte) (int, error) {
	if len(p) > rateChunk {
		p = p[:rateChunk]
	}
	n, err := lr.r.Read(p)
	if n > 0 {
		if werr := lr.l.WaitN(lr.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}
