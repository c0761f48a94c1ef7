// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"fmt"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// Eventually polls cond every 10ms until it returns true or timeout passes,
// then fails the test with msg. Tests poll for a state rather than sleep.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %s", timeout, fmt.Sprintf(msg, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Value is a deterministic record value: record i of a test, padded to size
// bytes, so a reader can check every byte it gets back.
func Value(i int64, size int) []byte {
	v := fmt.Appendf(nil, "record-%010d|", i)
	for len(v) < size {
		v = append(v, byte('a'+(i+int64(len(v)))%26))
	}
	return v[:max(size, 0)]
}

// Batch builds an uncompressed batch of n records whose values are
// Value(first+k, size), with timestamps ts, ts+1, ....
func Batch(t testing.TB, first int64, n, size int, ts int64) []byte {
	t.Helper()
	recs := make([]batch.Record, n)
	for k := range recs {
		recs[k] = batch.Record{Timestamp: ts + int64(k), Key: fmt.Appendf(nil, "k%d", first+int64(k)), Value: Value(first+int64(k), size)}
	}
	b, err := batch.Build(recs, batch.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// IdempotentBatch builds an uncompressed batch of n records as an
// idempotent producer (id, epoch) sends it, its first record numbered
// seq; record k's value is Value(seq+k, size). Each call returns new
// bytes: an append takes its buffer over, so a retry needs its own.
func IdempotentBatch(t testing.TB, id int64, epoch int16, seq int32, n, size int) []byte {
	t.Helper()
	recs := make([]batch.Record, n)
	for k := range recs {
		recs[k] = batch.Record{Timestamp: 1_000_000 + int64(seq) + int64(k), Value: Value(int64(seq)+int64(k), size)}
	}
	b, err := batch.Build(recs, batch.BuildOptions{Producer: &batch.Producer{ID: id, Epoch: epoch, BaseSequence: seq}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
