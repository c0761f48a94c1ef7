// Package bytesize reads and writes byte counts the way people type them:
// 268435456, 256MiB, 256 MiB, 1.5GiB, 512KB (units of 1000: kB, MB, GB,
// TB; units of 1024: KiB, MiB, GiB, TiB; case does not matter). Format
// writes the shortest exact form, so a printed size reads back unchanged.
// Value is a pflag.Value for byte-size flags.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
)

// Parse reads a byte count: an integer (possibly negative, for settings
// where -1 means "none") or a non-negative number with a unit.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		return n, nil
	}
	u, err := humanize.ParseBytes(t)
	if err != nil || u > math.MaxInt64 || strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("%q is not a byte size (e.g. 1048576, 512KiB, 256MiB, 1GiB, 10MB)", s)
	}
	return int64(u), nil
}

// binaryUnits are the units Format uses, largest first.
var binaryUnits = []struct {
	name string
	size int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// Format writes n with the largest binary unit that divides it exactly
// (268435456 is "256MiB"), or as a plain integer.
func Format(n int64) string {
	if n > 0 {
		for _, u := range binaryUnits {
			if n%u.size == 0 {
				return strconv.FormatInt(n/u.size, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(n, 10)
}

// Value is a flag holding a byte size in an integer of type T; its type
// shows as "size" in help and its default as a size (256MiB).
type Value[T int | int32 | int64] struct{ p *T }

// NewValue sets *p to def and returns the flag value writing to it.
func NewValue[T int | int32 | int64](p *T, def T) *Value[T] {
	*p = def
	return &Value[T]{p: p}
}

func (v *Value[T]) String() string {
	if v == nil || v.p == nil {
		return "0"
	}
	return Format(int64(*v.p))
}

// Set parses s; a size that does not fit T is an error.
func (v *Value[T]) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	if int64(T(n)) != n {
		return fmt.Errorf("%q is too large (at most %s)", s, Format(maxOf[T]()))
	}
	*v.p = T(n)
	return nil
}

// Type names the flag's value in help.
func (v *Value[T]) Type() string { return "size" }

// maxOf is the largest value of T: MaxInt64 shifted right until T holds
// it unchanged (MaxInt64>>32 is MaxInt32).
func maxOf[T int | int32 | int64]() int64 {
	m := int64(math.MaxInt64)
	for int64(T(m)) != m {
		m >>= 1
	}
	return m
}
