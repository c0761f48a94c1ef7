package partitioner

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Vectors from Kafka's UtilsTest.testMurmur2.
func TestMurmur2KafkaVectors(t *testing.T) {
	for in, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		if got := Murmur2([]byte(in)); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

// ForKey agrees with franz-go's Kafka-compatible key partitioner.
func TestForKeyMatchesFranzGo(t *testing.T) {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for i := range 2000 {
		key := []byte{byte(i), byte(i >> 3), 'k', byte(i * 7)}[:1+i%4]
		for _, n := range []int32{1, 3, 12, 100} {
			want := int32(p.Partition(&kgo.Record{Key: key}, int(n)))
			if got := ForKey(key, n); got != want {
				t.Fatalf("ForKey(%x, %d) = %d, franz-go says %d", key, n, got, want)
			}
		}
	}
}
