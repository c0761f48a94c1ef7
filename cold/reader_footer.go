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
	ckey    string // key in the chunk cache (bucket name + key)
	size    int64
	footer  *Footer

	mu       sync.Mutex
	lastRead int // chunk index last read, -1 before any read
	aheadTo  int // chunks below this index have been fetched or requested
}

// footerCache is a count-bounded LRU of objects.
type footerCache struct {
	mu    sync.Mutex
	limit int
	m     map[string]*list.Element
	lru   list.List // of *object, most recent at the front
}

func newFooterCache(limit int) *footerCache {
	return &footerCache{limit: limit, m: make(map[string]*list.Element)}
}

func (c *footerCache) get(key string, size int64) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		o := el.Value.(*object)
		if o.size == size {
			c.lru.MoveToFront(el)
			return o
		}
	}
	return nil
}

func (c *footerCache) add(o *object) *object {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[o.key]; ok {
		if cur := el.Value.(*object); cur.size == o.size {
			c.lru.MoveToFront(el)
			return cur
		}
		c.lru.Remove(el)
	}
	c.m[o.key] = c.lru.PushFront(o)
	for c.lru.Len() > c.limit {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*object).key)
	}
	return o
}
