package partitioner

import (
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Hashes published from Kafka's implementation for short numeric strings:
// together they cover every tail length (0 to 3 bytes past the last full
// 4-byte block), which Kafka's own UtilsTest vectors do not all reach.
func TestMurmur2EveryTailLength(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int32
	}{
		{"1", -1993445489},
		{"12", 126087238},
		{"123", -267702483},
		{"1234", -1614185708},
		{"12345", -1188365604},
	} {
		if got := Murmur2([]byte(tc.in)); got != tc.want {
			t.Errorf("Murmur2(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// kgoPartition asks franz-go's default key partitioner, which implements
// Kafka's murmur2 rule independently of this package.
func kgoPartition(key []byte, n int) int {
	return kgo.StickyKeyPartitioner(nil).ForTopic("t").Partition(&kgo.Record{Key: key}, n)
}

// Random keys of every length up to 63 bytes and random partition counts,
// against franz-go.
func TestForKeyRandomKeysMatchFranzGo(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		key := make([]byte, r.IntN(64))
		for j := range key {
			key[j] = byte(r.Uint32())
		}
		n := 1 + r.IntN(1000)
		if got, want := ForKey(key, int32(n)), kgoPartition(key, n); int(got) != want {
			t.Fatalf("ForKey(%x, %d) = %d, franz-go says %d", key, n, got, want)
		}
	}
	// The empty key hashes; it is not a null key.
	if got, want := ForKey([]byte{}, 7), kgoPartition([]byte{}, 7); int(got) != want {
		t.Errorf("ForKey(empty, 7) = %d, franz-go says %d", got, want)
	}
}

// A key whose hash is negative must be masked, not negated: Kafka's
// toPositive is x & 0x7fffffff.
func TestForKeyMasksNegativeHashes(t *testing.T) {
	key := []byte("21") // murmur2 = -973932308
	want := int32((-973932308 & 0x7fffffff) % 10)
	if got := ForKey(key, 10); got != want {
		t.Errorf("ForKey(%q, 10) = %d, want %d", key, got, want)
	}
}

// FuzzForKey checks ForKey against franz-go for arbitrary keys and
// partition counts.
func FuzzForKey(f *testing.F) {
	f.Add([]byte("foobar"), int32(12))
	f.Add([]byte{}, int32(1))
	f.Fuzz(func(t *testing.T, key []byte, n int32) {
		if n <= 0 {
			return // no partition exists; ForKey requires n > 0
		}
		got := ForKey(key, n)
		if got < 0 || got >= n {
			t.Fatalf("ForKey(%x, %d) = %d, outside [0, %d)", key, n, got, n)
		}
		if want := kgoPartition(key, int(n)); int(got) != want {
			t.Fatalf("ForKey(%x, %d) = %d, franz-go says %d", key, n, got, want)
		}
	})
}

func BenchmarkMurmur2(b *testing.B) {
	key := []byte("user-1234567890-session")
	b.SetBytes(int64(len(key)))
	for b.Loop() {
		Murmur2(key)
	}
}
