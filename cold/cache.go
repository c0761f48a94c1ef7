package cold

import (
	"container/list"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// The chunk cache holds decompressed chunks in two parts that share one byte
// budget:
//
//   - the window: every chunk being downloaded or recently downloaded,
//     outside any admission policy. A download reserves its bytes here
//     before it starts (so the budget is never overrun by downloads), and a
//     prefetched chunk stays here until a reader has used it. Ristretto's
//     admission is probabilistic (TinyLFU): a chunk read once, which is every
//     chunk of a replay, is often refused when the main cache is full, and
//     Set is asynchronous; a prefetch put straight into ristretto could be
//     gone before its reader arrives, and a reader reading one chunk in
//     several fetches would download it several times. The window is what
//     W-TinyLFU calls the admission window: new entries prove themselves
//     there first.
//   - the main cache (ristretto), for chunks that leave the window: it keeps
//     what is read repeatedly (the tail that consumers re-read, a popular
//     time range) and resists being flushed by a one-off replay.
//
// Leaving the window, a chunk is offered to ristretto, which admits or
// refuses it. The window evicts, least recently used first, chunks that a
// reader has already used; a prefetched chunk no reader has asked for yet is
// evicted only after PrefetchTTL (its reader went away). In-flight chunks
// are never evicted. When the window has no room, a prefetch is cut short
// (the reader fetches on demand later), but a demand fetch proceeds: the
// reader needs that chunk now. That overdraft is at most one chunk per
// read waiting for a chunk that was not in memory, and is paid back as soon
// as something in the window becomes evictable.
//
// Memory held, therefore: main ≤ MaxBytes − WindowBytes (ristretto's cost
// accounting, each entry costed at its length plus entryOverhead), window ≤
// WindowBytes + overdraft. Outside the budget: the compressed bytes of
// chunks being received or decoded (at most a Reader's MaxConcurrentGets +
// DecodeConcurrency compressed chunks), and a chunk
// evicted while a Reader is still copying batches out of it, until the copy
// ends (a Reader never returns cache memory to its caller).

// Defaults for ChunkCacheOptions.
const (
	DefaultCacheBytes  = 256 << 20
	DefaultPrefetchTTL = time.Minute
	// entryOverhead is added to each main-cache entry's cost for the
	// bookkeeping around it (ristretto's item, our key and header).
	entryOverhead = 256
)

// ChunkCacheOptions configure a ChunkCache. The zero value takes the
// defaults.
type ChunkCacheOptions struct {
	// MaxBytes is the budget for decompressed chunks, window and main
	// cache together (default DefaultCacheBytes).
	MaxBytes int64
	// WindowBytes is the part of MaxBytes for chunks in flight, prefetched
	// and just used (default MaxBytes/2). It bounds how far ahead all
	// sequential readers together can prefetch.
	WindowBytes int64
	// PrefetchTTL is how long a prefetched chunk nobody has read stays in
	// the window before it may be evicted (default DefaultPrefetchTTL).
	PrefetchTTL time.Duration
	// Registerer receives the cache's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// ChunkCache caches decompressed chunks keyed by (object, chunk index). It
// is safe for concurrent use; one cache can serve several Readers.
type ChunkCache struct {
	opts ChunkCacheOptions
	main *ristretto.Cache[string, *cachedChunk]
	m    *cacheMetrics

	mu      sync.Mutex
	window  map[chunkKey]*entry
	used    list.List // ready entries a reader has used, least recent at the back
	fresh   list.List // ready prefetched entries nobody has used yet, oldest at the back
	winSize int64     // bytes of every window entry (reserved or held)

	hits, misses, evictions, rejections atomic.Int64
	closed                              atomic.Bool
}

// chunkKey names a chunk: the object version (its objectID, prefixed by
// the bucket's name so Readers of different buckets can share a cache) and
// its index.
type chunkKey struct {
	obj string
	idx int
}

func (k chunkKey) String() string { return k.obj + "#" + strconv.Itoa(k.idx) }

// cachedChunk is a main-cache value. It repeats its key: ristretto keys by a
// 128-bit hash, and a chunk served for the wrong key would be wrong bytes.
type cachedChunk struct {
	key  chunkKey
	data []byte
}

// entry is a window slot: a chunk being fetched or held.
type entry struct {
	key      chunkKey
	info     ChunkInfo
	reserved int64         // bytes counted in winSize
	done     chan struct{} // closed once data or err is set
	data     []byte
	err      error
	fresh    bool // prefetched and not yet read
	readyAt  time.Time
	elem     *list.Element // in used or fresh once ready
}

// NewChunkCache builds a cache; Close releases it.
func NewChunkCache(opts ChunkCacheOptions) (*ChunkCache, error) {
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultCacheBytes
	}
	if opts.WindowBytes == 0 {
		opts.WindowBytes = opts.MaxBytes / 2
	}
	if opts.PrefetchTTL == 0 {
		opts.PrefetchTTL = DefaultPrefetchTTL
	}
	if opts.MaxBytes < 2 || opts.WindowBytes < 1 || opts.WindowBytes >= opts.MaxBytes || opts.PrefetchTTL < 0 {
		return nil, fmt.Errorf("cold: cache of %d bytes with a window of %d and prefetch TTL %v: need 0 < window < max and TTL >= 0",
			opts.MaxBytes, opts.WindowBytes, opts.PrefetchTTL)
	}
	c := &ChunkCache{opts: opts, window: make(map[chunkKey]*entry)}
	mainBytes := opts.MaxBytes - opts.WindowBytes
	main, err := ristretto.NewCache(&ristretto.Config[string, *cachedChunk]{
		// Ten counters per entry the cache could hold at 256 KiB a chunk.
		NumCounters:        max(mainBytes/(256<<10), 100) * 10,
		MaxCost:            mainBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
		OnEvict:            func(*ristretto.Item[*cachedChunk]) { c.evictions.Add(1); c.m.evictions.Inc() },
		OnReject:           func(*ristretto.Item[*cachedChunk]) { c.rejections.Add(1); c.m.rejections.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("cold: chunk cache: %w", err)
	}
	c.main = main
	if c.m, err = newCacheMetrics(opts.Registerer, c); err != nil {
		main.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the main cache's goroutine. Readers using the cache must
// be closed first.
func (c *ChunkCache) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.main.Close()
}

// CacheStats is a snapshot of the cache's counters.
type CacheStats struct {
	Hits        int64 // chunk lookups served from memory (or an in-flight download)
	Misses      int64 // chunk lookups that started a download
	Evictions   int64 // chunks evicted from the main cache
	Rejections  int64 // chunks the main cache's admission policy refused
	MainBytes   int64 // bytes held by the main cache (as costed)
	WindowBytes int64 // bytes held or reserved by the window
	Downloading int   // chunks being downloaded
	Prefetched  int   // downloaded chunks no reader has used yet
}

// Stats returns the cache's counters.
func (c *ChunkCache) Stats() CacheStats {
	c.mu.Lock()
	win, downloading, fresh := c.winSize, len(c.window)-c.used.Len()-c.fresh.Len(), c.fresh.Len()
	c.mu.Unlock()
	return CacheStats{
		Hits: c.hits.Load(), Misses: c.misses.Load(),
		Evictions: c.evictions.Load(), Rejections: c.rejections.Load(),
		MainBytes: c.main.MaxCost() - c.main.RemainingCost(), WindowBytes: win,
		Downloading: downloading, Prefetched: fresh,
	}
}

// HitRate is hits / (hits + misses) since the cache was built, 0 before any
// lookup: the figure `tier status` shows.
func (c *ChunkCache) HitRate() float64 {
	h, m := c.hits.Load(), c.misses.Load()
	if h+m == 0 {
		return 0
	}
	return float64(h) / float64(h+m)
}

// hit and miss count lookups for HitRate and the metrics: a lookup served
// from memory or by joining a download in flight is a hit, one that had to
// start a download is a miss.
func (c *ChunkCache) hit()  { c.hits.Add(1); c.m.hits.Inc() }
func (c *ChunkCache) miss() { c.misses.Add(1); c.m.misses.Inc() }

// lookup returns the chunk's bytes if they are in memory, or the window
// entry of its download to wait for, or neither (a miss: nothing is
// recorded; the caller reserves and fetches).
func (c *ChunkCache) lookup(k chunkKey) ([]byte, *entry) {
	c.mu.Lock()
	if e, ok := c.window[k]; ok {
		if e.elem == nil { // in flight
			e.fresh = false // a reader is waiting: it will have been used
			c.mu.Unlock()
			return nil, e
		}
		c.touchLocked(e)
		data := e.data
		c.mu.Unlock()
		// Tell the main cache's frequency sketch about the access, so a
		// chunk read often in the window is admitted when it leaves.
		c.main.Get(k.String())
		return data, nil
	}
	c.mu.Unlock()
	if v, ok := c.main.Get(k.String()); ok && v.key == k {
		return v.data, nil
	}
	return nil, nil
}

// touchLocked marks a ready entry as just used.
func (c *ChunkCache) touchLocked(e *entry) {
	if e.fresh {
		c.fresh.Remove(e.elem)
		e.fresh = false
		e.elem = c.used.PushFront(e)
		return
	}
	c.used.MoveToFront(e.elem)
}

// reserve creates window entries to download those of chunks that are
// neither in memory nor in flight, in order, and returns them grouped in
// runs of adjacent chunks. It stops at the first chunk that does not fit in
// the window, except that with demand chunks[0] is wanted now and is
// reserved even past the budget. The caller must complete every entry.
func (c *ChunkCache) reserve(obj string, chunks []ChunkInfo, demand bool) [][]*entry {
	var runs [][]*entry
	var run, demote []*entry
	c.mu.Lock()
	for n, ci := range chunks {
		k := chunkKey{obj, ci.Index}
		_, inWindow := c.window[k]
		if !inWindow {
			if v, ok := c.main.Get(k.String()); ok && v.key == k {
				inWindow = true
			}
		}
		if inWindow {
			if run != nil {
				runs, run = append(runs, run), nil
			}
			continue
		}
		mustHave := demand && n == 0
		demote = c.makeRoomLocked(ci.RawSize, nil, demote)
		if c.winSize+ci.RawSize > c.opts.WindowBytes && !mustHave {
			break
		}
		e := &entry{key: k, info: ci, reserved: ci.RawSize, done: make(chan struct{}), fresh: !mustHave}
		c.window[k] = e
		c.winSize += e.reserved
		run = append(run, e)
	}
	if run != nil {
		runs = append(runs, run)
	}
	c.mu.Unlock()
	c.offer(demote)
	return runs
}

// makeRoomLocked takes evictable entries out of the window until need more
// bytes fit or nothing more may go, appending them to demote (offered to the
// main cache after the lock is released).
func (c *ChunkCache) makeRoomLocked(need int64, keep *entry, demote []*entry) []*entry {
	now := time.Now()
	for c.winSize+need > c.opts.WindowBytes {
		var victim *entry
		if b := c.used.Back(); b != nil && b.Value.(*entry) != keep {
			victim = b.Value.(*entry)
			c.used.Remove(b)
		} else if b := c.fresh.Back(); b != nil && now.Sub(b.Value.(*entry).readyAt) >= c.opts.PrefetchTTL {
			victim = b.Value.(*entry)
			c.fresh.Remove(b)
			c.m.prefetchUnused.Inc()
		} else {
			break
		}
		victim.elem = nil
		delete(c.window, victim.key)
		c.winSize -= victim.reserved
		demote = append(demote, victim)
	}
	return demote
}

// complete ends an entry's download. On success the chunk stays in the
// window; on error it leaves (errors are never cached) and its waiters get
// err.
func (c *ChunkCache) complete(e *entry, data []byte, err error) {
	var demote []*entry
	c.mu.Lock()
	if err != nil {
		delete(c.window, e.key)
		c.winSize -= e.reserved
		e.err = err
	} else {
		c.winSize += int64(len(data)) - e.reserved
		e.reserved = int64(len(data))
		e.data = data
		e.readyAt = time.Now()
		if e.fresh {
			e.elem = c.fresh.PushFront(e)
		} else {
			e.elem = c.used.PushFront(e)
		}
		// Pay back a demand overdraft as soon as possible, but keep the
		// chunk just fetched: its reader is about to use it.
		demote = c.makeRoomLocked(0, e, demote)
	}
	close(e.done)
	c.mu.Unlock()
	c.offer(demote)
}

// offer hands chunks leaving the window to the main cache, whose admission
// policy decides whether to keep them.
func (c *ChunkCache) offer(es []*entry) {
	if len(es) == 0 || c.closed.Load() {
		return
	}
	for _, e := range es {
		c.main.Set(e.key.String(), &cachedChunk{key: e.key, data: e.data}, int64(len(e.data))+entryOverhead)
	}
	// Sets are applied asynchronously; wait, so that a reader looking for
	// a chunk just offered finds it if it was admitted.
	c.main.Wait()
}
