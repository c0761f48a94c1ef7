package cold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/tierlog/tierlog/internal/batch"
)

// Defaults for ReaderOptions.
const (
	DefaultPrefetchBytes     = 16 << 20
	DefaultMaxRangeBytes     = 64 << 20
	DefaultMaxConcurrentGets = 8
	DefaultGetAttempts       = 5
	DefaultFooterCacheSize   = 1024
)

// ReaderOptions configure a Reader. The zero value takes the defaults.
type ReaderOptions struct {
	// PrefetchBytes is how far (in decompressed bytes) a sequential reader
	// is kept ahead of: when fewer than half of it are fetched or in flight
	// beyond the chunk being read, the following chunks up to this many
	// bytes are fetched in the background, adjacent ones with one GET
	// (default DefaultPrefetchBytes; negative: no prefetch).
	PrefetchBytes int64
	// MaxRangeBytes caps the stored bytes one GET asks for; a longer run of
	// chunks is split (default DefaultMaxRangeBytes).
	MaxRangeBytes int64
	// MaxConcurrentGets bounds the GETs in flight, prefetches included
	// (default DefaultMaxConcurrentGets).
	MaxConcurrentGets int
	// DecodeConcurrency bounds the chunks being verified and decompressed
	// at once (default GOMAXPROCS).
	DecodeConcurrency int
	// ReadRateLimit caps the bytes per second received from the bucket by
	// this Reader (0: unlimited), so a replay cannot starve producers.
	ReadRateLimit int64
	// GetAttempts bounds the attempts of one GET whose error IsRetryable
	// (default DefaultGetAttempts). A run of chunks that makes progress
	// gets its attempts back. A checksum mismatch is retried once.
	GetAttempts int
	// RetryBase and RetryMax shape the backoff between attempts: full
	// jitter over a delay doubling from RetryBase up to RetryMax (defaults
	// 100ms and 5s).
	RetryBase, RetryMax time.Duration
	// FooterCacheSize bounds the footers kept in memory (default
	// DefaultFooterCacheSize; a footer of a 64 MiB segment is about 1.2 KiB).
	FooterCacheSize int
	// Logger receives retries and corruption reports (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the reader's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

func (o ReaderOptions) withDefaults() (ReaderOptions, error) {
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.PrefetchBytes, DefaultPrefetchBytes)
	def(&o.MaxRangeBytes, DefaultMaxRangeBytes)
	if o.MaxConcurrentGets == 0 {
		o.MaxConcurrentGets = DefaultMaxConcurrentGets
	}
	if o.DecodeConcurrency == 0 {
		o.DecodeConcurrency = runtime.GOMAXPROCS(0)
	}
	if o.GetAttempts == 0 {
		o.GetAttempts = DefaultGetAttempts
	}
	if o.RetryBase == 0 {
		o.RetryBase = 100 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 5 * time.Second
	}
	if o.FooterCacheSize == 0 {
		o.FooterCacheSize = DefaultFooterCacheSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxRangeBytes < 1 || o.MaxConcurrentGets < 1 || o.DecodeConcurrency < 1 || o.GetAttempts < 1 || o.FooterCacheSize < 1 ||
		o.ReadRateLimit < 0 || o.RetryBase < 0 || o.RetryMax < o.RetryBase {
		return o, fmt.Errorf("cold: reader options out of range: max range %d, concurrent GETs %d, attempts %d, footer cache %d, rate %d (all but the rate must be positive), retry %v..%v",
			o.MaxRangeBytes, o.MaxConcurrentGets, o.GetAttempts, o.FooterCacheSize, o.ReadRateLimit, o.RetryBase, o.RetryMax)
	}
	return o, nil
}

// SegmentRef names a remote segment object: its key and size, as the
// manifest records them, and on a versioned bucket the version written,
// which reads then ask for: an object overwritten behind the writer's back
// is still read as written.
type SegmentRef struct {
	Key       string
	Size      int64
	VersionID string
}

// ErrOffsetOutOfRange means a Read asked a segment for an offset outside
// [BaseOffset, NextOffset): the caller picked the wrong segment.
var ErrOffsetOutOfRange = errors.New("cold: offset outside the segment")

// ErrReaderClosed is returned by a Reader after Close.
var ErrReaderClosed = errors.New("cold: reader closed")

// Reader serves reads of remote segments: it finds the chunk by offset or
// timestamp in the segment's footer, fetches only that chunk's byte range
// (or a run of adjacent chunks, for sequential readers), verifies and
// decompresses it, and keeps it in a ChunkCache. Concurrent reads of one
// chunk share one download. A Reader is safe for concurrent use; one per
// bucket serves every partition.
type Reader struct {
	b         Bucket
	cache     *ChunkCache
	opts      ReaderOptions
	m         *readerMetrics
	footers   *footerCache
	sf        singleflight.Group
	sem       chan struct{} // GETs in flight
	decodeSem chan struct{} // chunks being decoded
	limiter   *rate.Limiter
	prefix    string // chunk cache key prefix: the bucket's name

	ctx    context.Context // ends at Close; downloads run under it
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed against wg.Add racing wg.Wait
	closed bool
	wg     sync.WaitGroup

	gets atomic.Int64
}

// NewReader builds a Reader over b that caches chunks in cache. Close it
// before closing the cache.
func NewReader(b Bucket, cache *ChunkCache, opts ReaderOptions) (*Reader, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if b == nil || cache == nil {
		return nil, errors.New("cold: reader needs a bucket and a chunk cache")
	}
	m, err := newReaderMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Reader{
		b: b, cache: cache, opts: opts, m: m,
		footers:   newFooterCache(opts.FooterCacheSize),
		sem:       make(chan struct{}, opts.MaxConcurrentGets),
		decodeSem: make(chan struct{}, opts.DecodeConcurrency),
		prefix:    b.Name() + "\x00",
	}
	if opts.ReadRateLimit > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(opts.ReadRateLimit), int(max(opts.ReadRateLimit, rateChunk)))
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Close stops background downloads and waits for them. Reads in progress
// fail with ErrReaderClosed.
func (r *Reader) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

// track counts a background goroutine about to start, unless the reader
// is closed.
func (r *Reader) track() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	return true
}

// GetRequests is the number of GETs this Reader has sent (footers and
// chunks, retries included).
func (r *Reader) GetRequests() int64 { return r.gets.Load() }

// Footer returns the segment's footer, from memory or with one ranged GET.
func (r *Reader) Footer(ctx context.Context, seg SegmentRef) (*Footer, error) {
	o, err := r.object(ctx, seg)
	if err != nil {
		return nil, err
	}
	return o.footer, nil
}

// Read returns whole batches from seg, starting with the batch that
// contains offset (so the first batch may start below offset, as in the hot
// tier), up to about maxBytes but at least one batch, and never past the
// end of the segment: the caller moves on to the next segment. Batches from
// the following chunk are included only if it is already in memory, so the
// first batches reach the consumer while a prefetch is still arriving. The
// result is the caller's to keep.
func (r *Reader) Read(ctx context.Context, seg SegmentRef, offset int64, maxBytes int) ([]byte, error) {
	o, err := r.object(ctx, seg)
	if err != nil {
		return nil, err
	}
	f := o.footer
	i := f.ChunkForOffset(offset)
	if i < 0 {
		return nil, fmt.Errorf("%w: %s holds offsets [%d, %d), asked for %d", ErrOffsetOutOfRange, seg.Key, f.BaseOffset, f.NextOffset, offset)
	}
	data, err := r.chunk(ctx, o, i)
	if err != nil {
		return nil, err
	}
	pos, err := batchFrom(data, func(h batch.Header) bool { return h.NextOffset() > offset })
	if err != nil || pos < 0 {
		return nil, r.walkErr(o, i, err, fmt.Sprintf("no batch reaches offset %d that the chunk table places here", offset))
	}
	var out []byte
	for {
		n, full, err := takeBatches(data[pos:], len(out), maxBytes)
		if err != nil {
			return nil, r.walkErr(o, i, err, "")
		}
		if out == nil {
			out = make([]byte, 0, max(min(maxBytes, len(data)-pos), n))
		}
		out = append(out, data[pos:pos+n]...)
		if full || i+1 == len(f.Chunks) {
			return out, nil
		}
		i++
		if data = r.chunkIfReady(o, i); data == nil {
			return out, nil
		}
		pos = 0
	}
}

// Prefetch starts fetching seg's footer and its first PrefetchBytes of
// chunks in the background and returns at once: a caller about to finish
// one segment calls it for the next, so the replay does not stall on the
// footer and first chunk at every segment boundary.
func (r *Reader) Prefetch(seg SegmentRef) {
	if r.opts.PrefetchBytes < 0 || !r.track() {
		return
	}
	go func() {
		defer r.wg.Done()
		o, err := r.object(r.ctx, seg)
		if err != nil {
			return // the Read that follows reports it
		}
		o.mu.Lock()
		start := o.aheadTo
		if o.lastRead >= 0 || start > 0 {
			o.mu.Unlock()
			return // already being read
		}
		to, ahead := 0, int64(0)
		for to < len(o.footer.Chunks) && ahead < r.opts.PrefetchBytes {
			ahead += o.footer.Chunks[to].RawSize
			to++
		}
		o.aheadTo = to
		o.mu.Unlock()
		r.prefetch(o, 0, to)
	}()
}

// OffsetForTime returns the base offset of the first batch in seg whose
// max timestamp is >= ts (Unix ms), as the hot tier answers it. found is
// false if no batch is that late; offset is then the segment's NextOffset,
// where the search continues.
func (r *Reader) OffsetForTime(ctx context.Context, seg SegmentRef, ts int64) (offset int64, found bool, err error) {
	o, err := r.object(ctx, seg)
	if err != nil {
		return 0, false, err
	}
	i := o.footer.ChunkForTime(ts)
	if i < 0 {
		return o.footer.NextOffset, false, nil
	}
	data, err := r.chunk(ctx, o, i)
	if err != nil {
		return 0, false, err
	}
	var base int64
	pos, err := batchFrom(data, func(h batch.Header) bool { base = h.BaseOffset; return h.MaxTimestamp >= ts })
	if err != nil || pos < 0 {
		return 0, false, r.walkErr(o, i, err, fmt.Sprintf("no batch has a max timestamp >= %d though the chunk table says so", ts))
	}
	return base, true, nil
}

// walkErr reports a verified chunk whose batches do not agree with the
// footer: the writer validated both, so the object is not what it wrote.
func (r *Reader) walkErr(o *object, i int, err error, reason string) error {
	if reason == "" && err != nil {
		reason = "batch framing"
	}
	ce := &CorruptObjectError{Key: o.key, Chunk: i, Reason: reason, Err: err}
	r.opts.Logger.Error("cold: corrupt remote segment", "key", o.key, "chunk", i, "err", ce)
	return ce
}

// batchFrom returns the position of the first batch in data for which
// match is true, or -1.
func batchFrom(data []byte, match func(batch.Header) bool) (int, error) {
	for pos := 0; pos < len(data); {
		h, err := batch.Peek(data[pos:])
		if err != nil {
			return -1, err
		}
		if match(h) {
			return pos, nil
		}
		pos += h.Size()
	}
	return -1, nil
}

// takeBatches returns how many leading bytes of data are whole batches
// that fit in maxBytes beside the have bytes already taken (at least one
// batch when have is 0), and whether maxBytes stopped it.
func takeBatches(data []byte, have, maxBytes int) (n int, full bool, err error) {
	for n < len(data) {
		h, err := batch.Peek(data[n:])
		if err != nil {
			return n, true, err
		}
		if have+n > 0 && have+n+h.Size() > maxBytes {
			return n, true, nil
		}
		n += h.Size()
	}
	return n, false, nil
}
