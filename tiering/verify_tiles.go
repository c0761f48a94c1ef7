package tiering

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
)

// tileChecker is the bucket a verifier's recomputed audit.Tree writes its
// tiles to: instead of storing a tile it compares it with the tile the
// archive holds under that key, and keeps what differs. Reads go to the
// archive's bucket. Full tiles are always compared; partial tiles only
// while partials is set - at the tree sizes the tiering daemon wrote them
// (segment ends, checkpoints), not at the sizes the verifier cuts its work
// at - and each once. Comparisons run in the background (the tree goes on
// meanwhile); take waits for them. Safe for concurrent use (audit.Tree
// writes tiles in parallel).
type tileChecker struct {
	cold.Bucket // the archive's, read only
	prefix      string
	partials    atomic.Bool
	compared    atomic.Int64
	pending     sync.WaitGroup
	sem         chan struct{} // bounds the comparisons in flight

	mu           sync.Mutex
	mismatches   []tileMismatch
	seen         map[string]bool // mismatches ever kept, by key and offset
	partialsSeen map[string]bool // the partial tiles compared
	err          error           // the first read that failed
}

func newTileChecker(b cold.Bucket, prefix string) *tileChecker {
	return &tileChecker{Bucket: b, prefix: prefix, sem: make(chan struct{}, 32), partialsSeen: map[string]bool{}}
}

// tileMismatch is a stored tile that is missing or differs from the
// recomputed one at entry, whose first leaf is offset.
type tileMismatch struct {
	key            string
	level          int
	offset         int64
	stored, wanted []byte // the entry's hashes (nil: the tile is missing)
}

func (c *tileChecker) Upload(ctx context.Context, key string, r io.Reader, _ int64) (cold.Attributes, error) {
	wanted, err := io.ReadAll(r)
	if err != nil {
		return cold.Attributes{}, err
	}
	level, n, width, ok := parseTileKey(strings.TrimPrefix(key, c.prefix+audit.Dir))
	if !ok {
		return cold.Attributes{}, fmt.Errorf("tiering: verify: the tree wrote %s, which is not a tile", key)
	}
	if width < audit.TileWidth {
		if !c.partials.Load() {
			return cold.Attributes{}, nil
		}
		c.mu.Lock()
		seen := c.partialsSeen[key]
		c.partialsSeen[key] = true
		c.mu.Unlock()
		if seen {
			// Written again at a later bound: a level the tree did not
			// reach since holds the same entries under the same key.
			return cold.Attributes{}, nil
		}
	}
	c.compared.Add(1)
	c.pending.Add(1)
	c.sem <- struct{}{}
	go func() {
		defer func() { <-c.sem; c.pending.Done() }()
		// Not the tree's context: it ends with the Append that wrote the
		// tile, and the comparison outlives it.
		if err := c.compare(context.WithoutCancel(ctx), key, level, n, width, wanted); err != nil {
			c.mu.Lock()
			c.err = cmp.Or(c.err, err)
			c.mu.Unlock()
		}
	}()
	return cold.Attributes{}, nil
}

// compare reads the stored tile and keeps what differs from wanted.
func (c *tileChecker) compare(ctx context.Context, key string, level int, n uint64, width int, wanted []byte) error {
	stored, err := getAll(ctx, c.Bucket, key)
	if errors.Is(err, cold.ErrNotFound) && width < audit.TileWidth {
		// A partial tile superseded by the full one is deleted by the
		// node: the full tile's first entries are the ones to compare,
		// and a finding names the full tile (add keeps it once).
		full := audit.TileKey(c.prefix, level, n, audit.TileWidth)
		if data, ferr := getAll(ctx, c.Bucket, full); ferr == nil {
			key, stored, err = full, data[:min(len(data), len(wanted))], nil
		}
	}
	first := int64(n) * audit.TileWidth << (audit.TileHeight * level)
	switch {
	case errors.Is(err, cold.ErrNotFound):
		c.add(tileMismatch{key: key, level: level, offset: first})
		return nil
	case err != nil:
		return fmt.Errorf("read tile %s: %w", key, err)
	case bytes.Equal(stored, wanted):
		return nil
	}
	i := 0
	for i+audit.HashSize <= min(len(stored), len(wanted)) && bytes.Equal(stored[i:i+audit.HashSize], wanted[i:i+audit.HashSize]) {
		i += audit.HashSize
	}
	m := tileMismatch{key: key, level: level, offset: first + int64(i/audit.HashSize)<<(audit.TileHeight*level)}
	if i+audit.HashSize <= len(wanted) {
		m.wanted = wanted[i : i+audit.HashSize]
	}
	if i+audit.HashSize <= len(stored) {
		m.stored = stored[i : i+audit.HashSize]
	} else {
		m.stored = []byte{} // shorter than it should be
	}
	c.add(m)
	return nil
}

func (c *tileChecker) Delete(context.Context, string) error {
	return errors.New("tiering: verify never deletes")
}

// add keeps m, once: the full tile behind a deleted partial one is
// compared again when the tree writes it.
func (c *tileChecker) add(m tileMismatch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := fmt.Sprint(m.key, "@", m.offset)
	if c.seen[id] {
		return
	}
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	c.seen[id] = true
	c.mismatches = append(c.mismatches, m)
}

// take waits for the comparisons in flight and returns the mismatches
// found since the last call, first offset first (level 0 before higher
// levels at one offset), or the first read that failed.
func (c *tileChecker) take() ([]tileMismatch, error) {
	c.pending.Wait()
	c.mu.Lock()
	out, err := c.mismatches, c.err
	c.mismatches, c.err = nil, nil
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b tileMismatch) int {
		if a.offset != b.offset {
			return cmp.Compare(a.offset, b.offset)
		}
		return a.level - b.level
	})
	return out, nil
}

// parseTileKey parses a tile path relative to the tree's folder
// ("tile/<L>/<N>" or "tile/<L>/<N>.p/<W>", N in audit.TilePath's 3-digit
// elements): its level, index and width.
func parseTileKey(path string) (level int, n uint64, width int, ok bool) {
	rest, found := strings.CutPrefix(path, "tile/")
	if !found {
		return 0, 0, 0, false
	}
	l, rest, found := strings.Cut(rest, "/")
	level, err := strconv.Atoi(l)
	if !found || err != nil || level < 0 {
		return 0, 0, 0, false
	}
	width = audit.TileWidth
	if idx, w, partial := strings.Cut(rest, ".p/"); partial {
		if width, err = strconv.Atoi(w); err != nil || width < 1 || width >= audit.TileWidth {
			return 0, 0, 0, false
		}
		rest = idx
	}
	for _, el := range strings.Split(rest, "/") {
		d, err := strconv.ParseUint(strings.TrimPrefix(el, "x"), 10, 64)
		if err != nil || len(el) < 3 {
			return 0, 0, 0, false
		}
		n = n*1000 + d
	}
	return level, n, width, audit.TilePath(level, n, width) == path
}

// getAll reads a whole object, retrying transient failures.
func getAll(ctx context.Context, b cold.Bucket, key string) ([]byte, error) {
	var data []byte
	err := retry(ctx, func() error {
		rc, err := b.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = io.ReadAll(rc)
		return err
	})
	return data, err
}
