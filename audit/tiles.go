package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tierlog/tierlog/cold"
)

// TileHeight is the tlog-tiles tile height: a tile holds up to 2^8 = 256
// hashes, and the entries of a level-L tile are tree nodes at level 8L.
const (
	TileHeight = 8
	TileWidth  = 1 << TileHeight
)

// Dir is the folder under a partition's bucket prefix that holds its tree
// and checkpoints.
const Dir = "tlog/"

// backoff retries a tile or checkpoint request that failed transiently,
// as tiering retries its uploads.
var backoff = cold.Backoff{Attempts: 6, Base: 100 * time.Millisecond, Max: 3 * time.Second}

// TilePath is the tlog-tiles path of the tile at level L and index n,
// relative to the log's root: "tile/<L>/<n>" for a full tile (width
// TileWidth) and "tile/<L>/<n>.p/<width>" for a partial one. n is written
// in 3-digit elements, all but the last prefixed with "x": 1234067 is
// "x001/x234/067", 5 is "005".
func TilePath(level int, n uint64, width int) string {
	s := "tile/" + strconv.Itoa(level) + "/" + encodeIndex(n)
	if width < TileWidth {
		s += ".p/" + strconv.Itoa(width)
	}
	return s
}

func encodeIndex(n uint64) string {
	parts := []string{fmt.Sprintf("%03d", n%1000)}
	for n /= 1000; n > 0; n /= 1000 {
		parts = append(parts, fmt.Sprintf("x%03d", n%1000))
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// TileKey is the bucket key of a tile of the tree under prefix (a
// partition's prefix, ending in "/").
func TileKey(prefix string, level int, n uint64, width int) string {
	return prefix + Dir + TilePath(level, n, width)
}

// tileWidth is the width of tile n of level L in a tree of size: 256 for a
// full tile, the number of its entries for the partial one at the right
// edge, 0 for a tile the tree does not reach.
func tileWidth(level int, n, size uint64) int {
	entries := size >> (TileHeight * level) // nodes of level 8L
	switch {
	case entries >= (n+1)*TileWidth:
		return TileWidth
	case entries > n*TileWidth:
		return int(entries - n*TileWidth)
	}
	return 0
}

// ReadTile returns the hashes of a tile (width x HashSize bytes). A tile
// that is missing, or of another size than its width says, fails: the
// error names the key.
func ReadTile(ctx context.Context, b cold.Bucket, prefix string, level int, n uint64, width int) ([]byte, error) {
	key := TileKey(prefix, level, n, width)
	data, err := getObject(ctx, b, key)
	if err != nil {
		return nil, err
	}
	if len(data) != width*HashSize {
		return nil, &BadTileError{Key: key, Size: len(data), Width: width}
	}
	return data, nil
}

// readEntries returns the first width entries of tile n of a level: its
// partial tile of that width, or - once a full tile superseded it and the
// partial is gone (see Tree.Superseded) - the full tile's, which are the
// same hashes. tlog-tiles clients fall back the same way.
func readEntries(ctx context.Context, b cold.Bucket, prefix string, level int, n uint64, width int) ([]byte, error) {
	data, err := ReadTile(ctx, b, prefix, level, n, width)
	if errors.Is(err, cold.ErrNotFound) && width < TileWidth {
		if full, ferr := ReadTile(ctx, b, prefix, level, n, TileWidth); ferr == nil {
			return full[:width*HashSize], nil
		}
	}
	return data, err
}

// PartialTilesFolder is the folder holding every partial tile of tile n
// of a level, whatever its width: "<prefix>tlog/tile/<L>/<n>.p/".
func PartialTilesFolder(prefix string, level int, n uint64) string {
	return TileKey(prefix, level, n, TileWidth) + ".p/"
}

// BadTileError is a stored tile of another size than its key says: the
// bucket answered, with bytes that are not the tile.
type BadTileError struct {
	Key   string
	Size  int // bytes stored
	Width int // hashes the key says it holds
}

func (e *BadTileError) Error() string {
	return fmt.Sprintf("audit: tile %s holds %d bytes, want %d (%d hashes)", e.Key, e.Size, e.Width*HashSize, e.Width)
}

// writeTile uploads a tile's hashes.
func writeTile(ctx context.Context, b cold.Bucket, prefix string, level int, n uint64, hashes []byte) error {
	return putObject(ctx, b, TileKey(prefix, level, n, len(hashes)/HashSize), hashes)
}

// getObject reads a whole object, retrying transient failures.
func getObject(ctx context.Context, b cold.Bucket, key string) ([]byte, error) {
	var data []byte
	err := cold.Retry(ctx, backoff, nil, func() error {
		rc, err := b.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = io.ReadAll(rc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: read %s from %s: %w", key, b.Name(), err)
	}
	return data, nil
}

// putObject writes a whole object, retrying transient failures.
func putObject(ctx context.Context, b cold.Bucket, key string, data []byte) error {
	err := cold.Retry(ctx, backoff, nil, func() error {
		_, err := b.Upload(ctx, key, bytes.NewReader(data), int64(len(data)))
		return err
	})
	if err != nil {
		return fmt.Errorf("audit: write %s to %s: %w", key, b.Name(), err)
	}
	return nil
}
