package cold

import (
	"container/list"
	"sync"
)

// object is what a Reader knows about one remote segment: its footer and
// where its sequential reader is.
type object struct {
	key string // object key in the bucket
	// version is the object version to read ("": the current one).
	version string
	ckey    string // key in the chunk cache (bucket name + key + version)
	size    int64
	footer  *Footer

	mu       sync.Mutex
	lastRead int // chunk index last read, -1 before any read
	aheadTo  int // chunks below this index have been fetched or requested
}

// objectID names an object version in the Reader's caches: the key and
// the version read. Keying on the key alone would let an overwrite of the
// key (a new current version) be served for a recorded version, or the
// reverse, whichever was cached first.
func objectID(seg SegmentRef) string {
	if seg.VersionID == "" {
		return seg.Key
	}
	return seg.Key + "\x00" + seg.VersionID
}

func (o *object) id() string { return objectID(SegmentRef{Key: o.key, VersionID: o.version}) }

// footerCache is a count-bounded LRU of objects, by objectID.
type footerCache struct {
	mu    sync.Mutex
	limit int
	m     map[string]*list.Element
	lru   list.List // of *object, most recent at the front
}

func newFooterCache(limit int) *footerCache {
	return &footerCache{limit: limit, m: make(map[string]*list.Element)}
}

func (c *footerCache) get(seg SegmentRef) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[objectID(seg)]; ok {
		o := el.Value.(*object)
		if o.size == seg.Size {
			c.lru.MoveToFront(el)
			return o
		}
	}
	return nil
}

func (c *footerCache) add(o *object) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := o.id()
	if el, ok := c.m[id]; ok {
		if cur := el.Value.(*object); cur.size == o.size {
			c.lru.MoveToFront(el)
			return cur
		}
		c.lru.Remove(el)
	}
	c.m[id] = c.lru.PushFront(o)
	for c.lru.Len() > c.limit {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*object).id())
	}
	return o
}
