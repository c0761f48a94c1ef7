// Package partitioner maps record keys to partitions exactly as Kafka's
// Java client does (murmur2 of the key bytes, made positive, modulo the
// partition count), so a key lands on the same partition whether it was
// produced through tierlog's gRPC API or by a Kafka client.
package partitioner

// Murmur2 is Kafka's Utils.murmur2: 32-bit MurmurHash2 with seed 0x9747b28c.
func Murmur2(data []byte) int32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	n := len(data)
	h := uint32(seed) ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n&^3:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// ForKey returns the partition of a keyed record among partitions (> 0):
// Kafka's (murmur2(key) & 0x7fffffff) % partitions.
func ForKey(key []byte, partitions int32) int32 {
	return (Murmur2(key) & 0x7fffffff) % partitions
}
