package bytesize

import (
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	good := map[string]int64{
		"0": 0, "1048576": 1 << 20, "-1": -1, " 42 ": 42,
		"256MiB": 256 << 20, "256 MiB": 256 << 20, "256mib": 256 << 20, "1GiB": 1 << 30, "1.5GiB": 3 << 29,
		"512KiB": 512 << 10, "2TiB": 2 << 40, "10MB": 10_000_000, "1kB": 1000, "7B": 7,
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "256XB", "-1MiB", "1e30", "10000000TiB"} {
		if n, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, n)
		}
	}
}

func TestFormatReadsBack(t *testing.T) {
	want := map[int64]string{0: "0", -1: "-1", 1000: "1000", 1 << 10: "1KiB", 256 << 20: "256MiB", 3 << 29: "1536MiB", 1 << 30: "1GiB", 1<<30 + 1: "1073741825"}
	for n, s := range want {
		if got := Format(n); got != s {
			t.Errorf("Format(%d) = %q, want %q", n, got, s)
		}
		if back, err := Parse(Format(n)); err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	}
}

func TestValue(t *testing.T) {
	var n32 int32
	v := NewValue(&n32, 1<<20)
	if v.String() != "1MiB" || v.Type() != "size" {
		t.Errorf("default shows as %q of type %q", v.String(), v.Type())
	}
	if err := v.Set("64KiB"); err != nil || n32 != 64<<10 {
		t.Errorf("Set(64KiB): %d, %v", n32, err)
	}
	if err := v.Set("4GiB"); err == nil {
		t.Errorf("Set(4GiB) on an int32 = %d, want an error", n32)
	}
	var n64 int64
	if err := NewValue(&n64, 0).Set("4GiB"); err != nil || n64 != 4<<30 {
		t.Errorf("Set(4GiB) on an int64: %d, %v", n64, err)
	}
	if maxOf[int64]() != math.MaxInt64 || maxOf[int32]() != math.MaxInt32 {
		t.Error("maxOf")
	}
}
